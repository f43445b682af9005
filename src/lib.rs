//! # burn-peft
//!
//! Parameter-efficient fine-tuning for [burn](https://burn.dev): the LoRA family, IA3, prefix and
//! prompt tuning (and full fine-tuning) on any burn backend, saved and loaded in HF PEFT's
//! on-disk format, with forgetting measured and limited.
//!
//! This crate re-exports the workspace's crates and a [`prelude`]:
//!
//! | module | crate | job |
//! | --- | --- | --- |
//! | [`core`] | `burn-peft-core` | adapter host layer, targets, freezing, merge, PEFT file format, `--device` |
//! | [`adapters`] | `burn-peft-adapters` | LoRA / rsLoRA / DoRA, IA3, prefix and prompt tuning behind `AdapterConfig`; save and load adapters |
//! | [`models`] | `burn-peft-models` | Llama-family decoder and BERT, HF / GGUF loaders, tokenizers |
//! | [`assets`] | `burn-peft-assets` | pinned model and data packages, sha256-checked cache |
//! | [`optim`] | `burn-peft-optim` | AdamW with LoRA+ groups, schedules, clipping, accumulation, resumable state |
//! | [`train`] | `burn-peft-train` | data sets, batching, evaluation, the training loop, metrics, checkpoints |
//! | [`forget`] | `burn-peft-forget` | EWC, L2-SP, replay, distillation from the frozen base, O-LoRA |
//!
//! ```no_run
//! use burn_peft::prelude::*;
//!
//! let device = parse_device("flex").unwrap();
//! let mut model = Llama::from_pretrained("path/to/hf-model".as_ref(), &device).unwrap();
//! let config = LoraConfig::new(16)
//!     .with_lora_alpha(32.0)
//!     .with_target_modules(TargetModules::all_linear());
//! model.add_adapter("default", &AdapterConfig::Lora(config)).unwrap();
//! println!("{}", TrainableParameters::of(&model));
//! save_adapter(&model, "default", "out/adapter".as_ref()).unwrap();
//! ```
#![warn(missing_docs)]

pub use burn_peft_adapters as adapters;
pub use burn_peft_assets as assets;
pub use burn_peft_compare as compare;
pub use burn_peft_core as core;
pub use burn_peft_forget as forget;
pub use burn_peft_models as models;
pub use burn_peft_optim as optim;
pub use burn_peft_retrieval as retrieval;
pub use burn_peft_train as train;

/// The names most programs need.
pub mod prelude {
    pub use burn::module::Module;
    pub use burn_peft_adapters::{
        Adapter, AdapterConfig, AddAdapter, Ia3Config, LoraConfig, LoraInit, PrefixTuningConfig,
        PromptTuningConfig, load_adapter, read_adapter_config, save_adapter,
    };
    pub use burn_peft_core::{
        AdaptedLinear, AdapterHost, DeviceSpec, PeftError, PeftModel, TargetModules,
        TargetSelector, TrainableParameters, parse_device,
    };
    pub use burn_peft_forget::{ForgettingConfig, Mitigation};
    pub use burn_peft_models::{
        CausalLm, GenerationConfig, Llama, LlamaConfig, ModelError, Pretrained, TextTokenizer,
    };
    pub use burn_peft_optim::{PeftOptimizer, PeftOptimizerConfig, ScheduleKind};
    pub use burn_peft_train::{
        CsvTask, Dataset, Encoder, PromptFormat, TrainConfig, TrainError, Trainer, WeightsIo,
        evaluate,
    };
}

/// The README's Rust examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
