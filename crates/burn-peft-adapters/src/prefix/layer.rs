//! The prefix-tuning module: the key/value table, and the MLP that produces it while training.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft_core::limits::{MemoryBudget, elements};
use burn_peft_core::{PeftError, Result, SplitMix64, host_random, seeded_random};

use super::config::PrefixTuningConfig;

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
        let width = elements(&[2, l, d])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                PeftError::InvalidConfig("prefix width 2 · layers · token_dim overflows".into())
            })?;
        let mut rng = config
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, "prefix_encoder"));
        let rows = if config.prefix_projection { d } else { width };
        let mut budget = MemoryBudget::new("prefix-tuning adapter");
        budget.reserve("prefix table", &[p, rows], 4)?;
        if config.prefix_projection {
            let hidden = config.encoder_hidden_size.unwrap_or(d);
            budget.reserve("prefix projection", &[d, hidden], 4)?;
            budget.reserve("prefix projection", &[hidden, width], 4)?;
            budget.reserve("projected prefix", &[p, width], 4)?;
        }
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
