//! The IA3 vector that lives inside an `AdaptedLinear`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{NamedTensor, PeftTensors};
use burn_peft_core::{LinearAdapter, Result};

use super::config::Ia3Config;
use crate::lora::replace;

/// One IA3 vector on one linear layer.
#[derive(Module, Debug)]
pub struct Ia3 {
    /// The scale: per input feature on feed-forward layers, per output feature otherwise.
    pub scale: Param<Tensor<1>>,
    /// Whether the scale applies to the input.
    pub feedforward: bool,
    /// The config the adapter was made from.
    #[module(skip)]
    pub config: Ia3Config,
}

impl Ia3 {
    /// Builds the vector for the module at `path` with base weight dims `[in, out]`.
    pub fn init(
        config: &Ia3Config,
        path: &str,
        dims: [usize; 2],
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        let feedforward = config.is_feedforward(path)?;
        let len = if feedforward { dims[0] } else { dims[1] };
        let scale = if config.init_ia3_weights {
            Tensor::ones([len], device)
        } else {
            Tensor::random([len], burn::tensor::Distribution::Normal(1.0, 0.3), device)
        };
        Ok(Self {
            scale: Param::from_tensor(scale),
            feedforward,
            config: config.clone(),
        })
    }

    fn scale_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.feedforward { self.scaled(x) } else { x }
    }

    fn scale_output<const D: usize>(&self, out: Tensor<D>) -> Tensor<D> {
        if self.feedforward {
            out
        } else {
            self.scaled(out)
        }
    }

    /// `t` times the scale vector, computed in the vector's type (f32) and returned in `t`'s,
    /// as PEFT does for a half-precision base.
    fn scaled<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        let scale = self.scale.val();
        let dtype = t.dtype();
        (t.cast(scale.dtype()) * scale.unsqueeze::<D>()).cast(dtype)
    }

    fn weight_factor(&self, eps: f64) -> Tensor<2> {
        let l = self.scale.val().detach() + eps;
        if self.feedforward {
            l.unsqueeze_dim::<2>(1) // [in, 1]: scales rows of W [in, out]
        } else {
            l.unsqueeze_dim::<2>(0) // [1, out]: scales columns
        }
    }

    fn merge_into(&self, weight: Tensor<2>) -> Tensor<2> {
        weight * self.weight_factor(0.0)
    }

    fn unmerge_from(&self, weight: Tensor<2>) -> Tensor<2> {
        // PEFT divides by (l + 1e-8) so that a zero entry does not blow up.
        weight / self.weight_factor(1e-8)
    }
}

impl LinearAdapter for Ia3 {
    fn peft_type(&self) -> &'static str {
        "IA3"
    }

    fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.scale_input(x)
    }

    fn forward<const D: usize>(
        &self,
        _x: &Tensor<D>,
        _base: &Linear,
        _base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        self.scale_output(out)
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        Ok(self.merge_into(weight))
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        Ok(self.unmerge_from(weight))
    }

    fn merged_bias_factor(&self) -> Option<Tensor<1>> {
        (!self.feedforward).then(|| self.scale.val().detach())
    }
}

impl PeftTensors for Ia3 {
    fn export(&self) -> Vec<(String, NamedTensor)> {
        let mut t = NamedTensor::from_tensor(self.scale.val());
        let n = t.shape[0];
        t.shape = if self.feedforward {
            vec![1, n]
        } else {
            vec![n, 1]
        };
        vec![("ia3_l".to_string(), t)]
    }

    fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        let n = self.scale.shape().dims::<1>()[0];
        let shape = if self.feedforward { [1, n] } else { [n, 1] };
        let mut t = take("ia3_l", &shape)?;
        t.shape = vec![n];
        let device = self.scale.device();
        self.scale = replace(&self.scale, t.to_tensor(&device, "ia3_l")?);
        Ok(())
    }
}
