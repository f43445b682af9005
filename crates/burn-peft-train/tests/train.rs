//! The training crate's parts against independent references: the target-only loss against
//! the full causal-LM loss, prompt formats and masks, data files and their errors, the batcher,
//! evaluation's two scoring paths, and the metrics log.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_peft_adapters::{AddAdapter, LoraConfig, PromptTuningConfig};
use burn_peft_core::TargetModules;
use burn_peft_models::{Llama, LlamaConfig, TextTokenizer};
use burn_peft_train::{
    Batcher, CsvTask, Dataset, Encoder, MetricsLog, PromptFormat, Sample, Task, TrainError,
    batch_loss, collate, evaluate, read_text,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&fixtures().join("tiny-llama/tokenizer.json")).unwrap()
}

fn model(device: &Device) -> Llama {
    device.seed(3);
    Llama::init(&LlamaConfig::tiny(384), device)
}

fn sample(ids: &[u32], targets: &[bool]) -> Sample {
    Sample {
        ids: ids.to_vec(),
        targets: targets.to_vec(),
        label: None,
    }
}

/// The loss over target positions only equals the full-vocabulary causal-LM loss with the
/// target mask, with padding, for a plain model and one with prompt tuning.
#[test]
fn target_only_loss_equals_the_full_masked_loss() {
    let device = Device::flex();
    let mut m = model(&device);
    let a = sample(
        &[5, 9, 12, 40, 41, 7],
        &[false, false, false, true, true, true],
    );
    let b = sample(&[3, 4, 8, 100], &[true, true, true, true]);
    let batch = collate(&[&a, &b], 0, &device);
    for round in 0..2 {
        let full = Llama::causal_lm_loss(
            m.forward(batch.input_ids.clone(), Some(batch.attention_mask.clone())),
            batch.input_ids.clone(),
            Some(batch.target_mask.clone()),
        )
        .into_scalar::<f32>();
        let ours = batch_loss(&m, &batch).into_scalar::<f32>();
        assert!(
            (full - ours).abs() < 1e-5,
            "round {round}: {full} vs {ours}"
        );
        if round == 0 {
            m.add_prompt_tuning("p", &PromptTuningConfig::new(3))
                .unwrap();
        }
    }
}

#[test]
fn formats_mark_only_the_answers_as_targets() {
    let tok = tokenizer();
    let answer = |f: PromptFormat, turns: &[(&str, &str)]| {
        let enc = Encoder::new(&tok, f, 512, Some(0)).unwrap();
        let (s, cut) = enc.turns(turns).unwrap();
        assert!(!cut);
        let t: Vec<u32> = s
            .ids
            .iter()
            .zip(&s.targets)
            .filter(|x| *x.1)
            .map(|x| *x.0)
            .collect();
        (tok.decode(&s.ids).unwrap(), t)
    };
    let chat = PromptFormat::ChatMl {
        system: Some("Be brief.".into()),
    };
    let (text, t) = answer(chat.clone(), &[("user", "Hi"), ("assistant", "Hello")]);
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>"
    );
    assert_eq!(tok.decode(&t).unwrap(), "Hello<|im_end|>");
    // Two answers in one conversation: both are targets, nothing else.
    let (_, t) = answer(
        chat,
        &[
            ("user", "a"),
            ("assistant", "one"),
            ("user", "b"),
            ("assistant", "two"),
        ],
    );
    assert_eq!(tok.decode(&t).unwrap(), "one<|im_end|>two<|im_end|>");
    // Plain: the answer after a space, then EOS (id 0) as a target.
    let (_, t) = answer(PromptFormat::Plain, &[("user", "Q?"), ("assistant", "yes")]);
    assert_eq!(*t.last().unwrap(), 0);
    assert_eq!(tok.decode(&t[..t.len() - 1]).unwrap(), " yes");
}

#[test]
fn long_samples_keep_their_answer() {
    let tok = tokenizer();
    let enc = Encoder::new(&tok, PromptFormat::Plain, 12, Some(0)).unwrap();
    let long = "word ".repeat(40);
    let (s, cut) = enc.pair(&long, "yes").unwrap();
    assert!(cut);
    assert_eq!(s.ids.len(), 12);
    assert!(*s.targets.last().unwrap() && s.targets.iter().filter(|t| **t).count() >= 2);
    assert!(!s.targets[0]);
}

#[test]
fn csv_jsonl_and_text_files_load_with_their_tasks() {
    let tok = tokenizer();
    let enc = Encoder::new(&tok, PromptFormat::Plain, 64, Some(0)).unwrap();
    let task = CsvTask::new("text", "category").with_labels(vec!["fresh".into(), "rotten".into()]);
    let d = Dataset::load(&fixtures().join("data/reviews.csv"), &enc, Some(&task)).unwrap();
    assert_eq!(d.samples.len(), 40, "the 4 'plot' rows are skipped");
    assert_eq!(
        d.task,
        Task::Classification {
            labels: vec!["fresh".into(), "rotten".into()]
        }
    );
    assert_eq!(d.label_ids.len(), 2);
    assert_eq!(d.samples.iter().filter(|s| s.label == Some(0)).count(), 20);
    // Without a label list, every label found, sorted.
    let all = Dataset::load(
        &fixtures().join("data/reviews.csv"),
        &enc,
        Some(&CsvTask::new("text", "category")),
    )
    .unwrap();
    assert_eq!(
        all.task,
        Task::Classification {
            labels: vec!["fresh".into(), "plot".into(), "rotten".into()]
        }
    );
    let qa = Dataset::load(&fixtures().join("data/qa.jsonl"), &enc, None).unwrap();
    assert_eq!((qa.samples.len(), qa.task.clone()), (24, Task::Completion));
    let chat = Dataset::load(&fixtures().join("data/chat.jsonl"), &enc, None).unwrap();
    assert_eq!(chat.samples.len(), 8);
    let text = Dataset::load(&fixtures().join("text.txt"), &enc, None).unwrap();
    assert_eq!(text.task, Task::LanguageModeling);
    assert!(
        text.samples
            .iter()
            .all(|s| s.ids.len() <= 64 && s.targets.iter().all(|t| *t))
    );

    let (train, eval) = qa.split(5, 1).unwrap();
    assert_eq!((train.samples.len(), eval.samples.len()), (19, 5));
}

#[test]
fn bad_data_gives_typed_errors_with_places() {
    let tok = tokenizer();
    let enc = Encoder::new(&tok, PromptFormat::Plain, 64, None).unwrap();
    let p = Path::new("x.jsonl");
    let bad = |content: &str| Dataset::from_jsonl(content, p, &enc).unwrap_err();
    let e = bad("{\"prompt\":\"a\",\"completion\":\"b\"}\nnot json\n");
    assert!(matches!(e, TrainError::Data { line: 2, .. }), "{e}");
    let e = bad("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}");
    assert!(e.to_string().contains("no assistant"), "{e}");
    let e = bad(
        "{\"messages\":[{\"role\":\"robot\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}",
    );
    assert!(e.to_string().contains("robot"), "{e}");
    assert!(bad("").to_string().contains("no usable"));
    let task = CsvTask::new("text", "label");
    let e = Dataset::from_csv("text,label\na,x\n", Path::new("y.csv"), &task, &enc).unwrap_err();
    assert!(e.to_string().contains("at least 2 labels"), "{e}");
    let e =
        Dataset::from_csv("text,label\na,x,extra\n", Path::new("y.csv"), &task, &enc).unwrap_err();
    assert!(matches!(e, TrainError::Data { line: 2, .. }), "{e}");
    let e = Dataset::load(Path::new("data.parquet"), &enc, None).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.txt.bz2");
    std::fs::write(&f, "not bzip2").unwrap();
    assert!(
        Dataset::load(&f, &enc, None)
            .unwrap_err()
            .to_string()
            .contains("bzip2")
    );
    assert!(Encoder::new(&tok, PromptFormat::Plain, 1, None).is_err());
}

fn bzip2(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn bzip2_files_are_read_whole_and_bombs_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // Two streams one after the other (pbzip2, Wikipedia dumps): both are the text.
    let multi = dir.path().join("multi.txt.bz2");
    std::fs::write(&multi, [bzip2(b"hello "), bzip2(b"world")].concat()).unwrap();
    assert_eq!(read_text(&multi).unwrap(), "hello world");
    // 17 streams of 64 MiB: 1088 MiB from 17 small streams, past the 1 GiB cap.
    let stream = bzip2(&vec![b'a'; 64 << 20]);
    assert!(stream.len() < 1 << 16, "{}", stream.len());
    let bomb = dir.path().join("bomb.txt.bz2");
    std::fs::write(&bomb, stream.repeat(17)).unwrap();
    let e = read_text(&bomb).unwrap_err().to_string();
    assert!(e.contains("decompresses to more than 1024 MiB"), "{e}");
}

#[test]
fn batcher_visits_every_sample_once_per_epoch_and_reshuffles() {
    let mut b = Batcher::new(10, 7);
    let first: Vec<usize> = (0..5).flat_map(|_| b.next_batch(2)).collect();
    let second: Vec<usize> = (0..5).flat_map(|_| b.next_batch(2)).collect();
    let sorted = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(sorted(&first), (0..10).collect::<Vec<_>>());
    assert_eq!(sorted(&second), (0..10).collect::<Vec<_>>());
    assert_ne!(first, second);
    assert_eq!(b.state().epoch, 1);
    assert_ne!(first, (0..10).collect::<Vec<_>>());
    // A different seed, a different order.
    let mut c = Batcher::new(10, 8);
    assert_ne!(
        first,
        (0..5).flat_map(|_| c.next_batch(2)).collect::<Vec<_>>()
    );
}

/// Classification accuracy: the fast path (labels' first tokens at the answer position) and
/// scoring each label's full answer agree, accuracy follows the labels, and batches scored on
/// threads of their own give the same metrics.
#[test]
fn accuracy_paths_agree() {
    let device = Device::flex();
    let tok = tokenizer();
    let enc = Encoder::new(&tok, PromptFormat::Plain, 64, Some(0)).unwrap();
    let task = CsvTask::new("text", "category").with_labels(vec!["fresh".into(), "rotten".into()]);
    let d = Dataset::load(&fixtures().join("data/reviews.csv"), &enc, Some(&task))
        .unwrap()
        .take(12);
    let m = model(&device);
    let fast = evaluate(&m, &d, 5, 0, &device, 1).unwrap();
    // Batches of 5, 5 and 2 at once.
    let threaded = evaluate(&m, &d, 5, 0, &device, 3).unwrap();
    assert!((threaded.loss - fast.loss).abs() < 1e-9 * fast.loss);
    assert_eq!(
        (threaded.accuracy, threaded.exact_match, threaded.samples),
        (fast.accuracy, fast.exact_match, fast.samples)
    );
    // Same data, labels that share a first token: forces full scoring of each label.
    let mut slow_data = d.clone();
    let shared = slow_data.label_ids[0][0];
    for l in slow_data.label_ids.iter_mut() {
        l.insert(0, shared);
    }
    let slow = evaluate(&m, &slow_data, 5, 0, &device, 2).unwrap();
    assert!(fast.accuracy.is_some() && slow.accuracy.is_some());
    assert_eq!(fast.samples, 12);
    assert!(
        (fast.loss - slow.loss).abs() < 1e-9,
        "loss does not depend on the scoring path"
    );
    // Brute force for the fast path: a full forward per sample and label.
    let mut right = 0;
    for s in &d.samples {
        let p = s.first_target().unwrap();
        let score = |l: &Vec<u32>| {
            let mut ids = s.ids[..p].to_vec();
            ids.push(l[0]);
            let x = sample(&ids, &vec![true; ids.len()]);
            let b = collate(&[&x], 0, &device);
            let logits = m.forward(b.input_ids, None);
            let v = logits.dims()[2];
            let row =
                burn::tensor::activation::log_softmax(logits.slice([0..1, p - 1..p, 0..v]), 2);
            row.into_data().try_to_vec::<f32>().unwrap()[l[0] as usize]
        };
        let pick = if score(&d.label_ids[0]) >= score(&d.label_ids[1]) {
            0
        } else {
            1
        };
        right += (Some(pick) == s.label) as usize;
    }
    assert!((fast.accuracy.unwrap() - right as f64 / 12.0).abs() < 1e-9);
    // LoRA changes the model, not the bookkeeping.
    let mut tuned = m.clone();
    let c = LoraConfig::new(2).with_target_modules(TargetModules::all_linear());
    tuned.add_lora("x", &c).unwrap();
    assert!(evaluate(&tuned, &d, 4, 0, &device, 1).is_ok());
}

#[test]
fn metrics_log_resume_drops_records_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let log = MetricsLog::create(&path).unwrap();
    for s in 1..=6 {
        log.append(&serde_json::json!({"step": s, "loss": s as f64}))
            .unwrap();
    }
    let log = MetricsLog::resume(&path, 4).unwrap();
    let steps: Vec<u64> = log
        .read()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
}
