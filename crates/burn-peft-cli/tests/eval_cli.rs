//! `burn-peft eval` against the losses transformers + PEFT computed for the fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn expected() -> Value {
    fixture_json("expected.json")
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burn-peft"))
        .arg("eval")
        .args(args)
        .current_dir(fixtures())
        .output()
        .unwrap()
}

/// `eval --json` of the tiny Llama on the fixture's 48 reference tokens (the text's first 48,
/// those of `expected.json`), with `extra` arguments.
fn eval_reference(extra: &[&str]) -> Output {
    let args = [
        "--model",
        "tiny-llama",
        "--text",
        "text.txt",
        "--max-tokens",
        "48",
        "--json",
    ];
    eval(&[&args[..], extra].concat())
}

fn json_loss(out: &Output) -> (f64, u64) {
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = v["loss"].as_f64().unwrap();
    assert!((v["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-6 * loss.exp());
    (loss, v["tokens"].as_u64().unwrap())
}

#[test]
fn eval_matches_peft_with_and_without_adapter_and_merge() {
    let want = &expected()["eval_max_tokens_32"];
    let base = [
        "--model",
        "tiny-llama",
        "--text",
        "text.txt",
        "--max-tokens",
        "32",
        "--json",
    ];
    let (loss, tokens) = json_loss(&eval(&base));
    assert_eq!(tokens, 32);
    assert!(
        (loss - want["base_loss"].as_f64().unwrap()).abs() < 1e-4,
        "{loss}"
    );

    let with = [&base[..], &["--adapter", "adapters/lora_qv"]].concat();
    let (loss, _) = json_loss(&eval(&with));
    assert!(
        (loss - want["lora_qv_loss"].as_f64().unwrap()).abs() < 1e-4,
        "{loss}"
    );
    let merged = [&with[..], &["--merge"]].concat();
    let (loss_merged, _) = json_loss(&eval(&merged));
    assert!((loss_merged - loss).abs() < 1e-4);
}

#[test]
fn several_adapters_are_all_active() {
    let e = expected();
    let ids: Vec<u64> = e["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 48);
    let out = eval_reference(&[
        "--adapter",
        "adapters/lora_qv",
        "--adapter",
        "adapters/lora_regex_layer1",
    ]);
    let (loss, _) = json_loss(&out);
    let want = e["multi_lora_qv+lora_regex_layer1"]["loss"]
        .as_f64()
        .unwrap();
    assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
}

#[test]
fn every_peft_method_evaluates_without_extra_flags() {
    let e = expected();
    for name in ["ia3", "prefix", "prefix_proj", "prompt", "dora_attn"] {
        let dir = format!("adapters/{name}");
        let out = eval_reference(&["--adapter", &dir]);
        let (loss, _) = json_loss(&out);
        let want = e["adapters"][name]["loss"].as_f64().unwrap();
        assert!((loss - want).abs() < 1e-4, "{name}: {loss} vs {want}");
    }
    let merged = eval_reference(&["--adapter", "adapters/ia3", "--merge"]);
    let (loss, _) = json_loss(&merged);
    assert!((loss - e["adapters"]["ia3"]["merged_loss"].as_f64().unwrap()).abs() < 1e-4);
    let out = eval(&[
        "--model",
        "tiny-llama",
        "--text",
        "text.txt",
        "--adapter",
        "adapters/prefix",
        "--merge",
    ]);
    assert_one_line_error(&out, "cannot be merged");
}

#[test]
fn text_output_is_one_line() {
    let out = eval(&[
        "--model",
        "tiny-llama",
        "--text",
        "text.txt",
        "--max-tokens",
        "16",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.starts_with("loss ") && text.contains("perplexity") && text.contains("tokens 16"));
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = ["--text", "text.txt"];
    // Missing files.
    assert_one_line_error(
        &eval(&[&["--model", "no-such-dir"][..], &text].concat()),
        "no-such-dir",
    );
    assert_one_line_error(
        &eval(&["--model", "tiny-llama", "--text", "missing.txt"]),
        "missing.txt",
    );
    // Not a Llama.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    let d = dir.path().to_str().unwrap();
    assert_one_line_error(&eval(&[&["--model", d][..], &text].concat()), "gpt2");
    // An adapter whose shapes do not fit: lora_qv's q_proj B made for another width.
    let bad = dir.path().join("bad_adapter");
    std::fs::create_dir(&bad).unwrap();
    let src = fixtures().join("adapters/lora_qv");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        bad.join("adapter_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("adapter_config.json"))
        .unwrap()
        .replace("\"r\": 4", "\"r\": 3");
    std::fs::write(bad.join("adapter_config.json"), config).unwrap();
    assert_one_line_error(
        &eval(
            &[
                &["--model", "tiny-llama", "--adapter", bad.to_str().unwrap()][..],
                &text,
            ]
            .concat(),
        ),
        "shape",
    );
    // An unknown target module.
    let unknown = dir.path().join("unknown_target");
    std::fs::create_dir(&unknown).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        unknown.join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        unknown.join("adapter_config.json"),
        r#"{"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["c_attn"]}"#,
    )
    .unwrap();
    assert_one_line_error(
        &eval(
            &[
                &[
                    "--model",
                    "tiny-llama",
                    "--adapter",
                    unknown.to_str().unwrap(),
                ][..],
                &text,
            ]
            .concat(),
        ),
        "c_attn",
    );
    // A device this build lacks.
    assert_one_line_error(
        &eval(&[&["--model", "tiny-llama", "--device", "cuda"][..], &text].concat()),
        "--features cuda",
    );
    assert_one_line_error(
        &eval(&[&["--model", "tiny-llama", "--device", "tpu"][..], &text].concat()),
        "unknown device",
    );
}

/// A GPU device that may be compiled in (with `--features wgpu`) but have no driver on
/// this machine: either it evaluates to PEFT's loss, or it fails with one line naming the
/// device. burn's backends panic on a missing driver; the CLI must not (exit 101).
#[test]
fn a_gpu_device_evaluates_or_fails_in_one_line() {
    let out = eval_reference(&["--device", "wgpu"]);
    if out.status.success() {
        let (loss, _) = json_loss(&out);
        let want = expected()["base_loss"].as_f64().unwrap();
        assert!((loss - want).abs() < 1e-3, "{loss} vs {want}");
    } else if String::from_utf8_lossy(&out.stderr).contains("--features wgpu") {
        // Built without the feature (a plain `cargo test`): the error says which one.
        assert_one_line_error(&out, "--features wgpu");
    } else {
        assert_one_line_error(&out, "device 'wgpu' is not usable here");
    }
}

/// `--dtype bf16` / `f16`: the base in half precision with the adapter in f32 gives the loss
/// transformers + PEFT give in the same types (`scripts/half_reference.py`); a type that does
/// not exist is refused.
#[test]
fn half_precision_eval_matches_peft_in_half_precision() {
    let half = fixture_json("expected_half.json");
    let args = ["--adapter", "adapters/lora_rs_all"];
    for (dtype, tol) in [("bf16", 6e-3), ("f16", 1.5e-3)] {
        let out = eval_reference(&[&args[..], &["--dtype", dtype]].concat());
        let (loss, _) = json_loss(&out);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["dtype"], dtype);
        let want = half[dtype]["adapters"]["lora_rs_all"].as_f64().unwrap();
        assert!(
            (loss - want).abs() < tol,
            "{dtype}: ours {loss}, PEFT {want}"
        );
    }
    let out = eval_reference(&[&args[..], &["--dtype", "fp8"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected f32, bf16 or f16"), "{err}");
}

/// `hf:<org>/<name>[@revision]` reads a model from a Hugging Face cache laid out as
/// huggingface_hub lays it out (`models--org--name/{blobs,refs,snapshots}`, snapshot files
/// linked to blobs), offline, from `HF_HOME` or `HF_HUB_CACHE`; a model that is not there is
/// an error that says where it looked.
#[cfg(unix)]
#[test]
fn hf_specs_read_the_hugging_face_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--test-org--tiny-llama");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for (i, file) in ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .enumerate()
    {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::fs::copy(fixtures().join("tiny-llama").join(file), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snapshot.join(file)).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let run = |spec: &str, var: &str, dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_burn-peft"))
            .args([
                "eval",
                "--model",
                spec,
                "--text",
                "text.txt",
                "--max-tokens",
                "48",
            ])
            .arg("--json")
            .env_remove("HF_HOME")
            .env_remove("HF_HUB_CACHE")
            .env(var, dir)
            .current_dir(fixtures())
            .output()
            .unwrap()
    };
    let (want, _) = json_loss(&eval_reference(&[]));
    for (spec, var, dir) in [
        (
            "hf:test-org/tiny-llama",
            "HF_HOME",
            home.path().to_path_buf(),
        ),
        (
            "hf:test-org/tiny-llama@main",
            "HF_HUB_CACHE",
            home.path().join("hub"),
        ),
        (
            &format!("hf:test-org/tiny-llama@{commit}"),
            "HF_HOME",
            home.path().to_path_buf(),
        ),
    ] {
        let out = run(spec, var, &dir);
        let (loss, _) = json_loss(&out);
        assert_eq!(loss, want, "{spec}");
    }
    let out = run("hf:test-org/other", "HF_HOME", home.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not in the Hugging Face cache")
            && stderr.contains("models--test-org--other"),
        "{stderr}"
    );
    let out = run("hf:../etc", "HF_HOME", home.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not hf:<org>/<name>"));
}
