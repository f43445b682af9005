//! Llama-shaped families other than Llama against transformers 5.24
//! (`scripts/make_family_fixtures.py`): Mistral with a sliding window shorter than the text,
//! Qwen2 with its q/k/v biases. The loss on 48 tokens within 1e-4 of transformers', and 16
//! greedy tokens equal (the cached decoder, past the window).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_peft_models::{GenerationConfig, Llama, LlamaConfig};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The 48 token ids of the fixture text that `expected.json` keeps.
fn reference_ids() -> Vec<u32> {
    json(&fixtures().join("expected.json"))["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn check(name: &str) -> Llama {
    let device = Device::flex();
    let expected = json(&fixtures().join("families/expected.json"));
    let ids = reference_ids();
    let tokens = expected["tokens"].as_u64().unwrap() as usize;
    let prompt = expected["prompt"].as_u64().unwrap() as usize;
    let reference = &expected["models"][name];
    let model = Llama::from_pretrained(&fixtures().join("families").join(name), &device).unwrap();
    let loss = model.sequence_loss(&ids[..tokens], &device).unwrap() as f64;
    let want = reference["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() < 1e-4,
        "{name}: loss {loss}, transformers {want}"
    );
    let config = GenerationConfig {
        max_new_tokens: expected["new_tokens"].as_u64().unwrap() as usize,
        ..GenerationConfig::default()
    };
    let greedy = model
        .generate(&ids[..prompt], &config, &device, |_| {})
        .unwrap();
    let want: Vec<u32> = reference["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(greedy, want, "{name}: greedy tokens");
    model
}

#[test]
fn mistral_applies_its_sliding_window_as_transformers_does() {
    let model = check("mistral-window");
    assert_eq!(model.config.sliding_window, Some(8));
    // The window matters here: without it the loss is transformers' windowless one.
    let mut open = model.clone();
    open.config.sliding_window = None;
    let device = Device::flex();
    let expected = json(&fixtures().join("families/expected.json"));
    let ids = reference_ids();
    let loss = open.sequence_loss(&ids, &device).unwrap() as f64;
    let want = expected["models"]["mistral-window"]["loss_without_window"]
        .as_f64()
        .unwrap();
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
    assert!(
        (want
            - expected["models"]["mistral-window"]["loss"]
                .as_f64()
                .unwrap())
        .abs()
            > 1e-2
    );
}

#[test]
fn qwen2_loads_its_query_key_value_biases_as_transformers_does() {
    let model = check("qwen2-bias");
    assert!(model.config.attention_bias);
}

#[test]
fn sliding_window_is_read_as_transformers_reads_it() {
    let text =
        std::fs::read_to_string(fixtures().join("families/mistral-window/config.json")).unwrap();
    let with = |from: &str, to: &str| LlamaConfig::from_json_str(&text.replace(from, to));
    // Mistral: absent is transformers' default of 4096; null is none.
    let absent = with("\"sliding_window\": 8,", "").unwrap();
    assert_eq!(absent.sliding_window, Some(4096));
    let null = with("\"sliding_window\": 8", "\"sliding_window\": null").unwrap();
    assert_eq!(null.sliding_window, None);
    assert!(with("\"sliding_window\": 8", "\"sliding_window\": 0").is_err());
    // Llama ignores the field, as transformers does; Qwen2 only windows with
    // use_sliding_window, which is refused by name (some layers only: not implemented).
    let llama = with("\"mistral\"", "\"llama\"").unwrap();
    assert_eq!(llama.sliding_window, None);
    let qwen = with("\"mistral\"", "\"qwen2\"").unwrap();
    assert_eq!(qwen.sliding_window, None);
    let e = with(
        "\"model_type\": \"mistral\"",
        "\"model_type\": \"qwen2\", \"use_sliding_window\": true",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("use_sliding_window"), "{e}");
}

/// RoPE scaling `llama3` and `linear`: transformers' loss and greedy tokens, and a loss that
/// moves when the scaling is taken away (it is not a no-op on these shapes).
#[test]
fn rope_scaling_llama3_and_linear_match_transformers() {
    let device = Device::flex();
    let ids = reference_ids();
    for name in ["llama3-rope", "llama-linear-rope"] {
        let model = check(name);
        assert_ne!(
            model.config.rope_scaling,
            burn_peft_models::RopeScaling::None
        );
        let scaled = model.sequence_loss(&ids, &device).unwrap();
        let mut plain = model.clone();
        plain.config.rope_scaling = burn_peft_models::RopeScaling::None;
        let unscaled = plain.sequence_loss(&ids, &device).unwrap();
        assert!(
            (scaled - unscaled).abs() > 1e-3,
            "{name}: {scaled} vs {unscaled}"
        );
    }
}

#[test]
fn rope_scalings_that_are_not_implemented_are_refused_by_name() {
    let text =
        std::fs::read_to_string(fixtures().join("families/llama3-rope/config.json")).unwrap();
    for (from, to, needle) in [
        ("\"llama3\"", "\"yarn\"", "rope type 'yarn'"),
        ("\"llama3\"", "\"longrope\"", "rope type 'longrope'"),
        (
            "\"high_freq_factor\": 4.0",
            "\"high_freq_factor\": 1.0",
            "high_freq_factor",
        ),
        ("\"factor\": 8.0,", "", "needs a positive 'factor'"),
        (
            "\"rope_type\": \"llama3\"",
            "\"rope_type\": \"llama3\", \"partial_rotary_factor\": 0.5",
            "partial_rotary_factor",
        ),
    ] {
        let e = LlamaConfig::from_json_str(&text.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{to}: {e}");
    }
    // The legacy spelling beside the new one: read too, and refused when they disagree.
    let legacy = text.replace(
        "\"tie_word_embeddings\"",
        "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, \"tie_word_embeddings\"",
    );
    let e = LlamaConfig::from_json_str(&legacy).unwrap_err().to_string();
    assert!(e.contains("different RoPE scalings"), "{e}");
}

#[test]
fn qwen3_normalizes_each_query_and_key_head_as_transformers_does() {
    let model = check("qwen3-qknorm");
    assert_eq!(model.config.head_dim(), 32);
    let attention = &model.layers[0].self_attn;
    assert!(attention.q_norm.is_some() && attention.k_norm.is_some());
    // Without the norms the numbers move: they are not a no-op here.
    let mut plain = model.clone();
    for layer in &mut plain.layers {
        layer.self_attn.q_norm = None;
        layer.self_attn.k_norm = None;
    }
    let ids = reference_ids();
    let device = Device::flex();
    let with = model.sequence_loss(&ids, &device).unwrap();
    let without = plain.sequence_loss(&ids, &device).unwrap();
    assert!((with - without).abs() > 1e-3, "{with} vs {without}");
}

/// RoPE scaling `dynamic` in a model of 16 positions: the 48-token text and the generation
/// past position 16 use frequencies grown for their length, as transformers computes them;
/// with plain RoPE the loss is transformers' plain one. Generation is not held to the 16
/// positions.
#[test]
fn rope_scaling_dynamic_matches_transformers_past_the_context() {
    let device = Device::flex();
    let model = check("llama-dynamic-rope");
    assert_eq!(model.config.max_position_embeddings, 16);
    assert_eq!(
        model.config.rope_scaling,
        burn_peft_models::RopeScaling::Dynamic { factor: 2.0 }
    );
    let mut plain = model.clone();
    plain.config.rope_scaling = burn_peft_models::RopeScaling::None;
    let ids = reference_ids();
    let expected = json(&fixtures().join("families/expected.json"));
    let want = expected["models"]["llama-dynamic-rope"]["loss_plain_rope"]
        .as_f64()
        .unwrap();
    let loss = plain.sequence_loss(&ids, &device).unwrap() as f64;
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
    let scaled = expected["models"]["llama-dynamic-rope"]["loss"]
        .as_f64()
        .unwrap();
    assert!((scaled - want).abs() > 1e-2, "{scaled} vs {want}");
    // A config whose head is too narrow for the formula is refused by name.
    let text = std::fs::read_to_string(fixtures().join("families/llama-dynamic-rope/config.json"))
        .unwrap();
    let narrow = text.replace("\"head_dim\": 16", "\"head_dim\": 2");
    let e = LlamaConfig::from_json_str(&narrow).unwrap_err().to_string();
    assert!(e.contains("dynamic"), "{e}");
}

/// A LoRA adapter that PEFT made on each family (r 4 on every linear layer): PEFT's loss
/// within 1e-4, merged into the weights and unmerged again.
#[test]
fn peft_made_lora_adapters_load_merge_and_unmerge_on_every_family() {
    use burn_peft_adapters::AddAdapter;
    use burn_peft_core::PeftModel;
    let device = Device::flex();
    let expected = json(&fixtures().join("families/expected.json"));
    let ids = reference_ids();
    let families = expected["models"].as_object().unwrap();
    assert_eq!(families.len(), 6);
    for (name, reference) in families {
        let dir = fixtures().join("families");
        let mut model = Llama::from_pretrained(&dir.join(name), &device).unwrap();
        model
            .load_adapter(&dir.join(format!("{name}-lora")), "peft")
            .unwrap();
        let want = reference["lora_loss"].as_f64().unwrap();
        let close = |model: &Llama, what: &str| {
            let loss = model.sequence_loss(&ids, &device).unwrap() as f64;
            assert!(
                (loss - want).abs() < 1e-4,
                "{name} {what}: {loss} vs PEFT {want}"
            );
        };
        close(&model, "unmerged");
        model.merge_adapter(None).unwrap();
        close(&model, "merged");
        model.unmerge_adapter().unwrap();
        close(&model, "merged and unmerged");
    }
}
