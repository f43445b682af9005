//! # burn-peft-core
//!
//! The backend-agnostic heart of burn-peft: a linear layer that hosts named adapters over a
//! frozen base ([`AdaptedLinear`]), model-wide adapter control named after HF PEFT
//! ([`PeftModel`]), target selection by module path ([`TargetSelector`]), the
//! trainable-parameter report ([`TrainableParameters`]), HF PEFT's file format ([`format`]) and
//! the one `--device` syntax ([`DeviceSpec`]) and `--dtype` syntax ([`Precision`]).
//! [`allocator::tune_for_training`] sets glibc's malloc up for a training process on the CPU.
//!
//! Adapter methods themselves (LoRA, DoRA, IA3) live in `burn-peft-adapters`.
#![warn(missing_docs)]

pub mod allocator;
mod device;
mod error;
pub mod format;
mod host;
pub mod kernel_cache;
pub mod limits;
mod peft_model;
mod precision;
mod report;
mod rng;
mod target;

pub use device::{DeviceSpec, parse_device};
pub use error::{PeftError, Result};
pub use host::{
    AdaptedLinear, LinearAdapter, NoAdapter, cast_if_frozen, layout_for_products,
    layout_for_training,
};
pub use peft_model::{AdapterHost, PeftModel};
pub use precision::Precision;
pub use report::TrainableParameters;
pub use rng::{SplitMix64, host_random, seeded_random};
pub use target::{ALL_LINEAR, TargetModules, TargetSelector};
