//! A BERT encoder (all-MiniLM-L6-v2 and the like) whose linear layers host adapters under PEFT's
//! names (`encoder.layer.N.attention.self.query`, ...), with mean pooling and L2 normalization
//! for sentence embeddings.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{Adapter, AddAdapter};
use burn_peft_core::format::{NamedTensor, check_shape, read_safetensors};
use burn_peft_core::{AdaptedLinear, AdapterHost, PeftError, TargetModules};
use serde::Deserialize;

use crate::attention::{padding_mask, scaled_dot_attention};
use crate::error::{ModelError, Result};
use crate::llama::{PeftLinear, contiguous_transpose, weight_files};
use crate::tokenizer::TextTokenizer;

/// The shape of a BERT encoder, from HF's `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Positions the model knows.
    pub max_position_embeddings: usize,
    /// Segment types.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Activation; only `gelu` is supported.
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}

/// One encoder layer: self-attention and feed-forward, each followed by add & LayerNorm.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention.self.query`.
    pub query: PeftLinear,
    /// `attention.self.key`.
    pub key: PeftLinear,
    /// `attention.self.value`.
    pub value: PeftLinear,
    /// `attention.output.dense`.
    pub attention_output: PeftLinear,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm,
    /// `intermediate.dense`.
    pub intermediate: PeftLinear,
    /// `output.dense`.
    pub output: PeftLinear,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm,
    /// Attention heads.
    pub num_heads: usize,
}

/// A BERT encoder that hosts adapters.
///
/// ```no_run
/// use burn::tensor::Device;
/// use burn_peft_models::{Bert, TextTokenizer};
/// let dir = std::path::Path::new("all-MiniLM-L6-v2");
/// let (model, tokenizer) = Bert::from_pretrained(dir, &Device::flex()).unwrap();
/// let v = model.embed(&tokenizer, "The cat sits on the mat.", &Device::flex()).unwrap();
/// assert_eq!(v.len(), 384);
/// ```
#[derive(Module, Debug)]
pub struct Bert {
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Absolute position embeddings.
    pub position_embeddings: Embedding,
    /// Segment embeddings.
    pub token_type_embeddings: Embedding,
    /// LayerNorm after the embeddings.
    pub embeddings_norm: LayerNorm,
    /// Encoder layers.
    pub layers: Vec<BertLayer>,
    /// The shape.
    #[module(skip)]
    pub config: BertConfig,
}

impl AdapterHost for Bert {
    type Adapter = Adapter;

    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("encoder.layer.{i}");
            f(&format!("{p}.attention.self.query"), &mut l.query);
            f(&format!("{p}.attention.self.key"), &mut l.key);
            f(&format!("{p}.attention.self.value"), &mut l.value);
            f(
                &format!("{p}.attention.output.dense"),
                &mut l.attention_output,
            );
            f(&format!("{p}.intermediate.dense"), &mut l.intermediate);
            f(&format!("{p}.output.dense"), &mut l.output);
        }
    }

    fn default_target_modules(&self, peft_type: &str) -> Option<TargetModules> {
        bert_targets(peft_type)
    }

    fn default_feedforward_modules(&self) -> Option<TargetModules> {
        Some(TargetModules::names(["output.dense"]))
    }
}

impl AddAdapter for Bert {}

/// PEFT's BERT entries: LoRA on `query`/`value`, IA3 on `key`/`value`/`output.dense`.
fn bert_targets(peft_type: &str) -> Option<TargetModules> {
    match peft_type {
        "LORA" => Some(TargetModules::names(["query", "value"])),
        "IA3" => Some(TargetModules::names(["key", "value", "output.dense"])),
        _ => None,
    }
}

struct Weights {
    tensors: std::collections::BTreeMap<String, NamedTensor>,
    dir: std::path::PathBuf,
    device: Device,
}

impl Weights {
    fn get(&mut self, key: &str, shape: &[usize]) -> Result<NamedTensor> {
        // Checkpoints saved from BertForX carry a `bert.` prefix.
        let found = self
            .tensors
            .remove(key)
            .or_else(|| self.tensors.remove(&format!("bert.{key}")))
            .ok_or_else(|| PeftError::MissingTensor {
                file: self.dir.clone(),
                key: key.to_string(),
            })?;
        check_shape(key, &found, shape)?;
        Ok(found)
    }

    fn tensor<const D: usize>(&mut self, key: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        Ok(self.get(key, &shape)?.to_tensor(&self.device, key)?)
    }

    fn linear(&mut self, key: &str, d_in: usize, d_out: usize) -> Result<PeftLinear> {
        let w: Tensor<2> = self.tensor(&format!("{key}.weight"), [d_out, d_in])?;
        let b: Tensor<1> = self.tensor(&format!("{key}.bias"), [d_out])?;
        Ok(AdaptedLinear::new(Linear {
            weight: Param::from_tensor(contiguous_transpose(w)),
            bias: Some(Param::from_tensor(b)),
        }))
    }

    fn norm(&mut self, key: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let mut n = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        n.gamma = Param::from_tensor(self.tensor(&format!("{key}.weight"), [d])?);
        n.beta = Some(Param::from_tensor(
            self.tensor(&format!("{key}.bias"), [d])?,
        ));
        Ok(n)
    }

    fn embedding(&mut self, key: &str, n: usize, d: usize) -> Result<Embedding> {
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(&format!("{key}.weight"), [n, d])?),
        })
    }
}

impl Bert {
    /// Loads an HF BERT directory (config.json, model.safetensors, tokenizer.json). Padding in
    /// the tokenizer is turned off; its truncation is kept.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<(Self, TextTokenizer)> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| PeftError::io(&config_path, e))?;
        let bad = |reason: String| ModelError::UnsupportedModel {
            path: config_path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if value.get("model_type").and_then(|v| v.as_str()) != Some("bert") {
            return Err(bad("model_type is not 'bert'".into()));
        }
        let c: BertConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if c.hidden_act != "gelu"
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        {
            return Err(bad(
                "needs gelu and hidden_size divisible by the heads".into()
            ));
        }
        let mut tensors = std::collections::BTreeMap::new();
        for f in weight_files(dir)? {
            tensors.append(&mut read_safetensors(&f)?);
        }
        let mut w = Weights {
            tensors,
            dir: dir.to_path_buf(),
            device: device.clone(),
        };
        let (h, f, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let word_embeddings = w.embedding("embeddings.word_embeddings", c.vocab_size, h)?;
        let position_embeddings = w.embedding(
            "embeddings.position_embeddings",
            c.max_position_embeddings,
            h,
        )?;
        let token_type_embeddings =
            w.embedding("embeddings.token_type_embeddings", c.type_vocab_size, h)?;
        let embeddings_norm = w.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                query: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                attention_output: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"), h, f)?,
                output: w.linear(&format!("{p}.output.dense"), f, h)?,
                output_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
                num_heads: c.num_attention_heads,
            });
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?.without_padding();
        Ok((
            Bert {
                word_embeddings,
                position_embeddings,
                token_type_embeddings,
                embeddings_norm,
                layers,
                config: c,
            },
            tokenizer,
        ))
    }

    /// Last hidden states `[batch, seq, hidden]`; `attention_mask` is 1 for real tokens.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        let device = input_ids.device();
        let [b, t] = input_ids.dims();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .unsqueeze::<2>()
            .expand([b, t]);
        let x = self.word_embeddings.forward(input_ids.clone())
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(input_ids.zeros_like());
        let mut x = self.embeddings_norm.forward(x);
        let mask = padding_mask(attention_mask, t);
        for l in &self.layers {
            let (h, d) = (l.num_heads, self.config.hidden_size / l.num_heads);
            let split = |y: Tensor<3>| y.reshape([b, t, h, d]).swap_dims(1, 2);
            let q = split(l.query.forward(x.clone()));
            let k = split(l.key.forward(x.clone()));
            let v = split(l.value.forward(x.clone()));
            let a = scaled_dot_attention(q, k, v, Some(mask.clone()))
                .swap_dims(1, 2)
                .reshape([b, t, h * d]);
            x = l.attention_norm.forward(x + l.attention_output.forward(a));
            let f = l.output.forward(gelu(l.intermediate.forward(x.clone())));
            x = l.output_norm.forward(x + f);
        }
        x
    }

    /// Sentence embeddings `[batch, hidden]`: mean over real tokens, then L2-normalized.
    pub fn sentence_embeddings(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> Tensor<2> {
        let hidden = self.forward(input_ids, attention_mask.clone());
        let m = attention_mask.float().unsqueeze_dim::<3>(2);
        let summed = (hidden * m.clone()).sum_dim(1).squeeze_dim::<2>(1);
        let count = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
        let mean = summed / count;
        let norm = mean
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        mean / norm
    }

    /// The normalized embedding of one text.
    pub fn embed(
        &self,
        tokenizer: &TextTokenizer,
        text: &str,
        device: &Device,
    ) -> Result<Vec<f32>> {
        let ids = tokenizer.encode(text)?;
        if ids.len() > self.config.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens exceed the model's {} positions",
                ids.len(),
                self.config.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.config.vocab_size) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        let n = ids.len();
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            device,
        );
        let mask = Tensor::<2, Int>::ones([1, n], device);
        self.sentence_embeddings(input, mask)
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| ModelError::InvalidInput(format!("{e:?}")))
    }
}

/// A BERT encoder with a sequence-classification head over the mean-pooled hidden states. The
/// head is trained in full next to the adapters (PEFT's `modules_to_save`, module path
/// `classifier`) and saved in the adapter file. Module paths follow HF's
/// `BertForSequenceClassification` (`bert.encoder.layer.N...`, `classifier`), so PEFT files line
/// up key for key; the pooling differs (mean pooling here, the `[CLS]` pooler there).
#[derive(Module, Debug)]
pub struct BertClassifier {
    /// The encoder.
    pub bert: Bert,
    /// The head: `[hidden] -> [num_labels]`.
    pub classifier: Linear,
}

impl AdapterHost for BertClassifier {
    type Adapter = Adapter;

    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        // Under `bert.`, as in HF's BertForSequenceClassification, so adapter files line up.
        self.bert
            .visit_adapted_linears(&mut |path, layer| f(&format!("bert.{path}"), layer));
    }

    fn visit_modules_to_save(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        f("classifier", &mut self.classifier);
    }

    fn default_target_modules(&self, peft_type: &str) -> Option<TargetModules> {
        bert_targets(peft_type)
    }

    fn default_feedforward_modules(&self) -> Option<TargetModules> {
        self.bert.default_feedforward_modules()
    }
}

impl AddAdapter for BertClassifier {}

impl BertClassifier {
    /// A new, randomly initialized head with `num_labels` outputs on `bert`.
    pub fn new(bert: Bert, num_labels: usize, device: &Device) -> Self {
        let classifier =
            burn::nn::LinearConfig::new(bert.config.hidden_size, num_labels).init(device);
        Self { bert, classifier }
    }

    /// Logits `[batch, num_labels]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
        let hidden = self.bert.forward(input_ids, attention_mask.clone());
        let m = attention_mask.float().unsqueeze_dim::<3>(2);
        let pooled = (hidden * m.clone()).sum_dim(1).squeeze_dim::<2>(1)
            / m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
        self.classifier.forward(pooled)
    }

    /// Mean cross-entropy of `labels` `[batch]`.
    pub fn loss(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        labels: Tensor<1, Int>,
    ) -> Tensor<1> {
        let logits = self.forward(input_ids, attention_mask);
        let [b, _] = logits.dims();
        let logp = burn::tensor::activation::log_softmax(logits, 1);
        logp.gather(1, labels.reshape([b, 1])).mean().neg()
    }
}
