//! # burn-peft-adapters
//!
//! Adapter methods for models that host [`burn_peft_core::AdaptedLinear`] layers: LoRA,
//! rsLoRA and DoRA ([`lora`]), behind one module type, [`Adapter`], and saved or loaded in HF
//! PEFT's on-disk format ([`save_adapter`], [`load_adapter`]).
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use burn_peft_adapters::{AddAdapter, Adapter, LoraConfig};
//! use burn_peft_core::{AdaptedLinear, AdapterHost, PeftModel, TargetModules};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Tiny { proj: AdaptedLinear<Adapter> }
//! impl AdapterHost for Tiny {
//!     type Adapter = Adapter;
//!     fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
//!         f("proj", &mut self.proj);
//!     }
//! }
//!
//! let device = Device::flex();
//! let mut model = Tiny { proj: AdaptedLinear::new(LinearConfig::new(8, 8).init(&device)) };
//! let lora = LoraConfig::new(4).with_target_modules(TargetModules::names(["proj"]));
//! model.add_lora("default", &lora).unwrap();
//! assert_eq!(model.active_adapters(), vec!["default".to_string()]);
//! let y = model.proj.forward(Tensor::<2>::ones([1, 8], &device));
//! assert_eq!(y.dims(), [1, 8]);
//! ```
#![warn(missing_docs)]

pub mod lora;
mod persist;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{NamedTensor, PeftTensors};
use burn_peft_core::{LinearAdapter, PeftModel, Result};

pub use lora::{Lora, LoraConfig, LoraInit};
pub use persist::{AdapterConfig, load_adapter, read_adapter_config, save_adapter};

/// Every adapter method a linear layer can host.
#[derive(Module, Debug)]
pub enum Adapter {
    /// LoRA, rsLoRA or DoRA.
    Lora(Lora),
}

impl LinearAdapter for Adapter {
    fn peft_type(&self) -> &'static str {
        match self {
            Adapter::Lora(_) => "LORA",
        }
    }

    fn forward<const D: usize>(
        &self,
        x: &Tensor<D>,
        base: &Linear,
        base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        match self {
            Adapter::Lora(l) => l.apply(x, base, base_out, out),
        }
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => Ok(l.merge_into(weight)),
        }
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.unmerge_from(weight),
        }
    }

    fn take_base_update(&mut self) -> Option<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.take_base_update(),
        }
    }
}

impl PeftTensors for Adapter {
    fn export(&self) -> Vec<(String, NamedTensor)> {
        match self {
            Adapter::Lora(l) => l.export(),
        }
    }

    fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        match self {
            Adapter::Lora(l) => l.import(take),
        }
    }
}

/// Adds adapters of each method to any model whose layers host [`Adapter`]s.
pub trait AddAdapter: PeftModel<Adapter = Adapter> {
    /// Adds a LoRA (rsLoRA, DoRA) adapter called `name` to the modules `config` targets.
    /// Returns the adapted module paths.
    fn add_lora(&mut self, name: &str, config: &LoraConfig) -> Result<Vec<String>> {
        config.validate()?;
        self.add_adapter_with(name, &config.selector(), |path, base| {
            Ok(Adapter::Lora(Lora::init(config, path, base)?))
        })
    }
}

impl<M: PeftModel<Adapter = Adapter>> AddAdapter for M {}
