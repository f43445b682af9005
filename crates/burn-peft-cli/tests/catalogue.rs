//! A catalogue of malformed inputs, one or more of each kind that issue 35 found handled badly
//! (data overwritten, options injected, absurd sizes, ids out of range, divergence, values
//! accepted that compute nonsense). Each must end the command with exit status 1 and one line
//! `burn-peft: ...` naming the problem, with no panic or abort, and every file that existed
//! before unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of a fixture directory whose JSON file `file` has `patch`'s fields set.
fn patched(from: &Path, to: &Path, file: &str, patch: Value) -> PathBuf {
    copy_dir(from, to);
    let path = to.join(file);
    let mut json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        json[k] = v.clone();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    to.to_path_buf()
}

/// Every file under `root`, with its bytes (a link: its target), to compare before and after.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                files.insert(path, target.to_string_lossy().as_bytes().to_vec());
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Sets the f32 at the start of `key`'s data in a safetensors file to NaN.
fn poison(file: &Path, key: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header[key]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

struct Catalogue {
    tmp: tempfile::TempDir,
    /// Kinds tried, for the summary.
    tried: usize,
}

impl Catalogue {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs `burn-peft args` from the fixtures directory and checks the refusal.
    fn refused(&mut self, kind: &str, args: &[&str], needle: &str) {
        self.tried += 1;
        let before = snapshot(self.tmp.path());
        let fixtures_before = snapshot(&fixtures());
        let out = Command::new(env!("CARGO_BIN_EXE_burn-peft"))
            .current_dir(fixtures())
            .env("RUST_BACKTRACE", "0")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{kind}: exit status {:?}, stderr:\n{stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{kind}: a panic:\n{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("burn-peft: "))
            .collect();
        assert_eq!(errors.len(), 1, "{kind}: not one error line:\n{stderr}");
        assert_eq!(
            stderr.lines().last(),
            Some(errors[0]),
            "{kind}: the error is not the last line:\n{stderr}"
        );
        // Refused before any work: nothing else on stderr (a run that fails while training,
        // such as a divergence, has printed its banner and progress before).
        if kind.starts_with("--resume") {
            assert_eq!(
                stderr.lines().count(),
                1,
                "{kind}: more than the error:\n{stderr}"
            );
        }
        assert!(
            errors[0].contains(needle),
            "{kind}: '{}' does not say '{needle}'",
            errors[0]
        );
        let after = snapshot(self.tmp.path());
        for (path, bytes) in &before {
            assert_eq!(after.get(path), Some(bytes), "{kind}: {path:?} changed");
        }
        assert!(
            snapshot(&fixtures()) == fixtures_before,
            "{kind}: a fixture changed"
        );
    }
}

#[test]
fn every_malformed_input_is_a_one_line_error_and_changes_nothing() {
    let mut c = Catalogue {
        tmp: tempfile::tempdir().unwrap(),
        tried: 0,
    };
    let fx = fixtures();
    let tiny = fx.join("tiny-llama");
    let root = c.tmp.path().to_path_buf();
    let p = |name: &str| root.join(name).to_string_lossy().into_owned();
    let train = [
        "finetune",
        "--no-progress",
        "--model",
        "tiny-llama",
        "--data",
        "text.txt",
        "--seq-len",
        "32",
        "--steps",
        "2",
    ];
    let finetune = |extra: &[&str]| -> Vec<String> {
        train
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let refuse = |c: &mut Catalogue, kind: &str, args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.refused(kind, &args, needle);
    };

    // 1. Data that would be lost.
    let model_copy = c.path("model-copy");
    copy_dir(&tiny, &model_copy);
    let adapter_copy = c.path("adapter-copy");
    copy_dir(&fx.join("adapters/lora_qv"), &adapter_copy);
    let out = p("model-copy");
    refuse(
        &mut c,
        "full fine-tune onto a model directory",
        finetune(&["--method", "full", "--out", &out]),
        "already holds files",
    );
    let out = p("adapter-copy");
    refuse(
        &mut c,
        "an adapter run onto an adapter directory",
        finetune(&["--out", &out]),
        "already holds files",
    );
    refuse(
        &mut c,
        "--out /",
        finetune(&["--out", "/"]),
        "already holds",
    );
    std::fs::write(c.path("a-file"), "mine").unwrap();
    let out = p("a-file");
    refuse(
        &mut c,
        "--out onto a file",
        finetune(&["--out", &out]),
        "is not a directory",
    );
    let (model, adapter, out) = (p("model-copy"), "adapters/lora_qv", p("model-copy"));
    refuse(
        &mut c,
        "merge onto a model directory",
        vec![
            "merge".into(),
            "--model".into(),
            model,
            "--adapter".into(),
            adapter.into(),
            "--out".into(),
            out,
        ],
        "--overwrite",
    );
    // A run with a checkpoint, then resumed with another rank and with a broken log.
    let run = p("run");
    let made = Command::new(env!("CARGO_BIN_EXE_burn-peft"))
        .current_dir(&fx)
        .args(finetune(&["--save-every", "1", "--out", &run]))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    refuse(
        &mut c,
        "--resume with another rank",
        finetune(&["--resume", "--r", "4", "--out", &run]),
        "r (8, now 4)",
    );
    let mut log = std::fs::read(c.path("run/metrics.jsonl")).unwrap();
    log.extend(b"{\"step\": 3, \"loss\": \xff\xfe}\n");
    std::fs::write(c.path("run/metrics.jsonl"), log).unwrap();
    refuse(
        &mut c,
        "--resume on a metrics.jsonl that is not UTF-8",
        finetune(&["--resume", "--out", &run]),
        "metrics.jsonl",
    );

    // 2-3. Options injected into pip.
    refuse(
        &mut c,
        "a pypi: name that is an option",
        ["eval", "--model", "pypi:-r==x#y", "--text", "text.txt"]
            .map(String::from)
            .to_vec(),
        "is not pypi:<package>==<version>",
    );

    // 4-5. Absurd sizes and ids out of range, in configs, files and flags.
    let eval = |model: &str| -> Vec<String> {
        ["eval", "--model", model, "--text", "text.txt"]
            .map(String::from)
            .to_vec()
    };
    for (kind, patch, needle) in [
        (
            "10⁹ layers",
            serde_json::json!({"num_hidden_layers": 1_000_000_000u64}),
            "too large",
        ),
        (
            "2⁶⁴ − 1 layers",
            serde_json::json!({"num_hidden_layers": u64::MAX}),
            "overflow",
        ),
        (
            "a head_dim whose products overflow",
            serde_json::json!({"head_dim": 1u64 << 62}),
            "overflow",
        ),
        (
            "a vocabulary of 10¹²",
            serde_json::json!({"vocab_size": 1_000_000_000_000u64}),
            "too large",
        ),
        (
            "an eos_token_id outside the vocabulary",
            serde_json::json!({"eos_token_id": 384}),
            "outside the vocabulary",
        ),
        (
            "a negative rms_norm_eps",
            serde_json::json!({"rms_norm_eps": -1e-6}),
            "rms_norm_eps",
        ),
        (
            "rope_theta 0",
            serde_json::json!({"rope_theta": 0, "rope_parameters": null}),
            "rope_theta",
        ),
        (
            "an unknown model_type",
            serde_json::json!({"model_type": "mamba"}),
            "model_type 'mamba'",
        ),
        (
            "a RoPE scaling that is not implemented",
            serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "rope type 'yarn'",
        ),
    ] {
        let dir = patched(
            &tiny,
            &c.path(&format!("m{}", c.tried)),
            "config.json",
            patch,
        );
        refuse(&mut c, kind, eval(dir.to_str().unwrap()), needle);
    }
    for (kind, patch, needle) in [
        (
            "an adapter of rank 10⁹",
            serde_json::json!({"r": 1_000_000_000u64}),
            "too large",
        ),
        (
            "lora_alpha 1e308",
            serde_json::json!({"lora_alpha": 1e308}),
            "lora_alpha",
        ),
    ] {
        let dir = patched(
            &fx.join("adapters/lora_qv"),
            &c.path(&format!("a{}", c.tried)),
            "adapter_config.json",
            patch,
        );
        let mut args = eval("tiny-llama");
        args.extend(["--adapter".into(), dir.to_string_lossy().into_owned()]);
        refuse(&mut c, kind, args, needle);
    }
    let gguf = burn_peft_fuzz::tiny_llama_gguf(&fx);
    let key = b"llama.block_count";
    let at = gguf.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    let mut huge = gguf.clone();
    huge[at..at + 4].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    std::fs::write(c.path("huge.gguf"), huge).unwrap();
    refuse(
        &mut c,
        "a GGUF block_count of 10⁹",
        eval(&p("huge.gguf")),
        "too large",
    );
    std::fs::write(c.path("cut.gguf"), &gguf[..gguf.len() / 2]).unwrap();
    refuse(
        &mut c,
        "a truncated GGUF",
        eval(&p("cut.gguf")),
        "does not fit",
    );
    let cut = c.path("cut-model");
    copy_dir(&tiny, &cut);
    let weights = std::fs::read(cut.join("model.safetensors")).unwrap();
    std::fs::write(cut.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    refuse(
        &mut c,
        "a truncated safetensors file",
        eval(&p("cut-model")),
        "cannot parse",
    );
    for (kind, flags, needle) in [
        ("--r 10⁹", &["--r", "1000000000"][..], "too large"),
        (
            "--num-virtual-tokens 10⁹",
            &["--method", "prefix", "--num-virtual-tokens", "1000000000"][..],
            "too large",
        ),
    ] {
        let out = p(&format!("o{}", c.tried));
        let mut args = finetune(flags);
        args.extend(["--out".into(), out]);
        refuse(&mut c, kind, args, needle);
    }
    refuse(
        &mut c,
        "bench-step --seq-len 10⁹",
        ["bench-step", "--shape", "tiny", "--seq-len", "1000000000"]
            .map(String::from)
            .to_vec(),
        "too large",
    );

    // 8. Divergence the loss does not show.
    let out = p("diverged");
    refuse(
        &mut c,
        "--lr 1e6",
        finetune(&["--lr", "1e6", "--out", &out]),
        "training diverged",
    );

    // 9. Values that would be accepted and compute nonsense.
    let nan_model = c.path("nan-model");
    copy_dir(&tiny, &nan_model);
    poison(&nan_model.join("model.safetensors"), "model.norm.weight");
    refuse(
        &mut c,
        "a NaN in the model's weights",
        eval(&p("nan-model")),
        "NaN or infinite",
    );
    let nan_adapter = c.path("nan-adapter");
    copy_dir(&fx.join("adapters/lora_qv"), &nan_adapter);
    poison(
        &nan_adapter.join("adapter_model.safetensors"),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
    );
    let mut args = eval("tiny-llama");
    args.extend(["--adapter".into(), p("nan-adapter")]);
    refuse(&mut c, "a NaN in an adapter", args, "NaN or infinite");
    for (kind, flags, needle) in [
        (
            "--max-grad-norm NaN",
            &["--max-grad-norm", "NaN"][..],
            "--max-grad-norm NaN",
        ),
        (
            "a negative weight decay",
            &["--weight-decay=-0.1"][..],
            "weight_decay",
        ),
        (
            "--labels naming a class with no rows",
            &[
                "--data",
                "data/reviews.csv",
                "--label-column",
                "category",
                "--labels",
                "fresh,rotte",
            ][..],
            "label 'rotte' has no rows",
        ),
        (
            "an unknown device",
            &["--device", "tpu"][..],
            "unknown device 'tpu'",
        ),
    ] {
        let out = p(&format!("o{}", c.tried));
        let mut args = finetune(flags);
        args.extend(["--out".into(), out]);
        refuse(&mut c, kind, args, needle);
    }
    std::fs::write(c.path("latin1.txt"), b"caf\xe9 au lait\n").unwrap();
    let out = p("latin1-run");
    let data = p("latin1.txt");
    refuse(
        &mut c,
        "a data file that is not UTF-8",
        finetune(&["--data", &data, "--out", &out]),
        "not UTF-8",
    );
    let generate = |extra: &[&str]| -> Vec<String> {
        ["generate", "--model", "tiny-llama"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    refuse(
        &mut c,
        "generate --temperature -1",
        generate(&["--prompt", "hi", "--temperature=-1"]),
        "temperature",
    );
    let long = "word ".repeat(400);
    refuse(
        &mut c,
        "a prompt longer than the context",
        generate(&["--prompt", &long]),
        "more than the model's context of 256",
    );
    // `compare`: a task it cannot run on.
    std::fs::write(
        c.path("reviews.csv"),
        "review,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n",
    )
    .unwrap();
    let reviews = p("reviews.csv");
    std::fs::write(
        c.path("questions.jsonl"),
        "{\"prompt\": \"Who?\", \"completion\": \"Ann\"}\n\
         {\"prompt\": \"Where?\", \"completion\": \"Rome\"}\n",
    )
    .unwrap();
    std::fs::write(c.path("no-passages.txt"), "\n  \n").unwrap();
    let (questions, no_passages) = (p("questions.jsonl"), p("no-passages.txt"));
    let compare = |extra: &[&str]| -> Vec<String> {
        let out = root.join("compare-out").to_string_lossy().into_owned();
        [
            "compare",
            "--no-progress",
            "--model",
            "tiny-llama",
            "--out",
            &out,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    for (kind, flags, needle) in [
        (
            "compare on an unknown task",
            vec!["--task", "bogus"],
            "unknown task 'bogus'",
        ),
        (
            "compare with an unknown arm",
            vec!["--task", &reviews, "--arms", "icl,bogus"],
            "unknown arm 'bogus'",
        ),
        (
            "compare on a CSV without the text column",
            vec!["--task", &reviews],
            "no column 'text'",
        ),
        (
            "compare with more demonstrations than items",
            vec![
                "--task",
                &reviews,
                "--text-column",
                "review",
                "--test-samples",
                "1",
                "--k",
                "9",
            ],
            "k 9 is larger than the 3 training items",
        ),
        (
            "compare with an arm and --method naming two methods",
            vec!["--task", &reviews, "--arms", "ia3", "--method", "dora"],
            "--arms names ia3 but --method is dora",
        ),
        (
            "compare with passages for a CSV task",
            vec!["--task", &reviews, "--passages", &reviews],
            "--passages is for a .jsonl task",
        ),
        (
            "compare on a knowledge task with an empty corpus",
            vec!["--task", &questions, "--passages", &no_passages],
            "has no passages",
        ),
        (
            "compare with no seeds",
            vec!["--task", &reviews, "--seeds", "0"],
            "--seeds must be at least 1",
        ),
        (
            "compare holding out every item",
            vec![
                "--task",
                &reviews,
                "--text-column",
                "review",
                "--test-samples",
                "4",
            ],
            "at least one to learn from",
        ),
    ] {
        refuse(&mut c, kind, compare(&flags), needle);
    }
    eprintln!("{} malformed inputs refused cleanly", c.tried);
    assert!(c.tried >= 30);
}
