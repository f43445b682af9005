//! Prefix tuning: learned per-layer keys and values in front of every attention, as in HF
//! PEFT's `tuners/prefix_tuning`.
//!
//! The prefix is one table `[num_virtual_tokens, 2 · num_layers · token_dim]` (PEFT's saved
//! `prompt_embeddings`), where `token_dim = head_dim · num_kv_heads`: layer i reads its keys from
//! slot 2i and its values from slot 2i+1. With `prefix_projection` the table is produced by
//! `Embedding(P, token_dim) -> Linear -> tanh -> Linear` while training, and saved projected.

mod config;
mod layer;

pub use config::PrefixTuningConfig;
pub use layer::{PrefixProjection, PrefixTuning};

use std::collections::BTreeMap;
use std::path::Path;

use burn_peft_core::format::NamedTensor;
use burn_peft_core::{PeftError, Result};

use crate::model::{AddAdapter, attach_prompt, prompt_host, read_prompt_table};
use crate::{MethodConfig, PromptLearning};

impl MethodConfig for PrefixTuningConfig {
    const PEFT_TYPE: &'static str = "PREFIX_TUNING";

    fn validate(&self) -> Result<()> {
        check_prompt_config(&self.peft_type, Self::PEFT_TYPE, self.num_virtual_tokens)
    }

    fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>> {
        let host = prompt_host(model, Self::PEFT_TYPE)?;
        let config = self.clone().fill(&host.prompt_geometry())?;
        let prefix = PrefixTuning::init(&config, &host.prompt_device())?;
        attach_prompt(model, name, PromptLearning::Prefix(prefix))?;
        Ok(Vec::new())
    }

    fn for_loading(mut self) -> Self {
        self.inference_mode = false;
        self
    }

    /// PEFT's file holds the table (projected, when trained with `prefix_projection`); the
    /// adapter becomes that table, without the MLP, and nothing is initialized.
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
        let width = 2 * g.num_layers * g.head_dim * g.num_kv_heads;
        let dims = [config.num_virtual_tokens, width];
        let table = read_prompt_table(tensors, file, dims, &host.prompt_device())?;
        let prefix = PrefixTuning::from_table(&config, table);
        attach_prompt(model, name, PromptLearning::Prefix(prefix))
    }
}

/// What every prompt-learning config must say: its own `peft_type`, and at least one virtual
/// token.
pub(crate) fn check_prompt_config(peft_type: &str, expected: &str, tokens: usize) -> Result<()> {
    if peft_type != expected {
        return Err(PeftError::InvalidConfig(format!(
            "peft_type '{peft_type}' is not {expected}"
        )));
    }
    if tokens == 0 {
        return Err(PeftError::InvalidConfig(
            "num_virtual_tokens must be at least 1".into(),
        ));
    }
    Ok(())
}
