//! Prompt tuning: learned virtual-token embeddings in front of the input, as in HF PEFT's
//! `tuners/prompt_tuning`. Saved as PEFT's `prompt_embeddings` `[num_virtual_tokens, hidden]`.

mod config;
mod layer;

pub use config::{PromptTuningConfig, PromptTuningInit};
pub use layer::PromptTuning;

use std::collections::BTreeMap;
use std::path::Path;

use burn_peft_core::format::NamedTensor;
use burn_peft_core::limits::MemoryBudget;
use burn_peft_core::{PeftError, Result};

use crate::model::{AddAdapter, attach_prompt, prompt_host, read_prompt_table};
use crate::prefix::check_prompt_config;
use crate::{MethodConfig, PromptLearning};

impl MethodConfig for PromptTuningConfig {
    const PEFT_TYPE: &'static str = "PROMPT_TUNING";

    fn validate(&self) -> Result<()> {
        check_prompt_config(&self.peft_type, Self::PEFT_TYPE, self.num_virtual_tokens)
    }

    fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>> {
        let host = prompt_host(model, Self::PEFT_TYPE)?;
        let g = host.prompt_geometry();
        let config = self.clone().fill(&g)?;
        MemoryBudget::new(format!("prompt-tuning adapter '{name}'")).reserve(
            "virtual token embeddings",
            &[config.num_virtual_tokens, g.hidden_size],
            4,
        )?;
        let prompt = match config.prompt_tuning_init {
            PromptTuningInit::Random => {
                PromptTuning::random(&config, g.hidden_size, &host.prompt_device())
            }
            PromptTuningInit::Text => {
                let text_ids = config.init_token_ids.as_deref().ok_or_else(|| {
                    PeftError::InvalidConfig(
                        "prompt_tuning_init TEXT needs the init text's token ids \
                         (PromptTuningConfig::with_init_token_ids)"
                            .into(),
                    )
                })?;
                let ids = PromptTuning::init_ids(text_ids, config.num_virtual_tokens)?;
                PromptTuning::from_embeddings(&config, host.token_embeddings(&ids)?)
            }
        };
        attach_prompt(model, name, PromptLearning::Prompt(prompt))?;
        Ok(Vec::new())
    }

    fn for_loading(mut self) -> Self {
        self.inference_mode = false;
        self
    }

    /// The virtual tokens are the file's table; nothing is initialized (a `TEXT` config keeps
    /// its text, and needs no tokenizer here).
    fn load_into<M: AddAdapter>(
        &self,
        model: &mut M,
        name: &str,
        tensors: BTreeMap<String, NamedTensor>,
        file: &Path,
    ) -> Result<()> {
        let host = prompt_host(model, Self::PEFT_TYPE)?;
        let g = host.prompt_geometry();
        let config = self.clone().fill(&g)?;
        let dims = [config.num_virtual_tokens, g.hidden_size];
        let table = read_prompt_table(tensors, file, dims, &host.prompt_device())?;
        let prompt = PromptTuning::from_embeddings(&config, table);
        attach_prompt(model, name, PromptLearning::Prompt(prompt))
    }
}
