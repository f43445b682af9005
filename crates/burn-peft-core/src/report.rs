//! The trainable-parameter report, like PEFT's `print_trainable_parameters`.

use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Counts of trainable and total parameters of a module.
///
/// Trainable means "gets a gradient": count on a model that lives on an autodiff device
/// (`device.autodiff()`), where freezing is visible.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use burn_peft_core::TrainableParameters;
///
/// let device = Device::flex().autodiff();
/// let layer = LinearConfig::new(4, 2).init(&device);
/// let all = TrainableParameters::of(&layer);
/// assert_eq!((all.trainable, all.total), (10, 10));
/// let frozen = TrainableParameters::of(&layer.no_grad());
/// assert_eq!(frozen.trainable, 0);
/// println!("{all}"); // trainable params: 10 || all params: 10 || trainable%: 100.0000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainableParameters {
    /// Parameters that get a gradient.
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

impl TrainableParameters {
    /// Counts the parameters of `module`.
    pub fn of<M: Module>(module: &M) -> Self {
        let mut counter = Counter {
            trainable: 0,
            total: 0,
        };
        module.visit(&mut counter);
        Self {
            trainable: counter.trainable,
            total: counter.total,
        }
    }

    /// Trainable share in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total as f64
        }
    }
}

impl fmt::Display for TrainableParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            group_thousands(self.trainable),
            group_thousands(self.total),
            self.percent()
        )
    }
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Counter {
    trainable: usize,
    total: usize,
}

impl ModuleVisitor for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.lazy_shape().num_elements();
        self.total += n;
        if param.is_require_grad() {
            self.trainable += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(134515008), "134,515,008");
    }
}
