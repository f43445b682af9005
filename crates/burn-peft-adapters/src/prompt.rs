//! Prompt tuning: learned virtual-token embeddings in front of the input, as in HF PEFT's
//! `tuners/prompt_tuning`. Saved as PEFT's `prompt_embeddings` `[num_virtual_tokens, hidden]`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft_core::{PeftError, Result, SplitMix64, seeded_random};
use serde::{Deserialize, Serialize};

use crate::prefix::PromptGeometry;

/// How the virtual tokens start (`prompt_tuning_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PromptTuningInit {
    /// N(0, 1), as `torch.nn.Embedding`.
    #[default]
    #[serde(rename = "RANDOM")]
    Random,
    /// The embeddings of `prompt_tuning_init_text`'s tokens, repeated or cut to P.
    #[serde(rename = "TEXT")]
    Text,
}

/// Prompt tuning's configuration, with PEFT's field names and JSON form.
///
/// ```
/// use burn_peft_adapters::{PromptTuningConfig, PromptTuningInit};
/// let config = PromptTuningConfig::from_text(8, "Classify the review:");
/// assert_eq!(config.prompt_tuning_init, PromptTuningInit::Text);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptTuningConfig {
    /// Number of virtual tokens P.
    pub num_virtual_tokens: usize,
    /// Width of the token embeddings.
    pub token_dim: Option<usize>,
    /// 1 for decoder-only models.
    pub num_transformer_submodules: Option<usize>,
    /// Attention heads of the model (informative).
    pub num_attention_heads: Option<usize>,
    /// Layers of the model (informative).
    pub num_layers: Option<usize>,
    /// How the virtual tokens start.
    pub prompt_tuning_init: PromptTuningInit,
    /// The text for `TEXT` init.
    pub prompt_tuning_init_text: Option<String>,
    /// The tokenizer PEFT used for the init text (informative).
    pub tokenizer_name_or_path: Option<String>,
    /// PEFT's method name, always `"PROMPT_TUNING"`.
    pub peft_type: String,
    /// PEFT's task type.
    pub task_type: Option<String>,
    /// Where the base model came from.
    pub base_model_name_or_path: Option<String>,
    /// Whether the adapter was saved for inference.
    pub inference_mode: bool,
    /// burn-peft's own, not written to PEFT's file: draw random virtual tokens on the host from
    /// this seed, the same on every backend; `None` uses the device's generator.
    #[serde(skip)]
    pub init_seed: Option<u64>,
}

impl Default for PromptTuningConfig {
    fn default() -> Self {
        Self {
            num_virtual_tokens: 20,
            token_dim: None,
            num_transformer_submodules: None,
            num_attention_heads: None,
            num_layers: None,
            prompt_tuning_init: PromptTuningInit::Random,
            prompt_tuning_init_text: None,
            tokenizer_name_or_path: None,
            peft_type: "PROMPT_TUNING".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            inference_mode: false,
            init_seed: None,
        }
    }
}

impl PromptTuningConfig {
    /// P random virtual tokens.
    pub fn new(num_virtual_tokens: usize) -> Self {
        Self {
            num_virtual_tokens,
            ..Self::default()
        }
    }

    /// P virtual tokens starting from the embeddings of `text`.
    pub fn from_text(num_virtual_tokens: usize, text: &str) -> Self {
        Self {
            num_virtual_tokens,
            prompt_tuning_init: PromptTuningInit::Text,
            prompt_tuning_init_text: Some(text.to_string()),
            ..Self::default()
        }
    }

    /// Fills missing geometry from the model and checks what is given against it.
    pub fn fill(mut self, g: &PromptGeometry) -> Result<Self> {
        let bad = |m: String| Err(PeftError::InvalidConfig(m));
        if self.peft_type != "PROMPT_TUNING" {
            return bad(format!(
                "peft_type '{}' is not PROMPT_TUNING",
                self.peft_type
            ));
        }
        if self.num_virtual_tokens == 0 {
            return bad("num_virtual_tokens must be at least 1".into());
        }
        match self.token_dim {
            Some(d) if d != g.hidden_size => {
                return bad(format!(
                    "token_dim is {d} but the model's hidden size is {}",
                    g.hidden_size
                ));
            }
            _ => self.token_dim = Some(g.hidden_size),
        }
        self.num_layers.get_or_insert(g.num_layers);
        self.num_transformer_submodules.get_or_insert(1);
        if self.prompt_tuning_init == PromptTuningInit::Text
            && self
                .prompt_tuning_init_text
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return bad("prompt_tuning_init TEXT needs prompt_tuning_init_text".into());
        }
        Ok(self)
    }

    /// The config as PEFT writes it.
    pub fn to_peft_json(&self) -> Result<String> {
        burn_peft_core::format::peft_config_json(self)
    }
}

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
