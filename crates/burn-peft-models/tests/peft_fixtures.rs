//! Checks against files and losses made by real transformers + PEFT
//! (`scripts/make_fixtures.py`, values in `tests/fixtures/expected.json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use burn_peft_adapters::{
    AddAdapter, Ia3Config, LoraConfig, PrefixTuningConfig, PromptHost, PromptTuningConfig,
    load_adapter, save_adapter,
};
use burn_peft_core::format::read_safetensors;
use burn_peft_core::{PeftError, PeftModel, TargetModules, TrainableParameters};
use burn_peft_models::{Llama, LlamaConfig, ModelError, TextTokenizer};
use serde_json::Value;

const TOL: f32 = 1e-4;

/// Attaches one adapter to a model.
type AddFn = Box<dyn Fn(&mut Llama)>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn model(device: &Device) -> Llama {
    Llama::from_pretrained(&fixtures().join("tiny-llama"), device).unwrap()
}

fn assert_close(got: f32, want: f64, what: &str) {
    assert!(
        (got as f64 - want).abs() < TOL as f64,
        "{what}: got {got}, PEFT gave {want}"
    );
}

#[test]
fn tokenizer_matches_the_python_tokenizers_library() {
    let e = expected();
    let tok = TextTokenizer::from_file(&fixtures().join("tiny-llama/tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("text.txt")).unwrap();
    let all = tok.encode(&text).unwrap();
    assert_eq!(all.len() as u64, e["text_num_tokens"].as_u64().unwrap());
    assert_eq!(all[..48], ids(&e)[..]);
}

#[test]
fn base_losses_match_transformers() {
    let e = expected();
    let device = Device::flex();
    let ids = ids(&e);
    let loss = model(&device).sequence_loss(&ids, &device).unwrap();
    assert_close(loss, e["base_loss"].as_f64().unwrap(), "untied base");
    let tied = Llama::from_pretrained(&fixtures().join("tiny-llama-tied"), &device).unwrap();
    assert!(tied.lm_head.is_none());
    let loss = tied.sequence_loss(&ids, &device).unwrap();
    assert_close(loss, e["base_loss_tied"].as_f64().unwrap(), "tied base");
}

const LINEAR_FIXTURES: [&str; 7] = [
    "ia3",
    "lora_qv",
    "lora_rs_all",
    "dora_attn",
    "lora_regex_layer1",
    "lora_layers1_list",
    "lora_excl",
];

#[test]
fn peft_adapters_give_peft_losses_merged_and_unmerged() {
    let e = expected();
    let device = Device::flex();
    let ids = ids(&e);
    let base = model(&device);
    let base_loss = base.sequence_loss(&ids, &device).unwrap();
    for name in LINEAR_FIXTURES {
        let want = &e["adapters"][name];
        let mut m = base.clone();
        load_adapter(&mut m, &fixtures().join("adapters").join(name), "default").unwrap();
        let loss = m.sequence_loss(&ids, &device).unwrap();
        assert_close(loss, want["loss"].as_f64().unwrap(), name);

        m.merge_adapter(None).unwrap();
        let merged = m.sequence_loss(&ids, &device).unwrap();
        assert_close(merged, want["merged_loss"].as_f64().unwrap(), name);
        m.unmerge_adapter().unwrap();
        let again = m.sequence_loss(&ids, &device).unwrap();
        assert_close(again, want["loss"].as_f64().unwrap(), name);

        m.disable_adapters().unwrap();
        let off = m.sequence_loss(&ids, &device).unwrap();
        assert!(
            (off - base_loss).abs() < 1e-6,
            "{name}: disabled {off} vs base {base_loss}"
        );

        let unloaded = {
            let mut m2 = m.clone();
            m2.enable_adapters();
            m2.merge_and_unload().unwrap()
        };
        assert!(unloaded.adapter_names().is_empty());
        let l = unloaded.sequence_loss(&ids, &device).unwrap();
        assert_close(l, want["merged_loss"].as_f64().unwrap(), name);
    }
}

const PROMPT_FIXTURES: [&str; 3] = ["prefix", "prefix_proj", "prompt"];

#[test]
fn prefix_and_prompt_tuning_give_peft_losses() {
    let e = expected();
    let device = Device::flex();
    let ids = ids(&e);
    let base = model(&device);
    for name in PROMPT_FIXTURES {
        let mut m = base.clone();
        m.load_adapter(&fixtures().join("adapters").join(name), "default")
            .unwrap();
        let loss = m.sequence_loss(&ids, &device).unwrap();
        assert_close(loss, e["adapters"][name]["loss"].as_f64().unwrap(), name);
        // Round trip through our own files.
        let dir = tempfile::tempdir().unwrap();
        m.save_adapter("default", dir.path()).unwrap();
        let ours = read_safetensors(&dir.path().join("adapter_model.safetensors")).unwrap();
        let theirs = read_safetensors(
            &fixtures()
                .join("adapters")
                .join(name)
                .join("adapter_model.safetensors"),
        )
        .unwrap();
        assert_eq!(ours, theirs, "{name}");
        let mut again = base.clone();
        again.load_adapter(dir.path(), "default").unwrap();
        assert_eq!(again.sequence_loss(&ids, &device).unwrap(), loss);
    }
}

#[test]
fn prompt_learning_trainable_parameters_match_peft() {
    let e = expected();
    let device = Device::flex().autodiff();
    let base = model(&device);
    let cases: [(&str, AddFn); 3] = [
        (
            "prefix",
            Box::new(|m| {
                m.add_prefix_tuning("p", &PrefixTuningConfig::new(5))
                    .unwrap()
            }),
        ),
        (
            "prefix_proj",
            Box::new(|m| {
                let c = PrefixTuningConfig {
                    prefix_projection: true,
                    encoder_hidden_size: Some(32),
                    ..PrefixTuningConfig::new(4)
                };
                m.add_prefix_tuning("p", &c).unwrap()
            }),
        ),
        (
            "prompt",
            Box::new(|m| {
                m.add_prompt_tuning("p", &PromptTuningConfig::new(6))
                    .unwrap()
            }),
        ),
    ];
    for (name, add) in cases {
        let mut m = base.clone();
        add(&mut m);
        let report = TrainableParameters::of(&m);
        let want = &e["adapters"][name];
        assert_eq!(
            report.trainable as u64,
            want["trainable_params"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            report.total as u64,
            want["all_params"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn trainable_parameters_match_peft_report() {
    let e = expected();
    let device = Device::flex().autodiff();
    let base = model(&device);
    let all = TrainableParameters::of(&base);
    assert_eq!(
        all.total as u64,
        e["models"]["tiny-llama"]["all_params"].as_u64().unwrap()
    );
    for name in LINEAR_FIXTURES {
        let want = &e["adapters"][name];
        let mut m = base.clone();
        load_adapter(&mut m, &fixtures().join("adapters").join(name), "default").unwrap();
        let report = TrainableParameters::of(&m);
        assert_eq!(
            report.trainable as u64,
            want["trainable_params"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            report.total as u64,
            want["all_params"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn several_active_adapters_add_up_like_peft() {
    let e = expected();
    let device = Device::flex();
    let ids = ids(&e);
    let mut m = model(&device);
    let dir = fixtures().join("adapters");
    load_adapter(&mut m, &dir.join("lora_qv"), "qv").unwrap();
    load_adapter(&mut m, &dir.join("lora_regex_layer1"), "mlp1").unwrap();
    // The first adapter loaded is active; later ones wait, as in PEFT.
    assert_eq!(m.active_adapters(), vec!["qv".to_string()]);
    m.set_adapter(&["qv", "mlp1"]).unwrap();
    let want = &e["multi_lora_qv+lora_regex_layer1"];
    assert_close(
        m.sequence_loss(&ids, &device).unwrap(),
        want["loss"].as_f64().unwrap(),
        "multi",
    );
    m.merge_adapter(None).unwrap();
    assert_close(
        m.sequence_loss(&ids, &device).unwrap(),
        want["merged_loss"].as_f64().unwrap(),
        "multi merged",
    );
    assert!(matches!(
        m.delete_adapter("qv"),
        Err(PeftError::AdapterMerged(_))
    ));
    m.unmerge_adapter().unwrap();
    m.delete_adapter("qv").unwrap();
    assert_eq!(m.adapter_names(), vec!["mlp1".to_string()]);
    assert_close(
        m.sequence_loss(&ids, &device).unwrap(),
        e["adapters"]["lora_regex_layer1"]["loss"].as_f64().unwrap(),
        "after delete",
    );
    assert!(matches!(
        m.set_adapter(&["qv"]),
        Err(PeftError::UnknownAdapter(_))
    ));
}

#[test]
fn saved_adapters_round_trip_byte_for_value() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for name in LINEAR_FIXTURES {
        let src = fixtures().join("adapters").join(name);
        let mut m = model(&device);
        load_adapter(&mut m, &src, "default").unwrap();
        let out = dir.path().join(name);
        save_adapter(&m, "default", &out).unwrap();
        let theirs = read_safetensors(&src.join("adapter_model.safetensors")).unwrap();
        let ours = read_safetensors(&out.join("adapter_model.safetensors")).unwrap();
        assert_eq!(ours, theirs, "{name}: tensors differ from PEFT's file");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let original: Value = serde_json::from_str(
            &std::fs::read_to_string(src.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        for key in [
            "peft_type",
            "r",
            "lora_alpha",
            "use_rslora",
            "use_dora",
            "target_modules",
        ] {
            assert_eq!(config[key], original[key], "{name}: {key}");
        }
        assert_eq!(config["inference_mode"], Value::Bool(true));
    }
}

#[test]
fn bad_adapters_are_typed_errors_and_leave_the_model_alone() {
    let device = Device::flex();
    let dir = fixtures().join("adapters");
    // An adapter made for other shapes.
    let mut other = LlamaConfig::tiny(384);
    other.hidden_size = 64;
    other.num_attention_heads = 4;
    other.num_key_value_heads = 4;
    let mut small = Llama::init(&other, &device);
    let err = load_adapter(&mut small, &dir.join("lora_qv"), "default").unwrap_err();
    assert!(matches!(err, PeftError::ShapeMismatch { .. }), "{err}");
    assert!(small.adapter_names().is_empty());
    // Targets the model does not have.
    let mut m = model(&device);
    let config = LoraConfig::new(4).with_target_modules(TargetModules::names(["c_attn"]));
    let err = m.add_lora("x", &config).unwrap_err();
    assert!(matches!(err, PeftError::NoTargetMatched { .. }), "{err}");
    // Not an adapter directory.
    let err = load_adapter(&mut m, &fixtures().join("tiny-llama"), "x").unwrap_err();
    assert!(matches!(err, PeftError::Io { .. }), "{err}");
    assert!(m.adapter_names().is_empty());
    // Prefix and prompt tuning load through the same call as every method (the Llama hosts
    // prompt learning), one at a time.
    load_adapter(&mut m, &dir.join("prefix"), "prefix").unwrap();
    assert_eq!(m.prompt_adapter_name().as_deref(), Some("prefix"));
    let err = load_adapter(&mut m, &dir.join("prompt"), "prompt").unwrap_err();
    assert!(matches!(err, PeftError::InvalidConfig(_)), "{err}");
    assert_eq!(m.prompt_adapter_name().as_deref(), Some("prefix"));
    // A config that is not a Llama.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type":"bert"}"#).unwrap();
    let err = Llama::from_pretrained(tmp.path(), &device).unwrap_err();
    assert!(matches!(err, ModelError::UnsupportedModel { .. }), "{err}");
}

/// Where python3 has torch, transformers and peft, adapters we write must load in PEFT and give
/// the loss we compute. `scripts/peft_loss.py` exits 3 when those packages are missing; set
/// `BURN_PEFT_REQUIRE_PYTHON=1` (CI does) to make that a failure instead of a skip.
#[test]
fn adapters_we_write_load_in_python_peft() {
    let e = expected();
    let device = Device::flex();
    let ids = ids(&e);
    let python = std::env::var("BURN_PEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = fixtures().join("../../scripts/peft_loss.py");
    let tmp = tempfile::tempdir().unwrap();
    let ids_file = tmp.path().join("ids.json");
    std::fs::write(&ids_file, serde_json::to_string(&ids).unwrap()).unwrap();
    let base = model(&device);
    let lora_all_rs = LoraConfig::new(4)
        .with_lora_alpha(16.0)
        .with_use_rslora(true)
        .with_init(burn_peft_adapters::LoraInit::Random)
        .with_target_modules(TargetModules::all_linear());
    let dora_qv = LoraConfig::new(2)
        .with_use_dora(true)
        .with_init(burn_peft_adapters::LoraInit::Random);
    let ia3 = Ia3Config {
        init_ia3_weights: false,
        ..Ia3Config::default()
    };
    let cases: Vec<(&str, AddFn)> = vec![
        (
            "lora_all_rs",
            Box::new(move |m| drop(m.add_lora("default", &lora_all_rs).unwrap())),
        ),
        (
            "dora_qv",
            Box::new(move |m| drop(m.add_lora("default", &dora_qv).unwrap())),
        ),
        (
            "ia3",
            Box::new(move |m| drop(m.add_ia3("default", &ia3).unwrap())),
        ),
    ];
    for (name, add) in cases {
        let mut m = base.clone();
        add(&mut m);
        let ours = m.sequence_loss(&ids, &device).unwrap();
        let out = tmp.path().join(name);
        save_adapter(&m, "default", &out).unwrap();
        let output = Command::new(&python)
            .arg(&script)
            .arg("--model")
            .arg(fixtures().join("tiny-llama"))
            .arg("--adapter")
            .arg(&out)
            .arg("--ids-json")
            .arg(&ids_file)
            .output()
            .expect("python3 runs");
        if output.status.code() == Some(3) && std::env::var("BURN_PEFT_REQUIRE_PYTHON").is_err() {
            eprintln!("skipped: {}", String::from_utf8_lossy(&output.stderr));
            return;
        }
        assert!(
            output.status.success(),
            "peft_loss.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let v: Value = serde_json::from_slice(&output.stdout).unwrap();
        let theirs = v["loss"].as_f64().unwrap();
        assert_close(ours, theirs, name);
    }
}

/// Prefix tuning with projection: the encoder file restores the table exactly into a freshly
/// added adapter, and refuses a model without projection or with other sizes.
#[test]
fn prefix_encoder_round_trips_and_refuses_other_shapes() {
    let device = Device::flex();
    let projected = |hidden: usize| PrefixTuningConfig {
        prefix_projection: true,
        encoder_hidden_size: Some(hidden),
        ..PrefixTuningConfig::new(4)
    };
    let table = |m: &Llama| match m.prompt_slot().adapter() {
        Some(p) => p
            .prompt_embeddings()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
        None => panic!("no prompt learning"),
    };
    let mut trained = model(&device);
    trained.add_prefix_tuning("p", &projected(32)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(trained.save_prefix_encoder(dir.path()).unwrap());

    let mut fresh = model(&device);
    fresh.add_prefix_tuning("p", &projected(32)).unwrap();
    assert_ne!(table(&fresh), table(&trained), "two random inits");
    assert!(fresh.load_prefix_encoder(dir.path()).unwrap());
    assert_eq!(table(&fresh), table(&trained));

    // Another MLP width: a shape error, and the model keeps its own values.
    let mut other = model(&device);
    other.add_prefix_tuning("p", &projected(16)).unwrap();
    let before = table(&other);
    assert!(other.load_prefix_encoder(dir.path()).is_err());
    assert_eq!(table(&other), before);
    // No projection to load into.
    let mut plain = model(&device);
    plain
        .add_prefix_tuning("p", &PrefixTuningConfig::new(4))
        .unwrap();
    assert!(plain.load_prefix_encoder(dir.path()).is_err());
    assert!(!plain.save_prefix_encoder(dir.path()).unwrap());
    // Nothing saved: nothing loaded.
    let empty = tempfile::tempdir().unwrap();
    assert!(!fresh.load_prefix_encoder(empty.path()).unwrap());
}

#[test]
fn text_initialized_prompt_tuning_saves_and_loads_without_a_tokenizer() {
    let device = Device::flex();
    let tok = TextTokenizer::from_file(&fixtures().join("tiny-llama/tokenizer.json")).unwrap();
    let text = "the cat sat";
    let ids = tok.encode(text).unwrap();
    assert!(!ids.is_empty() && ids.len() < 6);
    // TEXT without the text's ids is refused, naming what to set; nothing is attached.
    let mut m = model(&device);
    let err = m
        .add_prompt_tuning("p", &PromptTuningConfig::from_text(6, text))
        .unwrap_err();
    assert!(err.to_string().contains("with_init_token_ids"), "{err}");
    assert!(m.prompt_adapter_name().is_none());
    // With them, the virtual tokens start at the text's embeddings, repeated to 6.
    let config = PromptTuningConfig::from_text(6, text).with_init_token_ids(ids.clone());
    m.add_prompt_tuning("p", &config).unwrap();
    let table = |m: &Llama| {
        m.prompt_slot()
            .adapter()
            .unwrap()
            .prompt_embeddings()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let start = table(&m);
    let rows = m
        .embed_tokens
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let h = m.config.hidden_size;
    for (k, id) in ids.iter().cycle().take(6).enumerate() {
        let id = *id as usize;
        assert_eq!(
            start[k * h..(k + 1) * h],
            rows[id * h..(id + 1) * h],
            "row {k}"
        );
    }
    // Saved with its TEXT config, and loaded back (as PEFT's own TEXT files are) with no
    // tokenizer: the table is the file's, not a new initialization.
    let dir = tempfile::tempdir().unwrap();
    m.save_adapter("p", dir.path()).unwrap();
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["prompt_tuning_init"], "TEXT");
    let mut fresh = model(&device);
    fresh.load_adapter(dir.path(), "p").unwrap();
    assert_eq!(table(&fresh), start);
    let ids: Vec<u32> = vec![1, 5, 9, 2, 7];
    let a = m.sequence_loss(&ids, &device).unwrap();
    let b = fresh.sequence_loss(&ids, &device).unwrap();
    assert_eq!(a, b);
}
