//! Prompt tuning's configuration, with PEFT's field names and JSON form.

use burn_peft_core::{PeftError, Result};
use serde::{Deserialize, Serialize};

use crate::model::PromptGeometry;

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
    /// burn-peft's own, not written to PEFT's file: the token ids of
    /// `prompt_tuning_init_text`, which `TEXT` initialization embeds (set them with a
    /// tokenizer: [`with_init_token_ids`](Self::with_init_token_ids)).
    #[serde(skip)]
    pub init_token_ids: Option<Vec<u32>>,
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
            init_token_ids: None,
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

    /// Sets the token ids of the init text (what a tokenizer makes of
    /// `prompt_tuning_init_text`).
    pub fn with_init_token_ids(mut self, ids: Vec<u32>) -> Self {
        self.init_token_ids = Some(ids);
        self
    }

    /// Fills missing geometry from the model and checks what is given against it.
    pub fn fill(mut self, g: &PromptGeometry) -> Result<Self> {
        let bad = |m: String| Err(PeftError::InvalidConfig(m));
        super::check_prompt_config(&self.peft_type, "PROMPT_TUNING", self.num_virtual_tokens)?;
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
