//! `burn-peft compare` end to end: on the tiny Llama fixture every arm but retrieval runs and
//! writes its report; with the real assets (skipped without them unless
//! `BURN_PEFT_REQUIRE_ASSETS=1`), the built-in tasks are read and all five arms, retrieval with
//! MiniLM included, run on SmolLM2-135M.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn compare(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_burn-peft"))
        .current_dir(fixtures())
        .arg("compare")
        .arg("--no-progress")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = args
        .iter()
        .position(|a| *a == "--out")
        .map(|i| PathBuf::from(args[i + 1]))
        .unwrap();
    for f in ["compare.json", "compare.md", "compare.svg"] {
        assert!(dir.join(f).is_file(), "no {f}");
    }
    let json = std::fs::read_to_string(dir.join("compare.json")).unwrap();
    (serde_json::from_str(&json).unwrap(), stdout)
}

#[test]
fn compare_runs_every_arm_on_a_csv_task() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("reviews.csv");
    let mut rows = String::from("review,label\n");
    for i in 0..12 {
        let (text, label) = if i % 2 == 0 {
            ("a fine and good film", "pos")
        } else {
            ("a dull and bad film", "neg")
        };
        rows.push_str(&format!("{text} number {i},{label}\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = tmp.path().join("out");
    let (report, stdout) = compare(&[
        "--model",
        "tiny-llama",
        "--task",
        csv.to_str().unwrap(),
        "--text-column",
        "review",
        "--arms",
        "zero-shot,icl,lora,full",
        "--seeds",
        "2",
        "--k",
        "2",
        "--test-samples",
        "4",
        "--steps",
        "2",
        "--seq-len",
        "128",
        "--general-data",
        "text.txt",
        "--out",
        out.to_str().unwrap(),
    ]);
    let arms: Vec<&str> = report["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["zero-shot", "icl", "peft", "full"]);
    assert_eq!(report["runs"].as_array().unwrap().len(), 1 + 2 + 2 + 2);
    assert_eq!(report["test_items"], 4);
    assert_eq!(report["train_items"], 8);
    assert_eq!(report["seeds"], serde_json::json!([1, 2]));
    // The LoRA runs wrote PEFT adapters.
    for seed in [1, 2] {
        let dir = out.join(format!("peft-seed{seed}"));
        assert!(dir.join("adapter_model.safetensors").is_file());
        assert!(dir.join("adapter_config.json").is_file());
    }
    assert!(stdout.contains("| full |"), "{stdout}");
    // A second run into the same folder is refused (nothing is overwritten).
    let again = Command::new(env!("CARGO_BIN_EXE_burn-peft"))
        .current_dir(fixtures())
        .args([
            "compare",
            "--model",
            "tiny-llama",
            "--task",
            csv.to_str().unwrap(),
            "--text-column",
            "review",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));
}

/// The real assets, or `None` (with a note) when they are not cached and not required.
fn real_assets() -> Option<()> {
    let cache = burn_peft_assets::AssetCache::from_env(None);
    for spec in [
        burn_peft_assets::SMOLLM2_GGUF,
        burn_peft_assets::MINILM_DIR,
        burn_peft_assets::LEE_BACKGROUND,
        burn_peft_assets::ROTTEN_TOMATOES,
        burn_peft_assets::HAMLET_TXT,
    ] {
        if let Err(e) = cache.resolve(spec) {
            if std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_some() {
                panic!("{e}");
            }
            eprintln!("skipped: {e}");
            return None;
        }
    }
    Some(())
}

#[test]
fn smollm2_compares_all_five_arms_on_both_built_in_tasks() {
    if real_assets().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for task in ["rotten-tomatoes", "news-facts"] {
        let out = tmp.path().join(task);
        let (report, _) = compare(&[
            "--model",
            burn_peft_assets::SMOLLM2_GGUF,
            "--task",
            task,
            "--seeds",
            "1",
            "--k",
            "1",
            "--test-samples",
            "4",
            "--train-samples",
            "40",
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--seq-len",
            "256",
            "--general-samples",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        let runs = report["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 5, "{task}");
        for run in runs {
            let accuracy = run["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&accuracy), "{task}: {run}");
            // A quarter of the items at a time: 4 held out.
            assert_eq!((accuracy * 4.0).fract(), 0.0, "{task}: {run}");
        }
        let rag = runs.iter().find(|r| r["arm"] == "rag").unwrap();
        let zero = runs.iter().find(|r| r["arm"] == "zero-shot").unwrap();
        assert!(rag["prompt_tokens"].as_f64() > zero["prompt_tokens"].as_f64());
        let full = runs.iter().find(|r| r["arm"] == "full").unwrap();
        assert!(full["general_ppl_change_pct"].as_f64().unwrap().is_finite());
        assert!(full["trainable_params"].as_u64().unwrap() > 100_000_000);
    }
}
