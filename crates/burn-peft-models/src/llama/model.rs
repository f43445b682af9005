//! The Llama-family decoder: RMSNorm, RoPE (rotate-half), grouped-query attention, SwiGLU.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Distribution, FloatDType, Int, Tensor, TensorData};
use burn_peft_adapters::{Adapter, PrefixTuning, PromptSlot};
use burn_peft_core::limits::MemoryBudget;
use burn_peft_core::{
    AdaptedLinear, AdapterHost, Precision, TargetModules, cast_if_frozen, layout_for_products,
};

use super::config::{LlamaConfig, ModelType, RopeScaling};
use crate::attention::scaled_dot_attention;
use crate::error::{ModelError, Result};
use crate::layerwise::prefix_table;
use crate::loss::linear_cross_entropy;
use crate::swiglu::swiglu;

/// Up to this many rows, tied logits are computed without transposing the embedding table.
const FEW_ROWS: usize = 16;

/// A linear layer of the model: frozen base plus named adapters.
pub type PeftLinear = AdaptedLinear<Adapter>;

/// Root-mean-square layer norm with a learned scale.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-feature scale.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square before the root.
    pub eps: f64,
}

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) * weight` over the last dimension, normalized in f32 and
    /// returned in `x`'s type (as HF's `LlamaRMSNorm`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
        let rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + self.eps).sqrt();
        (x / rms).cast(dtype) * self.weight.val().cast(dtype).unsqueeze::<D>()
    }
}

/// Self-attention with grouped-query heads and rotary position embeddings.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: PeftLinear,
    /// Key projection.
    pub k_proj: PeftLinear,
    /// Value projection.
    pub v_proj: PeftLinear,
    /// Output projection.
    pub o_proj: PeftLinear,
    /// Qwen3's RMSNorm over each query head, before RoPE.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3's RMSNorm over each key head, before RoPE.
    pub k_norm: Option<RmsNorm>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// The SwiGLU feed-forward block.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection (through SiLU).
    pub gate_proj: PeftLinear,
    /// Up projection.
    pub up_proj: PeftLinear,
    /// Down projection.
    pub down_proj: PeftLinear,
}

/// One decoder layer: pre-norm attention and pre-norm feed-forward, both residual.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Attention block.
    pub self_attn: Attention,
    /// Feed-forward block.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm,
}

/// Keys and values of the positions seen so far, per layer (`[batch, kv_heads, len, head_dim]`,
/// rotary embedding applied), for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// Whether the prompt-learning adapter (prefix or virtual tokens) is already in the cache.
    primed: bool,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Llama-family causal language model whose linear layers host adapters under PEFT's
/// module names (`model.layers.N.self_attn.q_proj`, `model.layers.N.mlp.down_proj`, ...).
///
/// ```
/// use burn::tensor::{Device, Int, Tensor};
/// use burn_peft_models::{Llama, LlamaConfig};
///
/// let config = LlamaConfig::tiny(32);
/// let device = Device::flex();
/// let model = Llama::init(&config, &device);
/// let ids = Tensor::<2, Int>::from_data([[1, 2, 3]], &device);
/// let logits = model.forward(ids.clone(), None);
/// assert_eq!(logits.dims(), [1, 3, 32]);
/// let loss = Llama::causal_lm_loss(logits, ids, None).into_scalar::<f32>();
/// assert!(loss.is_finite());
/// ```
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding, `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output layer; `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    /// The prefix- or prompt-tuning adapter, if one is attached (see `PromptHost`).
    pub(super) prompt: PromptSlot,
    /// The shape the model was built from.
    #[module(skip)]
    pub config: LlamaConfig,
    /// What activations are computed in; see [`Llama::set_precision`].
    #[module(skip)]
    pub precision: Precision,
}

impl AdapterHost for Llama {
    type Adapter = Adapter;

    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut PeftLinear)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &mut layer.self_attn;
            f(&format!("{p}.self_attn.q_proj"), &mut a.q_proj);
            f(&format!("{p}.self_attn.k_proj"), &mut a.k_proj);
            f(&format!("{p}.self_attn.v_proj"), &mut a.v_proj);
            f(&format!("{p}.self_attn.o_proj"), &mut a.o_proj);
            let m = &mut layer.mlp;
            f(&format!("{p}.mlp.gate_proj"), &mut m.gate_proj);
            f(&format!("{p}.mlp.up_proj"), &mut m.up_proj);
            f(&format!("{p}.mlp.down_proj"), &mut m.down_proj);
        }
    }

    /// PEFT's Llama entries (also used for Mistral and Qwen2): LoRA on `q_proj`/`v_proj`,
    /// IA3 on `k_proj`/`v_proj`/`down_proj`.
    fn default_target_modules(&self, peft_type: &str) -> Option<TargetModules> {
        match peft_type {
            "LORA" => Some(TargetModules::names(["q_proj", "v_proj"])),
            "IA3" => Some(TargetModules::names(["k_proj", "v_proj", "down_proj"])),
            _ => None,
        }
    }

    /// PEFT's Llama entry: IA3 scales `down_proj`'s input.
    fn default_feedforward_modules(&self) -> Option<TargetModules> {
        Some(TargetModules::names(["down_proj"]))
    }
}

impl LlamaConfig {
    /// A model of this shape with random weights (burn's `Config::init` pattern; the same as
    /// [`Llama::init`]).
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use burn_peft_models::LlamaConfig;
    /// let model = LlamaConfig::tiny(32).init(&Device::flex());
    /// assert_eq!(model.layers.len(), 2);
    /// ```
    pub fn init(&self, device: &Device) -> Llama {
        Llama::init(self, device)
    }

    /// A tiny random-weight shape for tests and examples: 2 layers, hidden 32, 4 heads, 2 KV heads.
    pub fn tiny(vocab_size: usize) -> Self {
        LlamaConfig {
            model_type: ModelType::Llama,
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

/// Where a model's weights come from while it is built.
pub(crate) trait WeightSource {
    /// A `[rows, cols]` matrix in PyTorch layout for `key`, or the fallback.
    fn matrix(&mut self, key: &str, shape: [usize; 2], device: &Device) -> Result<Tensor<2>>;
    /// A vector for `key`.
    fn vector(&mut self, key: &str, len: usize, device: &Device) -> Result<Tensor<1>>;
    /// Whether `key` exists.
    fn has(&self, key: &str) -> bool;
}

/// Random weights: N(0, 0.02) matrices, unit norms, zero biases.
pub(crate) struct RandomWeights;

impl WeightSource for RandomWeights {
    fn matrix(&mut self, _key: &str, shape: [usize; 2], device: &Device) -> Result<Tensor<2>> {
        Ok(Tensor::random(
            shape,
            Distribution::Normal(0.0, 0.02),
            device,
        ))
    }

    fn vector(&mut self, key: &str, len: usize, device: &Device) -> Result<Tensor<1>> {
        Ok(if key.ends_with("norm.weight") {
            Tensor::ones([len], device)
        } else {
            Tensor::zeros([len], device)
        })
    }

    fn has(&self, key: &str) -> bool {
        !key.starts_with("lm_head")
    }
}

impl Llama {
    /// A model with random weights of `config`'s shape.
    ///
    /// # Panics
    ///
    /// When the model would not fit in this machine's memory; [`try_init`](Self::try_init)
    /// returns that as an error.
    pub fn init(config: &LlamaConfig, device: &Device) -> Self {
        match Self::try_init(config, device) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }

    /// A model with random weights of `config`'s shape, or [`PeftError::TooLarge`] when its
    /// weights would not fit in this machine's memory (checked before allocating).
    ///
    /// ```
    /// use burn_peft_models::{Llama, LlamaConfig};
    /// let device = burn::tensor::Device::default();
    /// let mut config = LlamaConfig::tiny(32);
    /// config.num_hidden_layers = 1_000_000_000_000;
    /// assert!(Llama::try_init(&config, &device).is_err());
    /// ```
    ///
    /// [`PeftError::TooLarge`]: burn_peft_core::PeftError::TooLarge
    pub fn try_init(config: &LlamaConfig, device: &Device) -> Result<Self> {
        Self::build(config, &mut RandomWeights, device)
    }

    pub(crate) fn build(
        config: &LlamaConfig,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let hd = config.head_dim();
        let q_out = config.num_attention_heads * hd;
        let kv_out = config.num_key_value_heads * hd;
        let f = config.intermediate_size;
        let mut linear = |key: &str, d_in: usize, d_out: usize, bias: bool| -> Result<PeftLinear> {
            // PyTorch stores [out, in]; burn's Linear wants [in, out].
            let weight = contiguous_transpose(src.matrix(
                &format!("{key}.weight"),
                [d_out, d_in],
                device,
            )?);
            let bias = if bias {
                Some(Param::from_tensor(src.vector(
                    &format!("{key}.bias"),
                    d_out,
                    device,
                )?))
            } else {
                None
            };
            Ok(AdaptedLinear::new(Linear {
                weight: Param::from_tensor(weight),
                bias,
            }))
        };
        // Checked before anything is allocated: a config can say 10⁹ layers.
        let params = config.parameter_count().unwrap_or(u64::MAX);
        MemoryBudget::new("model").reserve(
            "its f32 weights",
            &[usize::try_from(params).unwrap_or(usize::MAX)],
            4,
        )?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let ab = config.attention_bias;
            let mb = config.mlp_bias;
            let self_attn = Attention {
                q_proj: linear(&format!("{p}.self_attn.q_proj"), h, q_out, ab)?,
                k_proj: linear(&format!("{p}.self_attn.k_proj"), h, kv_out, ab)?,
                v_proj: linear(&format!("{p}.self_attn.v_proj"), h, kv_out, ab)?,
                o_proj: linear(
                    &format!("{p}.self_attn.o_proj"),
                    q_out,
                    h,
                    config.model_type.output_projection_bias(ab),
                )?,
                // Read with the other norms below.
                q_norm: None,
                k_norm: None,
                num_heads: config.num_attention_heads,
                num_kv_heads: config.num_key_value_heads,
                head_dim: hd,
            };
            let mlp = Mlp {
                gate_proj: linear(&format!("{p}.mlp.gate_proj"), h, f, mb)?,
                up_proj: linear(&format!("{p}.mlp.up_proj"), h, f, mb)?,
                down_proj: linear(&format!("{p}.mlp.down_proj"), f, h, mb)?,
            };
            layers.push((self_attn, mlp, p));
        }
        let mut norm_of = |key: &str, len: usize| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: Param::from_tensor(src.vector(key, len, device)?),
                eps: config.rms_norm_eps,
            })
        };
        let layers = layers
            .into_iter()
            .map(|(mut self_attn, mlp, p)| {
                if config.model_type.has_qk_norm() {
                    self_attn.q_norm = Some(norm_of(&format!("{p}.self_attn.q_norm.weight"), hd)?);
                    self_attn.k_norm = Some(norm_of(&format!("{p}.self_attn.k_norm.weight"), hd)?);
                }
                Ok(DecoderLayer {
                    self_attn,
                    mlp,
                    input_layernorm: norm_of(&format!("{p}.input_layernorm.weight"), h)?,
                    post_attention_layernorm: norm_of(
                        &format!("{p}.post_attention_layernorm.weight"),
                        h,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm_of("model.norm.weight", h)?;
        let embed = src.matrix("model.embed_tokens.weight", [config.vocab_size, h], device)?;
        let lm_head = if config.tie_word_embeddings && !src.has("lm_head.weight") {
            None
        } else {
            let w = src.matrix("lm_head.weight", [config.vocab_size, h], device)?;
            Some(Linear {
                weight: Param::from_tensor(layout_for_products(contiguous_transpose(w))),
                bias: None,
            })
        };
        Ok(Llama {
            embed_tokens: Embedding {
                weight: Param::from_tensor(embed),
            },
            layers,
            norm: final_norm,
            lm_head,
            prompt: PromptSlot::new(),
            config: config.clone(),
            precision: Precision::F32,
        })
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (position t predicts token t+1).
    ///
    /// `attention_mask` (`[batch, seq]`, 1 for real tokens, 0 for padding) hides padded keys.
    /// A prompt-tuning adapter's virtual positions are not part of the result.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.logits(self.hidden_states(input_ids, attention_mask))
    }

    /// Final hidden states `[batch, seq, hidden]` of the input positions (the prompt-tuning
    /// adapter's virtual positions removed): [`Llama::logits`] of them is [`Llama::forward`].
    /// Training code that needs the logits of a few positions only (answer tokens) saves the
    /// vocabulary projection of all the others.
    pub fn hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let (hidden, virtual_tokens) = self.decode(input_ids, attention_mask);
        let [b, s, h] = hidden.dims();
        hidden.slice([0..b, virtual_tokens..s, 0..h])
    }

    /// The training loss for token ids `[batch, seq]`: mean next-token cross-entropy over real
    /// (mask 1) targets, as HF computes it with `labels = input_ids`. With prompt tuning the
    /// first token is predicted from the last virtual token, as in PEFT.
    pub fn lm_loss(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let (hidden, p) = self.decode(input_ids.clone(), attention_mask.clone());
        self.lm_loss_from_hidden(hidden, p, input_ids, attention_mask)
    }

    /// [`Llama::lm_loss`] from the final hidden states over `p` virtual prompt tokens and the
    /// input (`Llama::forward`'s before the output layer): the head that
    /// [`Llama::layerwise_gradients`] takes for the same loss.
    pub fn lm_loss_from_hidden(
        &self,
        hidden: Tensor<3>,
        p: usize,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let [b, s, h] = hidden.dims();
        let t = s - p;
        // Rows that predict a token, the tokens, and their mask.
        let (rows, targets, mask) = if p == 0 {
            let n = t.saturating_sub(1);
            (
                hidden.slice([0..b, 0..n, 0..h]),
                input_ids.slice([0..b, 1..t]),
                attention_mask.map(|m| m.slice([0..b, 1..t])),
            )
        } else {
            (
                hidden.slice([0..b, p - 1..s - 1, 0..h]),
                input_ids,
                attention_mask,
            )
        };
        let [_, n, _] = rows.dims();
        linear_cross_entropy(
            rows.reshape([b * n, h]),
            targets.reshape([b * n]),
            mask.map(|m| m.float().reshape([b * n])),
            |x| {
                let [r, _] = x.dims();
                let logits = self.logits(x.unsqueeze());
                let [_, _, v] = logits.dims();
                logits.reshape([r, v])
            },
        )
    }

    /// Logits `[batch, new, vocab]` for `input_ids` that continue the positions in `cache`,
    /// which is extended with them. The first call (empty cache) includes the prompt-learning
    /// adapter; later calls feed one or more new tokens.
    pub fn forward_cached(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let (hidden, virtual_tokens) = self.decode_with(input_ids, None, cache);
        let [b, s, h] = hidden.dims();
        self.logits(hidden.slice([0..b, virtual_tokens..s, 0..h]))
    }

    /// Logits `[batch, vocab]` of the last position only, for `input_ids` that continue the
    /// positions in `cache` (extended with them, as [`forward_cached`](Self::forward_cached)
    /// does): what choosing the next token needs. A prompt's other positions skip the output
    /// layer, the largest product of a short prompt.
    ///
    /// ```
    /// use burn::tensor::{Device, Int, Tensor};
    /// use burn_peft_models::{KvCache, Llama, LlamaConfig};
    ///
    /// let device = Device::flex();
    /// let model = Llama::init(&LlamaConfig::tiny(32), &device);
    /// let ids = Tensor::<2, Int>::from_ints([[3, 7, 1]], &device);
    /// let last = model.next_token_logits(ids.clone(), &mut KvCache::new());
    /// let all = model.forward_cached(ids, &mut KvCache::new());
    /// let want = all.slice([0..1, 2..3, 0..32]).reshape([1, 32]);
    /// last.into_data().assert_approx_eq::<f32>(&want.into_data(), Default::default());
    /// ```
    pub fn next_token_logits(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let (hidden, _) = self.decode_with(input_ids, None, cache);
        let [b, s, h] = hidden.dims();
        let logits = self.logits(hidden.slice([0..b, s - 1..s, 0..h]));
        let [_, _, v] = logits.dims();
        logits.reshape([b, v])
    }

    /// Final hidden states over the virtual prompt tokens (if any) and the input, and the
    /// number of virtual prompt tokens in front.
    fn decode(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, usize) {
        self.decode_with(input_ids, attention_mask, &mut KvCache::new())
    }

    fn decode_with(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        cache: &mut KvCache,
    ) -> (Tensor<3>, usize) {
        let device = input_ids.device();
        let [b, _] = input_ids.dims();
        let first = !cache.primed;
        cache.primed = true;
        let (mut x, mask, prompt_len) = self.embed(input_ids, attention_mask, first);
        if first && let Some(table) = prefix_table(self) {
            cache.layers = (0..self.layers.len())
                .map(|i| self.prefix_keys_values(table.clone(), i, b))
                .collect();
        }
        let context = self.layer_context(cache.len(), x.dims()[1], mask, &device);
        let mut updated = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, kv) = layer.forward(x, &context, cache.layers.get(i).cloned());
            updated.push(kv);
            x = y;
        }
        cache.layers = updated;
        (self.norm.forward(x), prompt_len)
    }

    /// The token embeddings in the model's activation type, with a prompt-tuning adapter's
    /// virtual tokens in front when `with_prompt` is set; the attention mask widened to match,
    /// and the number of virtual tokens.
    pub(super) fn embed(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        with_prompt: bool,
    ) -> (Tensor<3>, Option<Tensor<2, Int>>, usize) {
        let device = input_ids.device();
        let [b, _] = input_ids.dims();
        let dtype = self.precision.float_dtype();
        let x = self.embed_tokens.forward(input_ids).cast(dtype);
        match self.prompt.prompt() {
            Some(p) if with_prompt => {
                let e = p.embedding.val().cast(dtype);
                let [n, h] = e.dims();
                let x = Tensor::cat(vec![e.unsqueeze::<3>().expand([b, n, h]), x], 1);
                let mask =
                    attention_mask.map(|m| Tensor::cat(vec![Tensor::ones([b, n], &device), m], 1));
                (x, mask, n)
            }
            _ => (x, attention_mask, 0),
        }
    }

    /// Layer `layer`'s keys and values (`[batch, kv_heads, prefix, head_dim]`) in a prefix
    /// `table`, in the activation type.
    pub(super) fn prefix_keys_values(
        &self,
        table: Tensor<2>,
        layer: usize,
        batch: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let dtype = self.precision.float_dtype();
        let (kvh, d) = (self.config.num_key_value_heads, self.config.head_dim());
        let (k, v) = PrefixTuning::keys_values_of(table, layer, kvh, d);
        let [_, n, _] = k.dims();
        let expand = |t: Tensor<3>| t.cast(dtype).unsqueeze::<4>().expand([batch, kvh, n, d]);
        (expand(k), expand(v))
    }

    /// What every decoder layer of a forward pass over `seq` positions after `past` cached
    /// ones shares.
    pub(super) fn layer_context(
        &self,
        past: usize,
        seq: usize,
        mask: Option<Tensor<2, Int>>,
        device: &Device,
    ) -> LayerContext {
        let dtype = self.precision.float_dtype();
        let (cos, sin) = rope_tables(&self.config, past, seq, device);
        let half = self.config.head_dim() / 2;
        let sin = Tensor::cat(
            vec![
                sin.clone().slice([0..seq, 0..half]).neg(),
                sin.slice([0..seq, half..2 * half]),
            ],
            1,
        );
        let groups = self.config.num_attention_heads / self.config.num_key_value_heads;
        let window = self.config.sliding_window;
        let mask = attention_bias_mask(seq, past, window, mask, device).map(|m| {
            if groups == 1 {
                return m;
            }
            let [mb, _, _, keys] = m.dims();
            m.unsqueeze_dim::<5>(2)
                .expand([mb, 1, groups, seq, keys])
                .reshape([mb, 1, groups * seq, keys])
        });
        LayerContext {
            cos: cos.cast(dtype).unsqueeze(),
            sin: sin.cast(dtype).unsqueeze(),
            mask,
        }
    }

    /// Output logits for final hidden states, in f32 whatever the model computes in (the loss
    /// and sampling need the range).
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let dtype = hidden.dtype();
        let logits = match &self.lm_head {
            Some(head) => {
                // Rows folded, as `AdaptedLinear` does: one product, and a trainable head's
                // weight gradient without a per-sequence copy to sum.
                let [b, t, h] = hidden.dims();
                let logits = burn::tensor::module::linear(
                    hidden.reshape([b * t, h]),
                    head.weight.val().cast(dtype),
                    head.bias.as_ref().map(|b| b.val().cast(dtype)),
                );
                let [_, v] = logits.dims();
                logits.reshape([b, t, v])
            }
            None => {
                // Tied: logits = h · Eᵀ. For a few rows (decoding) it is computed as (E · hᵀ)ᵀ,
                // so that the large [vocab, hidden] table is not transposed (a full copy on
                // some backends, bf16 on flex among them) for every token; for many rows
                // (training, prompts) directly, so that the output is not the one copied.
                let [b, t, h] = hidden.dims();
                let v = self.config.vocab_size;
                let table = self.embed_tokens.weight.val().cast(dtype);
                let flat = hidden.reshape([b * t, h]);
                let logits = if b * t <= FEW_ROWS {
                    table.matmul(flat.transpose()).transpose()
                } else {
                    flat.matmul(table.transpose())
                };
                logits.reshape([b, t, v])
            }
        };
        logits.cast(FloatDType::F32)
    }

    /// Sets what the model computes in, and stores its frozen weights in that type: every
    /// parameter that gets no gradient, adapters excepted. Trainable weights (full
    /// fine-tuning) keep their f32 master copy and are cast where they are used; adapters stay
    /// f32. Call it after choosing what trains (adding adapters freezes the base).
    ///
    /// ```
    /// use burn::module::Module;
    /// use burn::tensor::{DType, Device, Int, Tensor};
    /// use burn_peft_core::Precision;
    /// use burn_peft_models::{Llama, LlamaConfig};
    ///
    /// let device = Device::flex();
    /// let mut model = Llama::init(&LlamaConfig::tiny(32), &device).no_grad();
    /// model.set_precision(Precision::Bf16);
    /// assert_eq!(model.embed_tokens.weight.val().dtype(), DType::BF16);
    /// let ids = Tensor::<2, Int>::from_data([[1, 2, 3]], &device);
    /// // The logits are f32 for the loss.
    /// assert_eq!(model.forward(ids, None).dtype(), DType::F32);
    /// ```
    pub fn set_precision(&mut self, precision: Precision) {
        let dtype = precision.float_dtype();
        self.precision = precision;
        self.embed_tokens.weight = cast_if_frozen(self.embed_tokens.weight.clone(), dtype);
        let mut norms: Vec<&mut RmsNorm> = vec![&mut self.norm];
        for layer in &mut self.layers {
            norms.push(&mut layer.input_layernorm);
            norms.push(&mut layer.post_attention_layernorm);
        }
        for norm in norms {
            norm.weight = cast_if_frozen(norm.weight.clone(), dtype);
        }
        if let Some(head) = &mut self.lm_head {
            head.weight = cast_if_frozen(head.weight.clone(), dtype);
            head.bias = head.bias.take().map(|b| cast_if_frozen(b, dtype));
        }
        self.visit_adapted_linears(&mut |_, layer| layer.cast_frozen_base(dtype));
    }

    /// Mean next-token cross-entropy: position t predicts token t+1; positions whose target is
    /// masked out (mask 0) do not count. Returns a one-element tensor.
    pub fn causal_lm_loss(
        logits: Tensor<3>,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<1> {
        let [batch, seq, vocab] = logits.dims();
        let n = seq.saturating_sub(1);
        let pred = logits.slice([0..batch, 0..n, 0..vocab]);
        let target = input_ids.slice([0..batch, 1..seq]);
        let logp = log_softmax(pred, 2);
        let picked = logp
            .gather(2, target.unsqueeze_dim::<3>(2))
            .reshape([batch, n]);
        match attention_mask {
            None => picked.mean().neg(),
            Some(mask) => {
                let weight = mask.slice([0..batch, 1..seq]).float();
                let count = weight.clone().sum();
                (picked * weight).sum().neg() / count
            }
        }
    }

    /// Checks that every id is below the vocabulary size.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Mean next-token loss of one sequence of ids (at least two).
    pub fn sequence_loss(&self, ids: &[u32], device: &Device) -> Result<f32> {
        if ids.len() < 2 {
            return Err(ModelError::InvalidInput(format!(
                "need at least 2 tokens to score, got {}",
                ids.len()
            )));
        }
        self.check_ids(ids)?;
        let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), device);
        Ok(self.lm_loss(input, None).into_scalar::<f32>())
    }
}

/// The rotary tables and the attention mask that the decoder layers of one forward pass share.
pub struct LayerContext {
    /// `[1, 1, seq, head_dim]`.
    cos: Tensor<4>,
    /// `[1, 1, seq, head_dim]`, its first half negated (see [`apply_rope`]).
    sin: Tensor<4>,
    /// `[batch or 1, 1, groups·seq, keys]`: the queries of one key/value head in a row (see
    /// [`Attention`]'s forward pass).
    mask: Option<Tensor<4, Bool>>,
}

impl DecoderLayer {
    /// The layer's output for `x`, and its keys and values (`past` ones in front).
    ///
    /// The rows of the batch are folded once, here: the norms and the linear layers work on
    /// `[batch·seq, hidden]` and only attention splits them into sequences. Each linear layer
    /// then records no reshapes of its own, which matters where every recorded operation
    /// costs host time (the GPU backends).
    pub(super) fn forward(
        &self,
        x: Tensor<3>,
        context: &LayerContext,
        past: Option<(Tensor<4>, Tensor<4>)>,
    ) -> (Tensor<3>, (Tensor<4>, Tensor<4>)) {
        let [b, t, hidden] = x.dims();
        let x = x.reshape([b * t, hidden]);
        let h = self.input_layernorm.forward(x.clone());
        let (h, kv) = self.self_attn.forward(h, b, context, past);
        let x = x + h;
        let h = self.post_attention_layernorm.forward(x.clone());
        ((x + self.mlp.forward(h)).reshape([b, t, hidden]), kv)
    }
}

impl Attention {
    /// Attention over `x`, `[batch·seq, hidden]` (`batch` sequences), and the layer's keys and
    /// values.
    ///
    /// Grouped-query heads are not repeated: the query heads that share a key/value head are
    /// stacked along the query positions (`[batch, kv_heads, groups·seq, head_dim]`), so one
    /// product per key/value head serves its whole group, with the mask stacked to match.
    fn forward(
        &self,
        x: Tensor<2>,
        b: usize,
        context: &LayerContext,
        past: Option<(Tensor<4>, Tensor<4>)>,
    ) -> (Tensor<2>, (Tensor<4>, Tensor<4>)) {
        let t = x.dims()[0] / b;
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |y: Tensor<2>, heads: usize| y.reshape([b, t, heads, d]).swap_dims(1, 2);
        let (cos, sin) = (&context.cos, &context.sin);
        let norm = |y: Tensor<4>, n: &Option<RmsNorm>| match n {
            Some(n) => n.forward(y),
            None => y,
        };
        let q = norm(split(self.q_proj.forward(x.clone()), h), &self.q_norm);
        let k = norm(split(self.k_proj.forward(x.clone()), kvh), &self.k_norm);
        let q = apply_rope(q, cos, sin);
        let k = apply_rope(k, cos, sin);
        let v = split(self.v_proj.forward(x), kvh);
        // Past keys are cached already rotated; a prefix carries no rotation of its own.
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        let kv = (k.clone(), v.clone());
        // Without groups (as many key/value heads as query heads) there is nothing to stack,
        // and reshaping `q`, a strided view, would copy it.
        let grouped = kvh != h;
        let q = if grouped {
            q.reshape([b, kvh, (h / kvh) * t, d])
        } else {
            q
        };
        let out = scaled_dot_attention(q, k, v, context.mask.clone());
        let out = if grouped {
            out.reshape([b, h, t, d])
        } else {
            out
        };
        let out = out.swap_dims(1, 2).reshape([b * t, h * d]);
        (self.o_proj.forward(out), kv)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let gate = self.gate_proj.forward(x.clone());
        self.down_proj
            .forward(swiglu(gate, self.up_proj.forward(x)))
    }
}

/// The transpose of a PyTorch `[out, in]` weight as a dense `[in, out]` tensor. A plain
/// `transpose()` is a strided view, which some backends copy on every matmul; this pays the copy
/// once, at load time.
pub(crate) fn contiguous_transpose(w: Tensor<2>) -> Tensor<2> {
    let device = w.device();
    Tensor::from_data(w.transpose().into_data(), &device)
}

/// cos and sin tables `[seq, head_dim]` for positions `start..start + seq` (HF layout: the two
/// halves of the head repeat the same frequencies).
pub fn rope_tables(
    config: &LlamaConfig,
    start: usize,
    seq: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let d = config.head_dim();
    let inv_freq = config.rope_scaling.inv_freq_for(
        config.rope_theta,
        d,
        start + seq,
        config.max_position_embeddings,
    );
    let mut angles = Vec::with_capacity(seq * d);
    for pos in start..start + seq {
        let row: Vec<f32> = inv_freq
            .iter()
            .map(|inv| (pos as f64 * inv) as f32)
            .collect();
        angles.extend_from_slice(&row);
        angles.extend_from_slice(&row);
    }
    let angles = Tensor::<2>::from_data(TensorData::new(angles, [seq, d]), device);
    (angles.clone().cos(), angles.sin())
}

/// Rotary embedding of `x` (`[batch, heads, seq, head_dim]`) with `cos` and `sin` from
/// [`LayerContext`]: `x·cos + rotate_half(x)·sin`, where `rotate_half(x) = [−x₂, x₁]`. The sign
/// sits in the table (`sin`'s first half is negated), so the rotation is a swap of the halves.
fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    x * cos.clone() + Tensor::cat(vec![x2, x1], 3) * sin.clone()
}

/// True where attention is forbidden: future keys, and padded keys when a mask is given.
/// `past` keys in front (a prefix) are visible to every query.
fn attention_bias_mask(
    seq: usize,
    past: usize,
    window: Option<usize>,
    attention_mask: Option<Tensor<2, Int>>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let mut causal = Tensor::<2, Bool>::tril_mask([seq, seq], 0, device);
    if past > 0 {
        let open = Tensor::<2, Int>::zeros([seq, past], device).equal_elem(1);
        causal = Tensor::cat(vec![open, causal], 1);
    }
    // A sliding window also hides the keys `window` or more positions back (query at
    // `past + i`, key at `j`, the prefix or cache counted as positions, as transformers does).
    if let Some(w) = window.filter(|&w| past + seq > w) {
        let queries = Tensor::<1, Int>::arange(past as i64..(past + seq) as i64, device);
        let keys = Tensor::<1, Int>::arange(0..(past + seq) as i64, device);
        let distance = queries.reshape([seq, 1]) - keys.reshape([1, past + seq]);
        causal = causal.bool_or(distance.greater_equal_elem(w as i64));
    }
    let causal = causal.unsqueeze::<4>();
    let keys = past + seq;
    Some(match attention_mask {
        None => causal,
        Some(mask) => {
            let [b, t] = mask.dims();
            let mut padded = mask.equal_elem(0);
            if past > 0 {
                let visible = Tensor::<2, Int>::zeros([b, past], device).equal_elem(1);
                padded = Tensor::cat(vec![visible, padded], 1);
            }
            let padded = padded.reshape([b, 1, 1, past + t]);
            causal
                .expand([b, 1, seq, keys])
                .bool_or(padded.expand([b, 1, seq, keys]))
        }
    })
}
