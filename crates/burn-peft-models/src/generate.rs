//! Text generation with a KV cache: greedy, or temperature and top-p sampling with a seed.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{ModelError, Result};
use crate::llama::{KvCache, Llama};

/// How to pick the next token.
///
/// ```
/// use burn_peft_models::GenerationConfig;
/// let greedy = GenerationConfig::default();
/// assert_eq!(greedy.temperature, 0.0);
/// let sampled = GenerationConfig { temperature: 0.7, top_p: 0.9, seed: 3, ..greedy };
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// 0 picks the most likely token; above 0 samples from softmax(logits / T).
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose mass reaches `top_p`.
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end generation (not emitted).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

/// A small, seedable generator (SplitMix64), so that sampling is reproducible everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks a token from `logits` as `config` says.
fn pick(logits: &[f32], config: &GenerationConfig, rng: &mut SplitMix) -> u32 {
    let argmax = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0;
    if config.temperature <= 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax] as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i, ((v as f64 - max) / config.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1;
        if mass >= config.top_p {
            break;
        }
    }
    let r = rng.next_f64() * mass;
    let mut acc = 0.0;
    for p in &probs[..kept] {
        acc += p.1;
        if r < acc {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}

impl Llama {
    /// Generates up to `config.max_new_tokens` tokens after `prompt`, calling `on_token` with
    /// each new token as soon as it is chosen (stop tokens end generation and are not passed).
    /// Generation also stops when the context
    /// ([`LlamaConfig::context_length`](crate::LlamaConfig::context_length)) is full; a prompt
    /// longer than the context is an error. Returns the generated ids.
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        device: &Device,
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt has no tokens".into()));
        }
        if !(config.top_p > 0.0
            && config.top_p <= 1.0
            && config.temperature.is_finite()
            && config.temperature >= 0.0)
        {
            return Err(ModelError::InvalidInput(format!(
                "top_p must be in (0, 1] and temperature >= 0 (0: greedy) (got {} and {})",
                config.top_p, config.temperature
            )));
        }
        self.check_ids(prompt)?;
        let limit = self.config.context_length();
        if prompt.len() > limit {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has {} tokens, more than the model's context of {limit} \
                 (max_position_embeddings)",
                prompt.len()
            )));
        }
        let mut rng = SplitMix(config.seed);
        let mut cache = KvCache::new();
        let mut out = Vec::new();
        let mut next: Vec<u32> = prompt.to_vec();
        for _ in 0..config.max_new_tokens {
            if cache.len() + next.len() > limit {
                break;
            }
            let n = next.len();
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(next.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
                device,
            );
            let last: Vec<f32> = self
                .next_token_logits(ids, &mut cache)
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .map_err(|e| ModelError::InvalidInput(format!("{e:?}")))?;
            let token = pick(&last, config, &mut rng);
            if config.stop_tokens.contains(&token) {
                break;
            }
            on_token(token);
            out.push(token);
            next = vec![token];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_sampling_is_seeded() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        let mut rng = SplitMix(1);
        assert_eq!(pick(&logits, &GenerationConfig::default(), &mut rng), 1);
        let hot = GenerationConfig {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        // top_p 0.5 keeps only the two leading tokens (1 and 3).
        for seed in 0..50 {
            let t = pick(&logits, &hot, &mut SplitMix(seed));
            assert!(t == 1 || t == 3, "{t}");
        }
        let warm = GenerationConfig {
            temperature: 2.0,
            ..hot
        };
        let draw = || -> Vec<u32> {
            (0..20)
                .map(|s| pick(&logits, &warm, &mut SplitMix(s)))
                .collect()
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a, b);
    }
}
