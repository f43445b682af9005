//! Prefix tuning: learned per-layer keys and values in front of every attention, as in HF
//! PEFT's `tuners/prefix_tuning`.
//!
//! The prefix is one table `[num_virtual_tokens, 2 · num_layers · token_dim]` (PEFT's saved
//! `prompt_embeddings`), where `token_dim = head_dim · num_kv_heads`: layer i reads its keys from
//! slot 2i and its values from slot 2i+1. With `prefix_projection` the table is produced by
//! `Embedding(P, token_dim) -> Linear -> tanh -> Linear` while training, and saved projected.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft_core::{PeftError, Result, SplitMix64, host_random, seeded_random};
use serde::{Deserialize, Serialize};

/// The shape of the model a prompt-learning adapter attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptGeometry {
    /// Decoder layers.
    pub num_layers: usize,
    /// Width of the token embeddings.
    pub hidden_size: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

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
        if self.peft_type != "PREFIX_TUNING" {
            return bad(format!(
                "peft_type '{}' is not PREFIX_TUNING",
                self.peft_type
            ));
        }
        if self.num_virtual_tokens == 0 {
            return bad("num_virtual_tokens must be at least 1".into());
        }
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

/// PEFT's reparameterization MLP: `Linear(token_dim, hidden) -> tanh -> Linear(hidden, 2·L·D)`.
#[derive(Module, Debug)]
pub struct PrefixProjection {
    /// First layer.
    pub first: Linear,
    /// Second layer.
    pub second: Linear,
}

/// A prefix-tuning adapter.
#[derive(Module, Debug)]
pub struct PrefixTuning {
    /// `[P, 2·L·D]` without projection, `[P, token_dim]` with it.
    pub embedding: Param<Tensor<2>>,
    /// The reparameterization MLP while training with `prefix_projection`.
    pub projection: Option<PrefixProjection>,
    /// The config (geometry filled in).
    #[module(skip)]
    pub config: PrefixTuningConfig,
}

impl PrefixTuning {
    /// A randomly initialized prefix (N(0, 1) embeddings, as `torch.nn.Embedding`). The config
    /// must be [filled](PrefixTuningConfig::fill).
    pub fn init(config: &PrefixTuningConfig, device: &Device) -> Result<Self> {
        let (Some(d), Some(l)) = (config.token_dim, config.num_layers) else {
            return Err(PeftError::InvalidConfig(
                "prefix tuning config has no token_dim / num_layers: fill it from the model".into(),
            ));
        };
        let p = config.num_virtual_tokens;
        let width = 2 * l * d;
        let mut rng = config
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, "prefix_encoder"));
        let rows = if config.prefix_projection { d } else { width };
        let normal = Distribution::Normal(0.0, 1.0);
        let embedding = seeded_random([p, rows], normal, rng.as_mut(), device);
        let projection = config.prefix_projection.then(|| {
            let hidden = config.encoder_hidden_size.unwrap_or(d);
            PrefixProjection {
                first: seeded_linear(d, hidden, rng.as_mut(), device),
                second: seeded_linear(hidden, width, rng.as_mut(), device),
            }
        });
        Ok(Self {
            embedding: Param::from_tensor(embedding),
            projection,
            config: config.clone(),
        })
    }

    /// A prefix from a saved table `[P, 2·L·D]` (what PEFT saves; the MLP is not kept).
    pub fn from_table(config: &PrefixTuningConfig, table: Tensor<2>) -> Self {
        Self {
            embedding: Param::from_tensor(table),
            projection: None,
            config: PrefixTuningConfig {
                prefix_projection: false,
                ..config.clone()
            },
        }
    }

    /// The key/value table `[P, 2·L·D]`, through the projection when there is one.
    pub fn table(&self) -> Tensor<2> {
        let e = self.embedding.val();
        match &self.projection {
            None => e,
            Some(mlp) => mlp.second.forward(mlp.first.forward(e).tanh()),
        }
    }

    /// Keys and values of every layer, each `[num_kv_heads, P, head_dim]`.
    pub fn layer_keys_values(
        &self,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Vec<(Tensor<3>, Tensor<3>)> {
        let table = self.table();
        let [_, width] = table.dims();
        let layers = width / (2 * num_kv_heads * head_dim);
        (0..layers)
            .map(|i| Self::keys_values_of(table.clone(), i, num_kv_heads, head_dim))
            .collect()
    }

    /// Layer `layer`'s keys and values (`[num_kv_heads, P, head_dim]` each) in a key/value
    /// `table` (`[P, 2·L·num_kv_heads·head_dim]`, what [`table`](Self::table) returns).
    pub fn keys_values_of(
        table: Tensor<2>,
        layer: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> (Tensor<3>, Tensor<3>) {
        let [p, _] = table.dims();
        let width = num_kv_heads * head_dim;
        let pick = |slot: usize| {
            table
                .clone()
                .slice([0..p, slot * width..(slot + 1) * width])
                .reshape([p, num_kv_heads, head_dim])
                .swap_dims(0, 1)
        };
        (pick(2 * layer), pick(2 * layer + 1))
    }
}

/// burn's default `Linear` (Kaiming-uniform weight and bias, bound 1/√fan_in), drawn on the host
/// from `rng` when one is given.
fn seeded_linear(
    d_in: usize,
    d_out: usize,
    rng: Option<&mut SplitMix64>,
    device: &Device,
) -> Linear {
    let linear = LinearConfig::new(d_in, d_out).init(device);
    let Some(rng) = rng else {
        return linear;
    };
    let bound = 1.0 / (d_in as f64).sqrt();
    let uniform = Distribution::Uniform(-bound, bound);
    let weight = host_random([d_in, d_out], uniform, rng, device);
    let bias = host_random([d_out], uniform, rng, device);
    Linear {
        weight: linear.weight.map(|_| weight),
        bias: linear.bias.map(|b| b.map(|_| bias)),
    }
}
