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

use burn::module::Module;
use burn_peft_core::format::{NamedTensor, check_shape, ensure_all_used, take_tensor};
use burn_peft_core::{PeftError, Result};

use crate::model::{AddAdapter, attach_prompt, prompt_host};
use crate::{MethodConfig, PromptLearning};

/// The key PEFT saves prompt-learning adapters under.
pub(crate) const PROMPT_KEY: &str = "prompt_embeddings";

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
    /// adapter becomes that table, without the MLP.
    fn import_weights<M: AddAdapter>(
        &self,
        model: &mut M,
        _name: &str,
        mut tensors: BTreeMap<String, NamedTensor>,
        file: &Path,
    ) -> Result<()> {
        let table = take_tensor(&mut tensors, file, PROMPT_KEY)?;
        ensure_all_used(&tensors, file)?;
        let host = prompt_host(model, Self::PEFT_TYPE)?;
        let g = host.prompt_geometry();
        let config = self.clone().fill(&g)?;
        let width = 2 * g.num_layers * g.head_dim * g.num_kv_heads;
        check_shape(PROMPT_KEY, &table, &[config.num_virtual_tokens, width])?;
        let table = table.to_tensor(&host.prompt_device(), PROMPT_KEY)?;
        let prefix = PromptLearning::Prefix(PrefixTuning::from_table(&config, table));
        set_prompt_adapter(model, prefix.set_require_grad(true))
    }

    fn to_peft_json(&self) -> Result<String> {
        PrefixTuningConfig::to_peft_json(self)
    }
}

/// What every prompt-learning config must say.
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

/// Replaces the module in `model`'s prompt slot, keeping its name.
pub(crate) fn set_prompt_adapter<M: AddAdapter>(
    model: &mut M,
    adapter: PromptLearning,
) -> Result<()> {
    let host = model.prompt_host_mut().ok_or_else(|| {
        PeftError::UnsupportedMethod("a model without prompt-learning support".into())
    })?;
    host.prompt_slot_mut().map(|_| adapter);
    Ok(())
}
