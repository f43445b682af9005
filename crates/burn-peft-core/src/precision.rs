//! Mixed precision: the one `--dtype` syntax and what it means.
//!
//! As in HF PEFT with a model loaded in half precision, the frozen base weights and the
//! activations are stored in the chosen type, while adapter weights, trainable parameters
//! (their master copies) and optimizer state stay in f32. Adapters compute in f32 and add their
//! result back in the activations' type; norms, softmax and the loss compute in f32.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device, FloatDType};

use crate::error::{PeftError, Result};

/// A parsed `--dtype` value: the precision of a model's frozen weights and activations.
///
/// ```
/// use burn::tensor::{Device, FloatDType};
/// use burn_peft_core::Precision;
///
/// let p: Precision = "bf16".parse().unwrap();
/// assert_eq!(p.float_dtype(), FloatDType::BF16);
/// assert!(!p.needs_loss_scaling());
/// assert!("fp8".parse::<Precision>().is_err());
/// p.check(&Device::flex()).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// bfloat16 base weights and activations.
    Bf16,
    /// float16 base weights and activations; training needs loss scaling.
    F16,
}

impl Precision {
    /// The tensor element type.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }

    /// Whether training needs dynamic loss scaling (f16's small exponent range lets small
    /// gradients underflow to zero).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// Fails with [`PeftError::UnsupportedDtype`] where `device`'s backend cannot store and
    /// compute in this type.
    pub fn check(self, device: &Device) -> Result<()> {
        if self == Precision::F32 || device.supports_dtype(DType::from(self.float_dtype())) {
            Ok(())
        } else {
            Err(PeftError::UnsupportedDtype {
                dtype: self.to_string(),
                device: format!("{device:?}"),
            })
        }
    }
}

impl FromStr for Precision {
    type Err = PeftError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(PeftError::UnknownDtype(s.to_string())),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_and_print_back() {
        for (text, p) in [
            ("f32", Precision::F32),
            ("FP32", Precision::F32),
            ("bfloat16", Precision::Bf16),
            (" bf16 ", Precision::Bf16),
            ("fp16", Precision::F16),
            ("half", Precision::F16),
        ] {
            assert_eq!(text.parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let e = "int8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("int8") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn flex_stores_every_precision() {
        let device = Device::flex();
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            p.check(&device).unwrap();
        }
        assert!(Precision::F16.needs_loss_scaling());
        assert!(!Precision::Bf16.needs_loss_scaling());
    }
}
