//! The comparison on a tiny random Llama: every arm runs, the scores match a hand computation,
//! training learns the answers, and bad settings are refused.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use burn_peft_adapters::LoraConfig;
use burn_peft_compare::{
    Arm, CompareConfig, CompareError, CompareReport, CompareTask, Inputs, Item, compare,
};
use burn_peft_core::TargetModules;
use burn_peft_models::{CausalLm, Llama, LlamaConfig, TextTokenizer};
use burn_peft_retrieval::{Embedder, Result as RetrievalResult};
use burn_peft_train::{Encoder, PromptFormat};

fn tokenizer() -> TextTokenizer {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tiny-llama/tokenizer.json"
    );
    TextTokenizer::from_file(path.as_ref()).unwrap()
}

fn model(tokenizer: &TextTokenizer, device: &Device) -> Llama {
    device.seed(11);
    LlamaConfig::tiny(tokenizer.vocab_size()).init(device)
}

/// Counts of a few letters, normalized: texts about the same words land near each other.
struct Letters(Device);

impl Embedder for Letters {
    fn dim(&self) -> usize {
        8
    }
    fn device(&self) -> Device {
        self.0.clone()
    }
    fn embed(&self, texts: &[String]) -> RetrievalResult<Tensor<2>> {
        let rows: Vec<f32> = texts
            .iter()
            .flat_map(|t| {
                let v: Vec<f32> = "aeiostnr"
                    .chars()
                    .map(|c| t.matches(c).count() as f32 + 0.1)
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(move |x| x / norm)
            })
            .collect();
        Ok(Tensor::<1>::from_floats(rows.as_slice(), &self.0).reshape([texts.len(), 8]))
    }
}

fn parity(n: usize, test: usize) -> CompareTask {
    let items = (0..n)
        .map(|i| Item {
            prompt: format!("Is the number {i} even?"),
            answer: if i % 2 == 0 { "yes" } else { "no" }.into(),
            candidates: vec!["yes".into(), "no".into()],
        })
        .collect();
    CompareTask::new("parity", items, test, Vec::new()).unwrap()
}

fn facts() -> CompareTask {
    let cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Dakar"];
    let people = ["Anna", "Boris", "Chen", "Dara", "Emil", "Fay"];
    let passages = people
        .iter()
        .zip(cities)
        .map(|(p, c)| format!("{p} lives in {c}."))
        .collect();
    let items = people
        .iter()
        .zip(cities)
        .map(|(p, c)| Item {
            prompt: format!("Where does {p} live?"),
            answer: c.into(),
            candidates: cities.iter().map(|c| c.to_string()).collect(),
        })
        .collect();
    CompareTask::new("facts", items, 2, passages).unwrap()
}

fn run(task: &CompareTask, config: &CompareConfig) -> Result<CompareReport, CompareError> {
    let tokenizer = tokenizer();
    let device = Device::flex().autodiff();
    let model = model(&tokenizer, &device);
    let embedder = Letters(Device::flex());
    let general = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let inputs = Inputs::new(&model, &tokenizer, PromptFormat::Plain, &device)
        .with_eos(Some(0))
        .with_embedder(&embedder)
        .with_general_text(&general);
    let out = tempfile::tempdir().unwrap();
    compare(&inputs, task, config, out.path())
}

/// Log-probability of `answer` after `prompt`, computed by hand from one forward pass.
fn answer_logprob(model: &Llama, encoder: &Encoder, prompt: &str, answer: &str) -> f64 {
    let (sample, _) = encoder.pair(prompt, answer).unwrap();
    let cut = sample.first_target().unwrap();
    let device = Device::flex();
    let ids: Vec<i64> = sample.ids.iter().map(|&i| i as i64).collect();
    let n = ids.len();
    let input = Tensor::<1, Int>::from_ints(ids.as_slice(), &device).reshape([1, n]);
    let logits = model.token_logits(input, None);
    let logp: Vec<f32> = log_softmax(logits, 2).into_data().try_to_vec().unwrap();
    let vocab = logp.len() / n;
    (cut..n)
        .map(|t| logp[(t - 1) * vocab + sample.ids[t] as usize] as f64)
        .sum()
}

#[test]
fn zero_shot_scores_match_a_hand_computation() {
    let task = parity(20, 6);
    let config = CompareConfig::new(LoraConfig::new(4).into()).with_arms(vec![Arm::ZeroShot]);
    let report = run(&task, &config).unwrap();
    let tokenizer = tokenizer();
    let device = Device::flex().autodiff();
    let model = model(&tokenizer, &device).valid();
    let encoder = Encoder::new(&tokenizer, PromptFormat::Plain, 512, Some(0)).unwrap();
    let mut right = 0;
    let mut loss = 0.0;
    let mut tokens = 0;
    for item in &task.test {
        let scores: Vec<f64> = item
            .candidates
            .iter()
            .map(|c| answer_logprob(&model, &encoder, &item.prompt, c))
            .collect();
        let best = if scores[0] >= scores[1] { 0 } else { 1 };
        right += (item.candidates[best] == item.answer) as usize;
        loss -= answer_logprob(&model, &encoder, &item.prompt, &item.answer);
        tokens += encoder.answer_ids(&item.answer).unwrap().len();
    }
    let zero = &report.runs[0];
    assert_eq!(zero.accuracy, Some(right as f64 / task.test.len() as f64));
    let expected = loss / tokens as f64;
    assert!(
        (zero.answer_loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "{} vs {expected}",
        zero.answer_loss
    );
    assert_eq!(zero.general_ppl_change_pct, Some(0.0));
    assert_eq!(zero.trainable_params, 0);
}

#[test]
fn every_arm_runs_and_training_learns_the_answers() {
    let task = parity(40, 8);
    let lora = LoraConfig::new(4).with_target_modules(TargetModules::all_linear());
    let config = CompareConfig::new(lora.into())
        .with_k(3)
        .with_steps(30)
        .with_batch_size(4)
        .with_lr(Some(3e-2))
        .with_full_lr(Some(1e-2))
        .with_seeds(vec![1, 2]);
    let report = run(&task, &config).unwrap();
    let names: Vec<&str> = report.arms.iter().map(|a| a.arm.as_str()).collect();
    assert_eq!(names, ["zero-shot", "icl", "rag", "peft", "full"]);
    // Deterministic arms once, seeded arms once per seed.
    assert_eq!(report.runs.len(), 1 + 2 + 1 + 2 + 2);
    let arm = |name: &str| report.arms.iter().find(|a| a.arm == name).unwrap();
    // Demonstrations lengthen the prompt; training adds nothing to it.
    assert!(arm("icl").prompt_tokens > 2.0 * arm("zero-shot").prompt_tokens);
    assert!(arm("rag").prompt_tokens > 2.0 * arm("zero-shot").prompt_tokens);
    assert_eq!(arm("peft").prompt_tokens, arm("zero-shot").prompt_tokens);
    // Training on the task lowers the held-out answer loss from the random model's.
    let loss = |name: &str| {
        let runs: Vec<f64> = report
            .runs
            .iter()
            .filter(|r| r.arm == name)
            .map(|r| r.answer_loss)
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    // (LoRA on a 2-layer random model moves its answers less than retraining every weight.)
    assert!(
        loss("peft") < loss("zero-shot") - 0.4,
        "{} {}",
        loss("peft"),
        loss("zero-shot")
    );
    assert!(
        loss("full") < 0.5 * loss("zero-shot"),
        "{} {}",
        loss("full"),
        loss("zero-shot")
    );
    // Only the training arms change weights, have parameters and write something.
    assert_eq!(arm("icl").general_ppl_change_pct.unwrap().mean, 0.0);
    assert!(arm("peft").general_ppl_change_pct.unwrap().mean != 0.0);
    assert!(arm("peft").trainable_params > 0);
    assert!(arm("full").trainable_params > arm("peft").trainable_params);
    // The adapter's files: its f32 weights and a config of a few hundred bytes.
    let adapter = arm("peft").weights_bytes - 4 * arm("peft").trainable_params;
    assert!((100..16_000).contains(&adapter), "{adapter}");
    assert_eq!(arm("full").weights_bytes, 4 * arm("full").trainable_params);
    assert!(arm("peft").setup_seconds > 0.0);
    // The report round-trips and draws.
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let back: CompareReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("compare.json")).unwrap())
            .unwrap();
    assert_eq!(back.runs.len(), report.runs.len());
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 2 + 5);
    let svg = std::fs::read_to_string(dir.path().join("compare.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("full"));
}

#[test]
fn rag_on_a_knowledge_task_puts_passages_in_the_prompt() {
    let task = facts();
    let config = CompareConfig::new(LoraConfig::new(4).into())
        .with_arms(vec![Arm::ZeroShot, Arm::Rag])
        .with_k(2);
    let report = run(&task, &config).unwrap();
    assert_eq!(report.passages, 6);
    let tokens = |i: usize| report.runs[i].prompt_tokens;
    // Two passages of 4-5 tokens each, and "Context:".
    assert!(tokens(1) > tokens(0) + 8.0, "{} {}", tokens(1), tokens(0));
    assert_eq!(report.runs[1].accuracy.map(|a| a <= 1.0), Some(true));
}

#[test]
fn demonstrations_that_do_not_fit_are_dropped_with_a_warning() {
    let task = parity(20, 4);
    let roomy = CompareConfig::new(LoraConfig::new(4).into())
        .with_arms(vec![Arm::ZeroShot, Arm::Icl])
        .with_seeds(vec![1])
        .with_k(4);
    let full = run(&task, &roomy).unwrap();
    assert!(full.warnings.is_empty());
    let (alone, four) = (full.runs[0].prompt_tokens, full.runs[1].prompt_tokens);
    let demo = (four - alone) / 4.0;
    assert!(demo > 8.0, "{alone} {four}");
    // Room for about two demonstrations.
    let tight = (alone + 2.5 * demo) as usize;
    let cut = run(&task, &roomy.clone().with_seq_len(tight)).unwrap();
    assert_eq!(cut.warnings.len(), 1, "{:?}", cut.warnings);
    assert!(cut.warnings[0].contains("fewer than 4 demonstrations"));
    assert!(cut.runs[1].prompt_tokens < four);
    assert!(cut.runs[1].prompt_tokens > alone + demo);
    assert!(cut.runs[1].prompt_tokens <= tight as f64);
    // Not even one fits (the question alone does).
    let none = (alone + 0.5 * demo) as usize;
    let e = run(&task, &roomy.with_seq_len(none)).unwrap_err();
    assert!(
        e.to_string().contains("cannot fit even one demonstration"),
        "{e}"
    );
}

#[test]
fn bad_settings_are_refused() {
    let task = parity(10, 4);
    let base = CompareConfig::new(LoraConfig::new(4).into());
    let e = run(&task, &base.clone().with_k(7)).unwrap_err();
    assert!(
        e.to_string()
            .contains("k 7 is larger than the 6 training items"),
        "{e}"
    );
    let e = run(&facts(), &base.clone().with_arms(vec![Arm::Rag]).with_k(7)).unwrap_err();
    assert!(e.to_string().contains("corpus of 6 passages"), "{e}");
    let e = run(&task, &base.clone().with_arms(vec![Arm::Icl, Arm::Icl])).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
    let e = run(&task, &base.clone().with_seeds(vec![])).unwrap_err();
    assert!(e.to_string().contains("seed"), "{e}");
    let e = run(&task, &base.clone().with_seeds(vec![4, 4])).unwrap_err();
    assert!(e.to_string().contains("seed 4 is given twice"), "{e}");
    let twice = Item {
        prompt: "q".into(),
        answer: "a".into(),
        candidates: vec!["a".into(), "b".into(), "a".into()],
    };
    let e = CompareTask::new("t", vec![twice.clone(), twice], 1, vec![]).unwrap_err();
    assert!(e.to_string().contains("lists a candidate twice"), "{e}");
    let e = "lora,bogus"
        .split(',')
        .map(str::parse::<Arm>)
        .collect::<Result<Vec<_>, _>>();
    assert!(e.unwrap_err().to_string().contains("unknown arm 'bogus'"));
    // RAG without an embedder.
    let tokenizer = tokenizer();
    let device = Device::flex().autodiff();
    let model = model(&tokenizer, &device);
    let inputs = Inputs::new(&model, &tokenizer, PromptFormat::Plain, &device);
    let dir = tempfile::tempdir().unwrap();
    let e = compare(&inputs, &task, &base.with_arms(vec![Arm::Rag]), dir.path()).unwrap_err();
    assert!(e.to_string().contains("needs an embedder"), "{e}");
}
