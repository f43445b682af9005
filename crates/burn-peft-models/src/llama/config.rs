//! `LlamaConfig`, read from an HF `config.json` in either of its forms.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The `model_type`s of `config.json` that the Llama decoder implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// `llama` (Llama 2 and SmolLM2 shapes).
    Llama,
    /// `mistral`.
    Mistral,
    /// `qwen2`: biases on the query, key and value projections (not the output projection).
    Qwen2,
    /// `qwen3`: an RMSNorm over each query and key head before RoPE (`q_norm`, `k_norm`), a
    /// `head_dim` of its own (128 unless the config says).
    Qwen3,
}

impl ModelType {
    /// Every supported type, in the order errors list them.
    pub const ALL: [ModelType; 4] = [
        ModelType::Llama,
        ModelType::Mistral,
        ModelType::Qwen2,
        ModelType::Qwen3,
    ];

    /// The type `config.json` names, if it is supported.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The name `config.json` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
        }
    }

    /// transformers' class for the causal-LM head (`architectures` in `config.json`).
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
            ModelType::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// Whether q/k/v have biases when `config.json` does not say (`attention_bias`).
    pub fn default_attention_bias(self) -> bool {
        self == ModelType::Qwen2
    }

    /// Whether the output projection has a bias, given `attention_bias` (Qwen2 has none there).
    pub fn output_projection_bias(self, attention_bias: bool) -> bool {
        attention_bias && self != ModelType::Qwen2
    }

    /// Whether each query and key head is RMS-normalized before RoPE (Qwen3).
    pub fn has_qk_norm(self) -> bool {
        self == ModelType::Qwen3
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape of a Llama-family decoder, with HF's field names.
///
/// ```
/// use burn_peft_models::LlamaConfig;
/// let config = LlamaConfig::from_json_str(r#"{"model_type":"llama","vocab_size":100,
///     "hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
///     "num_attention_heads":4,"num_key_value_heads":2,"rope_theta":10000.0}"#).unwrap();
/// assert_eq!(config.head_dim(), 8);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: ModelType,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Per-head width; `hidden_size / num_attention_heads` when absent.
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// How RoPE's frequencies are scaled (`rope_type` in `rope_parameters`/`rope_scaling`).
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output layer reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o (Qwen2 has them on q/k/v).
    pub attention_bias: bool,
    /// Biases on the feed-forward projections.
    pub mlp_bias: bool,
    /// Mistral's sliding window: a query attends to the `sliding_window` most recent positions,
    /// itself included (transformers' `kv_idx > q_idx - sliding_window`); `None`: to all.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
    partial_rotary_factor: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    /// Absent and `null` differ for Mistral: absent is transformers' default of 4096.
    #[serde(default, deserialize_with = "present")]
    sliding_window: Option<Option<usize>>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<OneOrList>,
    eos_token_id: Option<OneOrList>,
}

/// `Some(value)` for a field that is present, `null` included.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
    partial_rotary_factor: Option<f64>,
}

impl RopeParameters {
    fn kind(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("default")
    }

    /// The scaling these parameters describe, or why it is refused.
    fn scaling(&self) -> std::result::Result<RopeScaling, String> {
        let need = |v: Option<f64>, name: &str| {
            v.filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("rope type '{}' needs a positive '{name}'", self.kind()))
        };
        Ok(match self.kind() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need(self.factor, "factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need(self.factor, "factor")?,
            },
            "llama3" => {
                let low_freq_factor = need(self.low_freq_factor, "low_freq_factor")?;
                let high_freq_factor = need(self.high_freq_factor, "high_freq_factor")?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope type 'llama3' needs high_freq_factor {high_freq_factor} above \
                         low_freq_factor {low_freq_factor}"
                    ));
                }
                RopeScaling::Llama3 {
                    factor: need(self.factor, "factor")?,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: need(
                        self.original_max_position_embeddings,
                        "original_max_position_embeddings",
                    )?,
                }
            }
            other => {
                return Err(format!(
                    "rope type '{other}' is not supported yet (supported: default, linear, \
                     dynamic, llama3)"
                ));
            }
        })
    }
}

/// How RoPE's inverse frequencies are scaled, as transformers' `ROPE_INIT_FUNCTIONS` compute
/// them (the attention factor is 1 for each of these).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `default`: `θ^(−2i/d)`.
    #[default]
    #[serde(rename = "default")]
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `dynamic` (dynamic NTK): up to `max_position_embeddings` positions the plain
    /// frequencies; for a longer sequence of `n` positions the base becomes
    /// `θ · (factor · n / max_position_embeddings − (factor − 1))^(d / (d − 2))`, recomputed
    /// for each forward pass from its own length (see [`RopeScaling::inv_freq_for`]).
    Dynamic {
        /// How fast the base grows with the length.
        factor: f64,
    },
    /// `llama3` (Llama 3.1 and later): frequencies whose wavelength passes
    /// `original_max_position_embeddings / low_freq_factor` divided by `factor`, those below
    /// `original_max_position_embeddings / high_freq_factor` kept, the band between
    /// interpolated.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Sets the long-wavelength edge of the band.
        low_freq_factor: f64,
        /// Sets the short-wavelength edge of the band.
        high_freq_factor: f64,
        /// The context the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// The `head_dim / 2` inverse frequencies for base `theta`.
    ///
    /// ```
    /// use burn_peft_models::RopeScaling;
    /// let plain = RopeScaling::None.inv_freq(10000.0, 4);
    /// assert_eq!(plain, vec![1.0, 0.01]);
    /// let linear = RopeScaling::Linear { factor: 2.0 }.inv_freq(10000.0, 4);
    /// assert_eq!(linear, vec![0.5, 0.005]);
    /// ```
    pub fn inv_freq(&self, theta: f64, head_dim: usize) -> Vec<f64> {
        let d = head_dim as f64;
        let plain = (0..head_dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / d));
        match *self {
            RopeScaling::None | RopeScaling::Dynamic { .. } => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: context,
            } => plain
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < context / high_freq_factor {
                        f
                    } else if wavelen > context / low_freq_factor {
                        f / factor
                    } else {
                        let smooth = (context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect(),
        }
    }

    /// The inverse frequencies for a forward pass whose positions end at `length` (cached
    /// ones included), in a model of `max_position_embeddings`: [`inv_freq`](Self::inv_freq)
    /// except for `dynamic` past `max_position_embeddings`, where the base grows with the
    /// length as transformers' `dynamic` RoPE computes it for that length.
    ///
    /// transformers also keeps, between calls, the frequencies of the longest sequence it has
    /// seen above `max_position_embeddings` and uses them for a shorter one that is still
    /// above it; here each pass uses its own length. A fresh transformers model and this give
    /// the same numbers, as does one generation after another from a prompt within the
    /// context.
    ///
    /// ```
    /// use burn_peft_models::RopeScaling;
    /// let dynamic = RopeScaling::Dynamic { factor: 2.0 };
    /// assert_eq!(dynamic.inv_freq_for(10000.0, 4, 16, 16), vec![1.0, 0.01]);
    /// // 32 positions in a 16-position model: base 10000 · 3² = 90000.
    /// let long = dynamic.inv_freq_for(10000.0, 4, 32, 16);
    /// assert!((long[1] - 1.0 / 300.0).abs() < 1e-12);
    /// ```
    pub fn inv_freq_for(
        &self,
        theta: f64,
        head_dim: usize,
        length: usize,
        max_position_embeddings: usize,
    ) -> Vec<f64> {
        match *self {
            RopeScaling::Dynamic { factor } if length > max_position_embeddings => {
                let d = head_dim as f64;
                let grown =
                    factor * length as f64 / max_position_embeddings as f64 - (factor - 1.0);
                RopeScaling::None.inv_freq(theta * grown.powf(d / (d - 2.0)), head_dim)
            }
            _ => self.inv_freq(theta, head_dim),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrList {
    One(u32),
    List(Vec<u32>),
}

impl OneOrList {
    fn first(self) -> Option<u32> {
        match self {
            OneOrList::One(v) => Some(v),
            OneOrList::List(v) => v.first().copied(),
        }
    }
}

impl LlamaConfig {
    /// Reads an HF `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| burn_peft_core::PeftError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of an HF `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("config.json"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| ModelError::UnsupportedModel {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let name = raw.model_type.ok_or_else(|| bad("no model_type".into()))?;
        let model_type = ModelType::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = ModelType::ALL.iter().map(|t| t.as_str()).collect();
            bad(format!(
                "model_type '{name}' (supported: {})",
                known.join(", ")
            ))
        })?;
        let need = |v: Option<usize>, name: &str| {
            v.filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("missing or zero '{name}'")))
        };
        // Both spellings are read: a config can carry the new `rope_parameters` and a legacy
        // `rope_scaling` side by side, and a scaling in either changes the positions.
        let scaled: Vec<&RopeParameters> = [&raw.rope_parameters, &raw.rope_scaling]
            .into_iter()
            .flatten()
            .filter(|r| r.kind() != "default")
            .collect();
        let rope_scaling = match scaled[..] {
            [] => RopeScaling::None,
            [one] => one.scaling().map_err(&bad)?,
            [a, b] => {
                let (a, b) = (a.scaling().map_err(&bad)?, b.scaling().map_err(&bad)?);
                if a != b {
                    return Err(bad(
                        "rope_parameters and rope_scaling set different RoPE scalings".into(),
                    ));
                }
                a
            }
            _ => unreachable!("two sources at most"),
        };
        let partial = [&raw.rope_parameters, &raw.rope_scaling]
            .into_iter()
            .flatten()
            .filter_map(|r| r.partial_rotary_factor)
            .chain(raw.partial_rotary_factor);
        if let Some(factor) = partial.into_iter().find(|&f| f != 1.0) {
            return Err(bad(format!(
                "partial_rotary_factor {factor} (RoPE on part of each head) is not supported yet"
            )));
        }
        let rope = raw.rope_parameters.or(raw.rope_scaling);
        let rope_theta = raw
            .rope_theta
            .or(rope.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10000.0);
        // As transformers reads it: Mistral windows every layer (4096 unless the config says
        // otherwise, `null` for none); Qwen2 only with `use_sliding_window`, and then only the
        // layers from `max_window_layers` on, which is not implemented; Llama never.
        let sliding_window = match model_type {
            ModelType::Mistral => raw.sliding_window.unwrap_or(Some(4096)),
            ModelType::Qwen2 | ModelType::Qwen3 if raw.use_sliding_window == Some(true) => {
                return Err(bad(format!(
                    "use_sliding_window (a window on some of {model_type}'s layers) is not \
                     supported yet"
                )));
            }
            _ => None,
        };
        if sliding_window == Some(0) {
            return Err(bad("sliding_window 0 lets no position see any other".into()));
        }
        let heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let config = LlamaConfig {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size: need(raw.hidden_size, "hidden_size")?,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            // transformers' Qwen3 default, not hidden / heads.
            head_dim: raw
                .head_dim
                .or((model_type == ModelType::Qwen3).then_some(128)),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw
                .attention_bias
                .unwrap_or(model_type.default_attention_bias()),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            sliding_window,
            bos_token_id: raw.bos_token_id.and_then(OneOrList::first),
            eos_token_id: raw.eos_token_id.and_then(OneOrList::first),
            model_type,
        };
        config.check().map_err(bad)?;
        Ok(config)
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err("hidden_size is not a multiple of num_attention_heads".into());
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps {} must be > 0", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta {} must be > 0", self.rope_theta));
        }
        for (name, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= self.vocab_size) {
                return Err(format!(
                    "{name} {id} is outside the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        if self.parameter_count().is_none() {
            return Err(format!(
                "the sizes overflow: {} layers of width {}, {} heads of {}, feed-forward {}, \
                 vocabulary {}",
                self.num_hidden_layers,
                self.hidden_size,
                self.num_attention_heads,
                self.head_dim(),
                self.intermediate_size,
                self.vocab_size
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd: RoPE needs pairs",
                self.head_dim()
            ));
        }
        if matches!(self.rope_scaling, RopeScaling::Dynamic { .. }) && self.head_dim() <= 2 {
            return Err(format!(
                "rope type 'dynamic' needs head_dim above 2 (got {})",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// The longest sequence the model takes: `max_position_embeddings`, except under `dynamic`
    /// RoPE scaling, whose frequencies stretch to any length (then `usize::MAX`). Prompts,
    /// evaluated texts and generation are held to it.
    ///
    /// ```
    /// use burn_peft_models::{LlamaConfig, RopeScaling};
    /// let mut config = LlamaConfig::tiny(32);
    /// assert_eq!(config.context_length(), config.max_position_embeddings);
    /// config.rope_scaling = RopeScaling::Dynamic { factor: 2.0 };
    /// assert_eq!(config.context_length(), usize::MAX);
    /// ```
    pub fn context_length(&self) -> usize {
        match self.rope_scaling {
            RopeScaling::Dynamic { .. } => usize::MAX,
            _ => self.max_position_embeddings,
        }
    }

    /// The number of parameters of a model of this shape (weights, biases, norms; the output
    /// layer unless tied), `None` when it overflows.
    ///
    /// ```
    /// use burn_peft_models::LlamaConfig;
    /// let config = LlamaConfig::tiny(32);
    /// assert!(config.parameter_count().unwrap() > 0);
    /// ```
    pub fn parameter_count(&self) -> Option<u64> {
        let n = |v: usize| u64::try_from(v).ok();
        let (h, f, hd) = (
            n(self.hidden_size)?,
            n(self.intermediate_size)?,
            n(self.head_dim())?,
        );
        let q = n(self.num_attention_heads)?.checked_mul(hd)?;
        let kv = n(self.num_key_value_heads)?.checked_mul(hd)?;
        let attention = h
            .checked_mul(q.checked_add(kv.checked_mul(2)?)?)?
            .checked_mul(2)?;
        let attention_bias = if self.attention_bias {
            q + 2 * kv + h
        } else {
            0
        };
        let mlp = h.checked_mul(f)?.checked_mul(3)?;
        let mlp_bias = if self.mlp_bias { 2 * f + h } else { 0 };
        let layer = attention
            .checked_add(attention_bias)?
            .checked_add(mlp)?
            .checked_add(mlp_bias)?
            .checked_add(2 * h)?
            .checked_add(if self.model_type.has_qk_norm() {
                2 * hd
            } else {
                0
            })?;
        let embeddings = n(self.vocab_size)?
            .checked_mul(h)?
            .checked_mul(if self.tie_word_embeddings { 1 } else { 2 })?;
        n(self.num_hidden_layers)?
            .checked_mul(layer)?
            .checked_add(embeddings)?
            .checked_add(h)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_FORM: &str = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,
        "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
        "num_key_value_heads":1,"rope_parameters":{"rope_theta":500.0,"rope_type":"default"}}"#;

    #[test]
    fn reads_both_rope_forms() {
        let new = LlamaConfig::from_json_str(NEW_FORM).unwrap();
        assert_eq!(new.rope_theta, 500.0);
        let old = NEW_FORM.replace(
            r#""rope_parameters":{"rope_theta":500.0,"rope_type":"default"}"#,
            r#""rope_theta":500.0"#,
        );
        assert_eq!(LlamaConfig::from_json_str(&old).unwrap(), new);
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        let bert = NEW_FORM.replace("\"llama\"", "\"bert\"");
        let e = LlamaConfig::from_json_str(&bert).unwrap_err().to_string();
        assert!(e.contains("model_type 'bert'"), "{e}");
        let yarn = NEW_FORM.replace("\"default\"", "\"yarn\"");
        assert!(LlamaConfig::from_json_str(&yarn).is_err());
        let gqa = NEW_FORM.replace("\"num_key_value_heads\":1", "\"num_key_value_heads\":3");
        assert!(LlamaConfig::from_json_str(&gqa).is_err());
        assert!(LlamaConfig::from_json_str("not json").is_err());
    }

    #[test]
    fn rejects_values_that_would_compute_nonsense() {
        let with =
            |field: &str| NEW_FORM.replace("\"model_type\"", &format!("{field},\"model_type\""));
        for (field, needle) in [
            ("\"rms_norm_eps\":-1e-6", "rms_norm_eps"),
            ("\"rms_norm_eps\":0", "rms_norm_eps"),
            ("\"rope_theta\":0", "rope_theta"),
            (
                "\"eos_token_id\":10",
                "eos_token_id 10 is outside the vocabulary of 10",
            ),
            ("\"bos_token_id\":[99]", "bos_token_id 99"),
        ] {
            let e = LlamaConfig::from_json_str(&with(field))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{field}: {e}");
        }
        assert!(LlamaConfig::from_json_str(&with("\"eos_token_id\":9")).is_ok());
    }
}
