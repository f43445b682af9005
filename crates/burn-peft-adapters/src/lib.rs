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

pub mod ia3;
pub mod lora;
mod persist;
pub mod prefix;
pub mod prompt;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{NamedTensor, PeftTensors};
use burn_peft_core::{LinearAdapter, PeftModel, Result};

pub use ia3::{Ia3, Ia3Config};
pub use lora::{Lora, LoraConfig, LoraInit};
pub use persist::{AdapterConfig, load_adapter, read_adapter_config, save_adapter};
pub use prefix::{PrefixProjection, PrefixTuning, PrefixTuningConfig, PromptGeometry};
pub use prompt::{PromptTuning, PromptTuningConfig, PromptTuningInit};

/// Every adapter method a linear layer can host.
// One value per adapted layer: the size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Adapter {
    /// LoRA, rsLoRA or DoRA.
    Lora(Lora),
    /// IA3.
    Ia3(Ia3),
}

impl Adapter {
    /// The LoRA / DoRA adapter, if this is one.
    pub fn as_lora(&self) -> Option<&Lora> {
        match self {
            Adapter::Lora(l) => Some(l),
            _ => None,
        }
    }

    /// The LoRA / DoRA adapter, mutably, if this is one.
    pub fn as_lora_mut(&mut self) -> Option<&mut Lora> {
        match self {
            Adapter::Lora(l) => Some(l),
            _ => None,
        }
    }
}

impl LinearAdapter for Adapter {
    fn peft_type(&self) -> &'static str {
        match self {
            Adapter::Lora(_) => "LORA",
            Adapter::Ia3(_) => "IA3",
        }
    }

    fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Adapter::Lora(_) => x,
            Adapter::Ia3(a) => a.transform_input(x),
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
            Adapter::Ia3(a) => a.apply(out),
        }
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => Ok(l.merge_into(weight)),
            Adapter::Ia3(a) => Ok(a.merge_into(weight)),
        }
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.unmerge_from(weight),
            Adapter::Ia3(a) => Ok(a.unmerge_from(weight)),
        }
    }

    fn merged_bias_factor(&self) -> Option<Tensor<1>> {
        match self {
            Adapter::Ia3(a) if !a.feedforward => Some(a.scale.val().detach()),
            _ => None,
        }
    }

    fn take_base_update(&mut self) -> Option<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.take_base_update(),
            Adapter::Ia3(_) => None,
        }
    }
}

impl PeftTensors for Adapter {
    fn export(&self) -> Vec<(String, NamedTensor)> {
        match self {
            Adapter::Lora(l) => l.export(),
            Adapter::Ia3(a) => a.export(),
        }
    }

    fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        match self {
            Adapter::Lora(l) => l.import(take),
            Adapter::Ia3(a) => a.import(take),
        }
    }
}

/// A prompt-learning adapter: it works on the model's attention or input, not on linear layers.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PromptLearning {
    /// Prefix tuning (past keys and values per layer).
    Prefix(PrefixTuning),
    /// Prompt tuning (virtual input tokens).
    Prompt(PromptTuning),
}

impl PromptLearning {
    /// PEFT's `peft_type`.
    pub fn peft_type(&self) -> &'static str {
        match self {
            PromptLearning::Prefix(_) => "PREFIX_TUNING",
            PromptLearning::Prompt(_) => "PROMPT_TUNING",
        }
    }

    /// The saved tensor, PEFT's `prompt_embeddings`.
    pub fn prompt_embeddings(&self) -> Tensor<2> {
        match self {
            PromptLearning::Prefix(p) => p.table(),
            PromptLearning::Prompt(p) => p.embedding.val(),
        }
    }

    /// The config as PEFT writes it.
    pub fn to_peft_json(&self) -> Result<String> {
        match self {
            PromptLearning::Prefix(p) => p.config.to_peft_json(),
            PromptLearning::Prompt(p) => p.config.to_peft_json(),
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

    /// Adds an IA3 adapter called `name`. Returns the adapted module paths.
    fn add_ia3(&mut self, name: &str, config: &Ia3Config) -> Result<Vec<String>> {
        config.validate()?;
        self.add_adapter_with(name, &config.selector(), |path, base| {
            let dims = base.weight.shape().dims::<2>();
            Ok(Adapter::Ia3(Ia3::init(
                config,
                path,
                dims,
                &base.weight.device(),
            )?))
        })
    }
}

impl<M: PeftModel<Adapter = Adapter>> AddAdapter for M {}
