//! LoRA, rsLoRA and DoRA, as in HF PEFT's `tuners/lora`.

mod combine;
mod config;
mod layer;

pub use combine::add_concatenated;
pub use config::{LoraConfig, LoraInit, OneOrMany};
pub use layer::Lora;
pub(crate) use layer::replace;

use burn_peft_core::Result;

use crate::model::AddAdapter;
use crate::{Adapter, MethodConfig};

impl MethodConfig for LoraConfig {
    const PEFT_TYPE: &'static str = "LORA";

    fn validate(&self) -> Result<()> {
        LoraConfig::validate(self)
    }

    fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>> {
        let config = self.clone().with_defaults_of(model)?;
        config.validate()?;
        model.add_adapter_with(name, &config.selector(), |path, base| {
            Ok(Adapter::Lora(Lora::init(&config, path, base)?))
        })
    }

    fn for_loading(mut self) -> Self {
        // The file holds the trained values; PiSSA must not rewrite the base on load.
        self.init_lora_weights = LoraInit::Default;
        self.inference_mode = false;
        self
    }

    fn set_modules_to_save(&mut self, modules: Option<Vec<String>>) {
        self.modules_to_save = modules;
    }
}
