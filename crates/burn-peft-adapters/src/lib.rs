//! # burn-peft-adapters
//!
//! PEFT's methods for models that host [`burn_peft_core::AdaptedLinear`] layers, each in a
//! folder of its own with the same files (`mod.rs`, `config.rs`, `layer.rs`):
//!
//! - on linear layers, behind one module type, [`Adapter`]: LoRA, rsLoRA and DoRA ([`lora`]),
//!   IA3 ([`ia3`]);
//! - on the model's attention or input, behind [`PromptLearning`]: prefix tuning ([`prefix`])
//!   and prompt tuning ([`prompt`]), for models that implement [`PromptHost`].
//!
//! One config enum, [`AdapterConfig`], names every method; [`AddAdapter::add_adapter`] adds any
//! of them (PEFT's `add_adapter`), and [`save_adapter`] / [`load_adapter`] move them in HF
//! PEFT's on-disk format, picking the method from `peft_type`.
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use burn_peft_adapters::{AddAdapter, Adapter, AdapterConfig, LoraConfig};
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
//! impl AddAdapter for Tiny {} // every linear-layer method; no prefix or prompt tuning
//!
//! let device = Device::flex();
//! let mut model = Tiny { proj: AdaptedLinear::new(LinearConfig::new(8, 8).init(&device)) };
//! let lora = LoraConfig::new(4).with_target_modules(TargetModules::names(["proj"]));
//! model.add_adapter("default", &AdapterConfig::Lora(lora)).unwrap();
//! assert_eq!(model.active_adapters(), vec!["default".to_string()]);
//! let y = model.proj.forward(Tensor::<2>::ones([1, 8], &device));
//! assert_eq!(y.dims(), [1, 8]);
//! ```
#![warn(missing_docs)]

mod config;
pub mod ia3;
pub mod lora;
mod model;
mod persist;
pub mod prefix;
pub mod prompt;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{NamedTensor, PeftTensors};
use burn_peft_core::{LinearAdapter, Result};

pub use config::{AdapterConfig, MethodConfig, read_adapter_config};
pub use ia3::{Ia3, Ia3Config};
pub use lora::{Lora, LoraConfig, LoraInit};
pub use model::{AddAdapter, PromptGeometry, PromptHost, PromptSlot};
pub use persist::{PREFIX_ENCODER_FILE, load_adapter, save_adapter};
pub use prefix::{PrefixProjection, PrefixTuning, PrefixTuningConfig};
pub use prompt::{PromptTuning, PromptTuningConfig, PromptTuningInit};

/// Declares [`Adapter`], the module a linear layer hosts, with one variant per linear-layer
/// method. Each variant's module implements [`LinearAdapter`] and [`PeftTensors`] and has a
/// `config` field whose type is the [`AdapterConfig`] variant of the same name; the enum
/// dispatches to them. Adding a linear-layer method is one line here.
macro_rules! linear_adapters {
    ($($(#[$doc:meta])* $variant:ident($layer:ty)),* $(,)?) => {
        /// Every adapter method a linear layer can host.
        // One value per adapted layer: the size difference between variants costs nothing
        // worth a Box.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Adapter {
            $($(#[$doc])* $variant($layer),)*
        }

        impl Adapter {
            /// The configuration this adapter was made from.
            pub fn config(&self) -> AdapterConfig {
                match self {
                    $(Adapter::$variant(a) => AdapterConfig::$variant(a.config.clone()),)*
                }
            }
        }

        impl LinearAdapter for Adapter {
            fn peft_type(&self) -> &'static str {
                match self {
                    $(Adapter::$variant(a) => a.peft_type(),)*
                }
            }

            fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
                match self {
                    $(Adapter::$variant(a) => a.transform_input(x),)*
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
                    $(Adapter::$variant(a) => a.forward(x, base, base_out, out),)*
                }
            }

            fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
                match self {
                    $(Adapter::$variant(a) => a.merge(weight),)*
                }
            }

            fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
                match self {
                    $(Adapter::$variant(a) => a.unmerge(weight),)*
                }
            }

            fn take_base_update(&mut self) -> Option<Tensor<2>> {
                match self {
                    $(Adapter::$variant(a) => a.take_base_update(),)*
                }
            }

            fn merged_bias_factor(&self) -> Option<Tensor<1>> {
                match self {
                    $(Adapter::$variant(a) => a.merged_bias_factor(),)*
                }
            }

            fn draws_dropout(&self) -> bool {
                match self {
                    $(Adapter::$variant(a) => a.draws_dropout(),)*
                }
            }
        }

        impl PeftTensors for Adapter {
            fn export(&self) -> Vec<(String, NamedTensor)> {
                match self {
                    $(Adapter::$variant(a) => a.export(),)*
                }
            }

            fn import(
                &mut self,
                take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
            ) -> Result<()> {
                match self {
                    $(Adapter::$variant(a) => a.import(take),)*
                }
            }
        }
    };
}

linear_adapters! {
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
        self.config().peft_type()
    }

    /// The configuration this adapter was made from.
    pub fn config(&self) -> AdapterConfig {
        match self {
            PromptLearning::Prefix(p) => AdapterConfig::Prefix(p.config.clone()),
            PromptLearning::Prompt(p) => AdapterConfig::Prompt(p.config.clone()),
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
        self.config().to_peft_json()
    }
}
