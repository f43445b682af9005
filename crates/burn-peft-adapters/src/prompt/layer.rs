//! The prompt-tuning module: the virtual tokens' embeddings.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft_core::{PeftError, Result, SplitMix64, seeded_random};

use super::config::PromptTuningConfig;

/// A prompt-tuning adapter: `[P, hidden]` embeddings prepended to the input embeddings.
#[derive(Module, Debug)]
pub struct PromptTuning {
    /// The virtual tokens' embeddings.
    pub embedding: Param<Tensor<2>>,
    /// The config (geometry filled in).
    #[module(skip)]
    pub config: PromptTuningConfig,
}

impl PromptTuning {
    /// Random virtual tokens, N(0, 1) (drawn on the host when `config.init_seed` is set).
    pub fn random(config: &PromptTuningConfig, hidden: usize, device: &Device) -> Self {
        let shape = [config.num_virtual_tokens, hidden];
        let normal = Distribution::Normal(0.0, 1.0);
        let mut rng = config
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, "prompt_encoder"));
        let e = seeded_random(shape, normal, rng.as_mut(), device);
        Self::from_embeddings(config, e)
    }

    /// Virtual tokens with the given embeddings `[P, hidden]`.
    pub fn from_embeddings(config: &PromptTuningConfig, embeddings: Tensor<2>) -> Self {
        Self {
            embedding: Param::from_tensor(embeddings),
            config: config.clone(),
        }
    }

    /// PEFT's TEXT init: the text's token ids repeated, then cut, to exactly `p` ids.
    pub fn init_ids(text_ids: &[u32], p: usize) -> Result<Vec<u32>> {
        if text_ids.is_empty() {
            return Err(PeftError::InvalidConfig(
                "prompt_tuning_init_text has no tokens".into(),
            ));
        }
        Ok(text_ids.iter().copied().cycle().take(p).collect())
    }
}
