//! Cached decoding gives the same logits as a full forward, with and without prompt learning.

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{
    AddAdapter, LoraConfig, LoraInit, PrefixTuningConfig, PromptTuningConfig,
};
use burn_peft_models::{GenerationConfig, KvCache, Llama, LlamaConfig};

fn ids(v: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, v.len()]), device)
}

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn models(device: &Device) -> Vec<(&'static str, Llama)> {
    device.seed(8);
    let base = Llama::init(&LlamaConfig::tiny(50), device);
    let mut lora = base.clone();
    lora.add_lora("l", &LoraConfig::new(2).with_init(LoraInit::Random))
        .unwrap();
    let mut prefix = base.clone();
    prefix
        .add_prefix_tuning("p", &PrefixTuningConfig::new(3))
        .unwrap();
    let mut prompt = base.clone();
    prompt
        .add_prompt_tuning("q", &PromptTuningConfig::new(2))
        .unwrap();
    vec![
        ("base", base),
        ("lora", lora),
        ("prefix", prefix),
        ("prompt", prompt),
    ]
}

#[test]
fn cached_steps_equal_the_full_forward() {
    let device = Device::flex();
    let seq = [5u32, 9, 17, 3, 44, 21, 8];
    for (name, model) in models(&device) {
        let full = model.forward(ids(&seq, &device), None);
        let mut cache = KvCache::new();
        let mut parts = vec![model.forward_cached(ids(&seq[..4], &device), &mut cache)];
        for &t in &seq[4..] {
            parts.push(model.forward_cached(ids(&[t], &device), &mut cache));
        }
        let stepped = Tensor::cat(parts, 1);
        assert!(max_diff(full, stepped) < 1e-4, "{name}");
    }
}

#[test]
fn greedy_generation_matches_recomputing_everything() {
    let device = Device::flex();
    for (name, model) in models(&device) {
        let prompt = [1u32, 2, 3];
        let config = GenerationConfig {
            max_new_tokens: 6,
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let fast = model
            .generate(&prompt, &config, &device, |t| streamed.push(t))
            .unwrap();
        assert_eq!(fast, streamed);
        let mut seq = prompt.to_vec();
        for _ in 0..6 {
            let logits = model.forward(ids(&seq, &device), None);
            let [_, t, v] = logits.dims();
            let last: Vec<f32> = logits
                .slice([0..1, t - 1..t, 0..v])
                .into_data()
                .try_to_vec()
                .unwrap();
            let best = last
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0 as u32;
            seq.push(best);
        }
        assert_eq!(fast, seq[3..].to_vec(), "{name}");
        // A stop token ends generation before it is emitted.
        let stop = GenerationConfig {
            stop_tokens: vec![fast[2]],
            ..config.clone()
        };
        let cut = model.generate(&prompt, &stop, &device, |_| {}).unwrap();
        assert_eq!(
            cut,
            fast[..fast.iter().position(|&t| t == fast[2]).unwrap()].to_vec()
        );
    }
}

#[test]
fn bad_generation_input_is_an_error() {
    let device = Device::flex();
    let model = Llama::init(&LlamaConfig::tiny(10), &device);
    let c = GenerationConfig::default();
    assert!(model.generate(&[], &c, &device, |_| {}).is_err());
    assert!(model.generate(&[11], &c, &device, |_| {}).is_err());
    let bad = GenerationConfig { top_p: 0.0, ..c };
    assert!(model.generate(&[1], &bad, &device, |_| {}).is_err());
}

#[test]
fn a_negative_temperature_or_an_empty_nucleus_is_refused_not_run_greedy() {
    let device = Device::flex();
    let model = LlamaConfig::tiny(32).init(&device);
    for (temperature, top_p) in [(-1.0, 1.0), (f64::NAN, 1.0), (0.7, 0.0), (0.7, 1.5)] {
        let config = GenerationConfig {
            temperature,
            top_p,
            max_new_tokens: 2,
            ..Default::default()
        };
        let err = model
            .generate(&[1, 2], &config, &device, |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("temperature >= 0"), "{err}");
    }
    let greedy = GenerationConfig {
        max_new_tokens: 2,
        ..Default::default()
    };
    assert!(model.generate(&[1, 2], &greedy, &device, |_| {}).is_ok());
}
