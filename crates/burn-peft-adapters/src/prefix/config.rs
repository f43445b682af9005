//! Prefix tuning's configuration, with PEFT's field names and JSON form.

use burn_peft_core::{PeftError, Result};
use serde::{Deserialize, Serialize};

use crate::model::PromptGeometry;

/// Prefix tuning's configuration, with PEFT's field names and JSON form.
///
/// The geometry fields may be left `None`: [`PrefixTuningConfig::fill`] takes them from the model,
/// as PEFT does (with grouped-query attention, `token_dim` is `head_dim · num_kv_heads`).
///
/// ```
/// use burn_peft_adapters::{PrefixTuningConfig, PromptGeometry};
/// let geometry = PromptGeometry { num_layers: 2, hidden_size: 64, num_kv_heads: 2, head_dim: 16 };
/// let config = PrefixTuningConfig::new(5).fill(&geometry).unwrap();
/// assert_eq!(config.token_dim, Some(32));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrefixTuningConfig {
    /// Number of virtual tokens P.
    pub num_virtual_tokens: usize,
    /// Width of one layer's keys (head_dim · KV heads).
    pub token_dim: Option<usize>,
    /// 1 for decoder-only models.
    pub num_transformer_submodules: Option<usize>,
    /// KV heads of the model.
    pub num_attention_heads: Option<usize>,
    /// Layers of the model.
    pub num_layers: Option<usize>,
    /// Hidden width of the reparameterization MLP.
    pub encoder_hidden_size: Option<usize>,
    /// Train the prefix through an MLP (PEFT's reparameterization).
    pub prefix_projection: bool,
    /// PEFT's method name, always `"PREFIX_TUNING"`.
    pub peft_type: String,
    /// PEFT's task type.
    pub task_type: Option<String>,
    /// Where the base model came from.
    pub base_model_name_or_path: Option<String>,
    /// Whether the adapter was saved for inference.
    pub inference_mode: bool,
    /// burn-peft's own, not written to PEFT's file: draw the initial table (and MLP) on the
    /// host from this seed, the same on every backend; `None` uses the device's generator.
    #[serde(skip)]
    pub init_seed: Option<u64>,
}

impl Default for PrefixTuningConfig {
    fn default() -> Self {
        Self {
            num_virtual_tokens: 20,
            token_dim: None,
            num_transformer_submodules: None,
            num_attention_heads: None,
            num_layers: None,
            encoder_hidden_size: None,
            prefix_projection: false,
            peft_type: "PREFIX_TUNING".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            inference_mode: false,
            init_seed: None,
        }
    }
}

impl PrefixTuningConfig {
    /// P virtual tokens, no projection.
    pub fn new(num_virtual_tokens: usize) -> Self {
        Self {
            num_virtual_tokens,
            ..Self::default()
        }
    }

    /// Fills missing geometry from the model and checks what is given against it.
    pub fn fill(mut self, g: &PromptGeometry) -> Result<Self> {
        let bad = |m: String| Err(PeftError::InvalidConfig(m));
        super::check_prompt_config(&self.peft_type, "PREFIX_TUNING", self.num_virtual_tokens)?;
        let token_dim = g.head_dim * g.num_kv_heads;
        let checks = [
            ("token_dim", &mut self.token_dim, token_dim),
            ("num_layers", &mut self.num_layers, g.num_layers),
            (
                "num_attention_heads",
                &mut self.num_attention_heads,
                g.num_kv_heads,
            ),
            (
                "num_transformer_submodules",
                &mut self.num_transformer_submodules,
                1,
            ),
        ];
        for (name, field, want) in checks {
            match *field {
                Some(v) if v != want => {
                    return bad(format!("{name} is {v} but the model needs {want}"));
                }
                _ => *field = Some(want),
            }
        }
        if self.encoder_hidden_size.is_none() {
            self.encoder_hidden_size = Some(g.hidden_size);
        }
        Ok(self)
    }

    /// The config as PEFT writes it.
    pub fn to_peft_json(&self) -> Result<String> {
        burn_peft_core::format::peft_config_json(self)
    }
}
