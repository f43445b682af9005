//! LoRA, rsLoRA and DoRA, as in HF PEFT's `tuners/lora`.

mod combine;
mod config;
mod layer;

pub use combine::add_concatenated;
pub use config::{LoraConfig, LoraInit, OneOrMany};
pub use layer::Lora;
pub(crate) use layer::replace;

use burn_peft_core::Result;
use burn_peft_core::limits::MemoryBudget;

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
        // The factors of every targeted layer, added up before each is allocated.
        let mut budget = MemoryBudget::new(format!("LoRA adapter '{name}'"));
        model.add_adapter_with(name, &config.selector(), |path, base| {
            let (r, _) = config.rank_and_alpha(path)?;
            let [d_in, d_out] = base.weight.dims();
            budget.reserve(&format!("{path} lora_A"), &[r, d_in], 4)?;
            budget.reserve(&format!("{path} lora_B"), &[d_out, r], 4)?;
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
