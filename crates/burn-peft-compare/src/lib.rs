//! # burn-peft-compare
//!
//! Before anyone fine-tunes, they choose how to adapt the model at all. This crate runs the
//! choices side by side on one model, one task and one held-out set, and measures what each
//! costs, forgetting included:
//!
//! - **zero-shot**: the base model with no help, the floor;
//! - **ICL**: `k` demonstrations drawn at random (per seed) from the training items, as
//!   earlier chat turns in the model's layout;
//! - **RAG**: the `k` nearest items by embedding ([`burn_peft_retrieval`]): the nearest
//!   labelled examples as demonstrations for a skill task, the nearest passages as context for
//!   a knowledge task;
//! - **PEFT**: any adapter method ([`AdapterConfig`]) through [`burn_peft_train::Trainer`];
//! - **full** fine-tuning through the same trainer.
//!
//! Each arm's score is the share of held-out questions whose likelier answer among the
//! candidates is right (and exact match: every answer token the model's first choice), with a
//! 95% interval over seeds; beside it the general-text perplexity change (forgetting; zero for
//! the arms that change no weight), training time, peak memory, prompt tokens and latency per
//! query, trainable parameters and the size of what training writes. [`CompareReport::write`]
//! saves `compare.json`, `compare.md` and `compare.svg`.
//!
//! ```
//! use burn::tensor::Device;
//! use burn_peft_adapters::LoraConfig;
//! use burn_peft_compare::{Arm, CompareConfig, CompareTask, Inputs, Item, compare};
//! use burn_peft_models::{LlamaConfig, TextTokenizer};
//! use burn_peft_train::PromptFormat;
//!
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama/tokenizer.json");
//! let tokenizer = TextTokenizer::from_file(path.as_ref())?;
//! let device = Device::flex().autodiff();
//! let model = LlamaConfig::tiny(tokenizer.vocab_size()).init(&device);
//! let items = (0..12)
//!     .map(|i| Item {
//!         prompt: format!("Is {i} even?"),
//!         answer: if i % 2 == 0 { "yes" } else { "no" }.into(),
//!         candidates: vec!["yes".into(), "no".into()],
//!     })
//!     .collect();
//! let task = CompareTask::new("parity", items, 4, Vec::new())?;
//! let config = CompareConfig::new(LoraConfig::new(4).into())
//!     .with_arms(vec![Arm::ZeroShot, Arm::Icl, Arm::Peft])
//!     .with_steps(2)
//!     .with_seeds(vec![1, 2]);
//! let inputs = Inputs::new(&model, &tokenizer, PromptFormat::Plain, &device);
//! let out = tempfile::tempdir()?;
//! let report = compare(&inputs, &task, &config, out.path())?;
//! assert_eq!(report.arms.len(), 3);
//! report.write(out.path())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod report;
mod task;

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use burn_peft_adapters::{AdapterConfig, AddAdapter};
use burn_peft_core::TrainableParameters;
use burn_peft_core::limits::{peak_rss, reset_peak_rss};
use burn_peft_models::{CausalLm, TextTokenizer};
use burn_peft_optim::{PeftOptimizerConfig, make_trainable};
use burn_peft_retrieval::{Embedder, ExactIndex, Retriever};
use burn_peft_train::{
    Dataset, Encoder, PromptFormat, Sample, Task, TrainConfig, Trainer, WeightsIo, score_samples,
};

pub use report::{ArmSummary, CompareReport, Estimate, RunResult};
pub use task::{CompareTask, Item, TASK_SEED};

/// Everything that can go wrong in a comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A task that cannot be compared on (missing columns, too few items, bad answers).
    #[error("{0}")]
    Task(String),
    /// Settings that do not fit the task or each other.
    #[error("invalid comparison: {0}")]
    Config(String),
    /// From the training crate (data, training).
    #[error(transparent)]
    Train(#[from] burn_peft_train::TrainError),
    /// From retrieval.
    #[error(transparent)]
    Retrieval(#[from] burn_peft_retrieval::RetrievalError),
    /// From the adapters or the optimizer.
    #[error(transparent)]
    Peft(#[from] burn_peft_core::PeftError),
    /// A report that could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, CompareError>;

/// One way of adapting the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The base model, no help.
    ZeroShot,
    /// Demonstrations in the prompt.
    Icl,
    /// Retrieved demonstrations or passages in the prompt.
    Rag,
    /// An adapter trained with [`CompareConfig::adapter`]'s method.
    Peft,
    /// Every weight trained.
    Full,
}

impl Arm {
    /// Every arm, cheapest first.
    pub const ALL: [Arm; 5] = [Arm::ZeroShot, Arm::Icl, Arm::Rag, Arm::Peft, Arm::Full];

    /// The arm's name in flags and reports (`zero-shot`, `icl`, `rag`, `peft`, `full`).
    pub fn name(self) -> &'static str {
        match self {
            Arm::ZeroShot => "zero-shot",
            Arm::Icl => "icl",
            Arm::Rag => "rag",
            Arm::Peft => "peft",
            Arm::Full => "full",
        }
    }

    /// Whether the arm trains weights (and so can forget).
    pub fn trains(self) -> bool {
        matches!(self, Arm::Peft | Arm::Full)
    }

    /// Whether the arm's result depends on the seed (the others run once).
    pub fn seeded(self) -> bool {
        matches!(self, Arm::Icl | Arm::Peft | Arm::Full)
    }
}

impl std::str::FromStr for Arm {
    type Err = CompareError;

    /// Parses an arm's name; `lora` (or any method name: `dora`, `ia3`, `prefix`, `prompt`)
    /// is the PEFT arm.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "zero-shot" | "zeroshot" | "base" => Arm::ZeroShot,
            "icl" => Arm::Icl,
            "rag" => Arm::Rag,
            "peft" | "lora" | "dora" | "ia3" | "prefix" | "prompt" => Arm::Peft,
            "full" => Arm::Full,
            other => {
                return Err(CompareError::Config(format!(
                    "unknown arm '{other}' (zero-shot, icl, rag, lora, full)"
                )));
            }
        })
    }
}

/// How the arms run.
///
/// ```
/// use burn_peft_adapters::LoraConfig;
/// use burn_peft_compare::{Arm, CompareConfig};
/// let config = CompareConfig::new(LoraConfig::new(8).into()).with_k(2).with_steps(50);
/// assert_eq!(config.arms, Arm::ALL.to_vec());
/// assert_eq!((config.k, config.steps), (2, 50));
/// ```
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// The arms, in report order.
    pub arms: Vec<Arm>,
    /// Seeds of the seeded arms (ICL's draw, training's initialization and data order).
    pub seeds: Vec<u64>,
    /// Demonstrations (ICL, RAG on a skill task) or passages (RAG on a knowledge task) per
    /// prompt; fewer when they do not fit [`seq_len`](Self::seq_len).
    pub k: usize,
    /// The longest sample in tokens, prompts included.
    pub seq_len: usize,
    /// The PEFT arm's method.
    pub adapter: AdapterConfig,
    /// Optimizer steps of each training arm.
    pub steps: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// The PEFT arm's learning rate; `None`: PEFT's usual 2e-4
    /// ([`PeftOptimizerConfig::default_learning_rate`]).
    pub lr: Option<f64>,
    /// The full arm's learning rate; `None`: 2e-5, full fine-tuning's usual rate (a rate that
    /// suits an adapter wrecks a full model).
    pub full_lr: Option<f64>,
    /// Samples per scoring batch.
    pub eval_batch_size: usize,
    /// General-text samples (of `seq_len` tokens) that measure forgetting.
    pub general_samples: usize,
    /// Training progress bars on a terminal.
    pub progress: bool,
}

impl CompareConfig {
    /// Every arm, seeds 1 to 3, `k` 4, 512 tokens, 100 steps of batch 4, PEFT with `adapter`.
    pub fn new(adapter: AdapterConfig) -> Self {
        Self {
            arms: Arm::ALL.to_vec(),
            seeds: vec![1, 2, 3],
            k: 4,
            seq_len: 512,
            adapter,
            steps: 100,
            batch_size: 4,
            lr: None,
            full_lr: None,
            eval_batch_size: 8,
            general_samples: 16,
            progress: false,
        }
    }

    /// Sets [`arms`](Self::arms).
    pub fn with_arms(mut self, arms: Vec<Arm>) -> Self {
        self.arms = arms;
        self
    }

    /// Sets [`seeds`](Self::seeds).
    pub fn with_seeds(mut self, seeds: Vec<u64>) -> Self {
        self.seeds = seeds;
        self
    }

    /// Sets [`k`](Self::k).
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Sets [`seq_len`](Self::seq_len).
    pub fn with_seq_len(mut self, seq_len: usize) -> Self {
        self.seq_len = seq_len;
        self
    }

    /// Sets [`steps`](Self::steps).
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Sets [`batch_size`](Self::batch_size).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`lr`](Self::lr).
    pub fn with_lr(mut self, lr: Option<f64>) -> Self {
        self.lr = lr;
        self
    }

    /// Sets [`full_lr`](Self::full_lr).
    pub fn with_full_lr(mut self, lr: Option<f64>) -> Self {
        self.full_lr = lr;
        self
    }

    /// Sets [`progress`](Self::progress).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    fn check(&self, task: &CompareTask, retrieval: bool) -> Result<()> {
        let bad = |m: String| Err(CompareError::Config(m));
        if self.arms.is_empty() {
            return bad("no arms to compare".into());
        }
        if let Some(a) = (1..self.arms.len()).find(|&i| self.arms[..i].contains(&self.arms[i])) {
            return bad(format!("arm '{}' is given twice", self.arms[a].name()));
        }
        if self.seeds.is_empty() {
            return bad("at least one seed is needed".into());
        }
        if let Some(i) = (1..self.seeds.len()).find(|&i| self.seeds[..i].contains(&self.seeds[i])) {
            return bad(format!("seed {} is given twice", self.seeds[i]));
        }
        if self.seq_len < 8 || self.steps == 0 || self.batch_size == 0 || self.eval_batch_size == 0
        {
            return bad("seq_len must be at least 8; steps and batch sizes at least 1".into());
        }
        let needs_k = self.arms.iter().any(|a| matches!(a, Arm::Icl | Arm::Rag));
        if needs_k && self.k == 0 {
            return bad("k must be at least 1 for the icl and rag arms".into());
        }
        if self.arms.contains(&Arm::Icl) && self.k > task.train.len() {
            return bad(format!(
                "k {} is larger than the {} training items ICL draws from",
                self.k,
                task.train.len()
            ));
        }
        if self.arms.contains(&Arm::Rag) {
            if !retrieval {
                return bad("the rag arm needs an embedder (Inputs::with_embedder)".into());
            }
            let (corpus, what) = if task.passages.is_empty() {
                (task.train.len(), "training items")
            } else {
                (task.passages.len(), "passages")
            };
            if self.k > corpus {
                return bad(format!(
                    "k {} is larger than the corpus of {corpus} {what}",
                    self.k
                ));
            }
        }
        Ok(())
    }
}

/// The model and what goes with it. The model lives on an autodiff device (the training
/// arms train clones of it; the others use [`Module::valid`]).
pub struct Inputs<'a, M> {
    /// The base model.
    pub model: &'a M,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// How prompts are laid out (the model's chat layout).
    pub format: PromptFormat,
    /// The token that ends a plain-format answer and pads batches.
    pub eos: Option<u32>,
    /// The autodiff device the model lives on.
    pub device: &'a Device,
    /// The sentence embedder of the RAG arm.
    pub embedder: Option<&'a dyn Embedder>,
    /// General text whose perplexity change after training measures forgetting.
    pub general_text: Option<&'a str>,
}

impl<'a, M> Inputs<'a, M> {
    /// The model, its tokenizer and prompt layout, on `device`; no embedder, no general text.
    pub fn new(
        model: &'a M,
        tokenizer: &'a TextTokenizer,
        format: PromptFormat,
        device: &'a Device,
    ) -> Self {
        Self {
            model,
            tokenizer,
            format,
            eos: None,
            device,
            embedder: None,
            general_text: None,
        }
    }

    /// Sets [`eos`](Self::eos).
    pub fn with_eos(mut self, eos: Option<u32>) -> Self {
        self.eos = eos;
        self
    }

    /// Sets [`embedder`](Self::embedder).
    pub fn with_embedder(mut self, embedder: &'a dyn Embedder) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Sets [`general_text`](Self::general_text).
    pub fn with_general_text(mut self, text: &'a str) -> Self {
        self.general_text = Some(text);
        self
    }
}

/// Runs every arm of `config` on `task` (training arms write their runs under `out`) and
/// returns the report. Deterministic arms (zero-shot, RAG) run once; the others once per seed.
pub fn compare<M: CausalLm + AddAdapter>(
    inputs: &Inputs<'_, M>,
    task: &CompareTask,
    config: &CompareConfig,
    out: &Path,
) -> Result<CompareReport> {
    config.check(task, inputs.embedder.is_some())?;
    let encoder = Encoder::new(
        inputs.tokenizer,
        inputs.format.clone(),
        config.seq_len,
        inputs.eos,
    )?;
    let pad = inputs.eos.unwrap_or(0);
    let general = match inputs.general_text {
        Some(text) => {
            let plain = Encoder::new(
                inputs.tokenizer,
                PromptFormat::Plain,
                config.seq_len,
                inputs.eos,
            )?;
            let mut d = Dataset::from_text(text, &plain)?;
            if d.samples.is_empty() {
                return Err(CompareError::Config(
                    "the general text is shorter than two tokens".into(),
                ));
            }
            d.samples.truncate(config.general_samples.max(1));
            Some(d)
        }
        None => None,
    };
    let run = RunContext {
        inputs,
        task,
        config,
        encoder: &encoder,
        pad,
        general: general.as_ref(),
    };
    // Every prompt of the arms that train nothing, and the index, before any arm runs: a
    // prompt that cannot hold one demonstration is refused before any work is done.
    let mut index_seconds = 0.0;
    let rag = match inputs.embedder {
        Some(embedder) if config.arms.contains(&Arm::Rag) => {
            let start = Instant::now();
            let docs = if task.passages.is_empty() {
                task.train.iter().map(|i| i.prompt.clone()).collect()
            } else {
                task.passages.clone()
            };
            let index = ExactIndex::build(embedder, docs)?;
            index_seconds = start.elapsed().as_secs_f64();
            Some((index, embedder))
        }
        _ => None,
    };
    let rag = rag.as_ref().map(|(index, embedder)| (index, *embedder));
    let seeds_of = |arm: Arm| -> Vec<Option<u64>> {
        if arm.seeded() {
            config.seeds.iter().copied().map(Some).collect()
        } else {
            vec![None]
        }
    };
    let (zero_shot, _) = run.prompts(Arm::ZeroShot, None, None)?;
    let mut warnings = Vec::new();
    let mut prepared = Vec::new();
    for &arm in &config.arms {
        if !matches!(arm, Arm::Icl | Arm::Rag) {
            continue;
        }
        for seed in seeds_of(arm) {
            let (prompts, dropped) = run.prompts(arm, seed, rag)?;
            if dropped > 0 {
                warnings.push(format!(
                    "{}{}: {dropped} of {} prompts hold fewer than {} {} to fit {} tokens",
                    arm.name(),
                    seed.map_or(String::new(), |s| format!(" (seed {s})")),
                    task.test.len(),
                    config.k,
                    if arm == Arm::Rag && !task.passages.is_empty() {
                        "passages"
                    } else {
                        "demonstrations"
                    },
                    config.seq_len
                ));
            }
            prepared.push((arm, seed, prompts));
        }
    }
    let mut runs = Vec::new();
    for &arm in &config.arms {
        for seed in seeds_of(arm) {
            let measured = reset_peak_rss();
            let result = match arm {
                Arm::ZeroShot => run.score(&inputs.model.valid(), &zero_shot)?,
                Arm::Icl | Arm::Rag => {
                    let prompts = prepared
                        .iter()
                        .find(|(a, s, _)| *a == arm && *s == seed)
                        .map(|(_, _, p)| p)
                        .ok_or_else(|| CompareError::Config("prompts not prepared".into()))?;
                    let mut r = run.score(&inputs.model.valid(), prompts)?;
                    if arm == Arm::Rag {
                        r.setup_seconds = index_seconds;
                    }
                    r
                }
                Arm::Peft | Arm::Full => run.train(arm, seed.unwrap_or(0), &zero_shot, out)?,
            };
            runs.push(RunResult {
                arm: arm.name().into(),
                seed,
                peak_rss_bytes: if measured { peak_rss() } else { None },
                ..result
            });
        }
    }
    Ok(CompareReport::new(task, config, runs, warnings))
}

/// What every arm's run reads.
struct RunContext<'a, M> {
    inputs: &'a Inputs<'a, M>,
    task: &'a CompareTask,
    config: &'a CompareConfig,
    encoder: &'a Encoder<'a>,
    pad: u32,
    general: Option<&'a Dataset>,
}

impl<M: CausalLm + AddAdapter> RunContext<'_, M> {
    /// Each test item as a sample in `arm`'s prompt, and how many prompts had to drop
    /// demonstrations or passages to fit.
    fn prompts(
        &self,
        arm: Arm,
        seed: Option<u64>,
        rag: Option<(&ExactIndex, &dyn Embedder)>,
    ) -> Result<(Vec<(Sample, &Item)>, usize)> {
        let (task, k) = (self.task, self.config.k);
        let icl_demos: Vec<&Item> = match (arm, seed) {
            (Arm::Icl, Some(seed)) => {
                let mut order: Vec<usize> = (0..task.train.len()).collect();
                burn_peft_core::SplitMix64::new(seed).shuffle(&mut order);
                order[..k].iter().map(|&i| &task.train[i]).collect()
            }
            _ => Vec::new(),
        };
        let mut dropped = 0;
        let mut out = Vec::with_capacity(task.test.len());
        for (n, item) in task.test.iter().enumerate() {
            // The context, most useful first: demonstrations, or passages.
            let (mut demos, mut passages): (Vec<&Item>, Vec<&str>) = match arm {
                Arm::Icl => (icl_demos.clone(), Vec::new()),
                Arm::Rag => {
                    let (index, embedder) = rag.ok_or_else(|| {
                        CompareError::Config("the rag arm needs an embedder".into())
                    })?;
                    let hits = index.retrieve(embedder, &item.prompt, k)?;
                    if task.passages.is_empty() {
                        (
                            hits.iter().map(|h| &task.train[h.doc]).collect(),
                            Vec::new(),
                        )
                    } else {
                        (
                            Vec::new(),
                            hits.iter().map(|h| index.document(h.doc)).collect(),
                        )
                    }
                }
                _ => (Vec::new(), Vec::new()),
            };
            let wanted = demos.len() + passages.len();
            loop {
                let prompt = if passages.is_empty() {
                    item.prompt.clone()
                } else {
                    format!("Context:\n{}\n\n{}", passages.join("\n\n"), item.prompt)
                };
                // The most useful demonstration goes last, nearest the question.
                let turns: Vec<(&str, &str)> = demos
                    .iter()
                    .rev()
                    .map(|d| (d.prompt.as_str(), d.answer.as_str()))
                    .collect();
                let (sample, shortened) = self.encoder.few_shot(&turns, &prompt, &item.answer)?;
                let context = demos.len() + passages.len();
                if !shortened || context == 0 {
                    if context < wanted {
                        dropped += 1;
                    }
                    out.push((sample, item));
                    break;
                }
                if context == 1 {
                    return Err(CompareError::Config(format!(
                        "{}: held-out item {} cannot fit even one {} in {} tokens (raise the \
                         sequence length)",
                        arm.name(),
                        n + 1,
                        if passages.is_empty() {
                            "demonstration"
                        } else {
                            "passage"
                        },
                        self.config.seq_len
                    )));
                }
                if passages.is_empty() {
                    demos.pop();
                } else {
                    passages.pop();
                }
            }
        }
        Ok((out, dropped))
    }

    /// Scores each prompt's answer among its candidates with `model` (in inference mode).
    fn score<V: CausalLm>(&self, model: &V, prompts: &[(Sample, &Item)]) -> Result<RunResult> {
        let start = Instant::now();
        let mut samples = Vec::new();
        let mut spans = Vec::with_capacity(prompts.len());
        for (sample, item) in prompts {
            let cut = sample.first_target().unwrap_or(sample.ids.len());
            let from = samples.len();
            if item.candidates.is_empty() {
                samples.push(sample.clone());
            } else {
                for c in &item.candidates {
                    samples.push(sample.with_answer(&self.encoder.answer_ids(c)?));
                }
            }
            spans.push((from, samples.len(), cut));
        }
        let device = self.inputs.device.clone().without_autodiff();
        let scores = score_samples(
            model,
            &samples,
            self.config.eval_batch_size,
            self.pad,
            &device,
        );
        let seconds = start.elapsed().as_secs_f64();
        let (mut right, mut ranked, mut exact, mut logprob, mut tokens) = (0, 0, 0, 0.0, 0);
        for ((_, item), &(from, to, _)) in prompts.iter().zip(&spans) {
            let own = &scores[from..to];
            let truth = if item.candidates.is_empty() {
                0
            } else {
                ranked += 1;
                let best = (0..own.len())
                    .max_by(|&a, &b| own[a].logprob.total_cmp(&own[b].logprob))
                    .unwrap_or(0);
                let truth = item
                    .candidates
                    .iter()
                    .position(|c| *c == item.answer)
                    .unwrap_or(0);
                right += (best == truth) as usize;
                truth
            };
            exact += own[truth].exact as usize;
            logprob += own[truth].logprob;
            tokens += own[truth].tokens;
        }
        let n = prompts.len().max(1) as f64;
        Ok(RunResult {
            arm: String::new(),
            seed: None,
            accuracy: (ranked > 0).then(|| right as f64 / ranked as f64),
            exact_match: exact as f64 / n,
            answer_loss: -logprob / tokens.max(1) as f64,
            general_ppl_change_pct: Some(0.0),
            setup_seconds: 0.0,
            peak_rss_bytes: None,
            prompt_tokens: spans.iter().map(|s| s.2 as f64).sum::<f64>() / n,
            ms_per_query: 1e3 * seconds / n,
            trainable_params: 0,
            weights_bytes: 0,
            final_train_loss: None,
        })
    }

    /// Trains a copy of the model (`Arm::Peft`: an adapter; `Arm::Full`: every weight) on the
    /// training items (and a knowledge task's passages, as text), then scores it zero-shot.
    fn train(
        &self,
        arm: Arm,
        seed: u64,
        prompts: &[(Sample, &Item)],
        out: &Path,
    ) -> Result<RunResult> {
        let (task, config) = (self.task, self.config);
        let mut samples = Vec::new();
        for item in &task.train {
            samples.push(self.encoder.pair(&item.prompt, &item.answer)?.0);
        }
        for p in &task.passages {
            samples.extend(self.encoder.text(p)?);
        }
        let data = Dataset {
            samples,
            task: Task::Completion,
            label_ids: Vec::new(),
            truncated: 0,
        };
        let full = arm == Arm::Full;
        self.inputs.device.seed(seed);
        let mut model = self.inputs.model.clone();
        let dir = out.join(format!("{}-seed{seed}", arm.name()));
        let weights = if full {
            model = make_trainable(model);
            no_weights()
        } else {
            let mut adapter = config.adapter.clone();
            if let AdapterConfig::Lora(c) = &mut adapter {
                c.init_seed = Some(seed);
            }
            model.add_adapter("default", &adapter)?;
            WeightsIo::adapter("default")
        };
        let params = TrainableParameters::of(&model);
        let optim = PeftOptimizerConfig::new(config.steps)
            .with_learning_rate(
                if full { config.full_lr } else { config.lr }
                    .unwrap_or(PeftOptimizerConfig::default_learning_rate(full)),
            )
            .init::<M>()?;
        let train_config = TrainConfig::new(config.steps, config.batch_size)
            .with_seed(seed)
            .with_progress(config.progress)
            .with_eval_batch_size(config.eval_batch_size);
        let mut trainer = Trainer::new(train_config, &dir, self.pad, weights)?;
        if let Some(g) = self.general {
            trainer = trainer.with_general_eval(g);
        }
        let (trained, summary) =
            trainer.fit(model, optim, &data, None, self.inputs.device, false)?;
        let mut result = self.score(&trained.valid(), prompts)?;
        result.setup_seconds = summary.train_seconds;
        result.general_ppl_change_pct = summary
            .general_loss_before
            .zip(summary.general_loss_after)
            .map(|(b, a)| 100.0 * ((a - b).exp() - 1.0));
        result.trainable_params = params.trainable as u64;
        result.weights_bytes = if full {
            4 * params.trainable as u64
        } else {
            adapter_size(&dir)
        };
        result.final_train_loss = Some(summary.final_loss);
        Ok(result)
    }
}

/// A full fine-tuning run's weights are not written (the report gives their size); nothing to
/// resume from.
fn no_weights<'a, M: 'a>() -> WeightsIo<'a, M> {
    WeightsIo {
        save: Box::new(|_, _| Ok(())),
        load: Box::new(|m, _| Ok(m)),
        check: None,
    }
}

/// Bytes of PEFT's adapter files in `dir` (`adapter_model.safetensors`,
/// `adapter_config.json`), not the run's logs.
fn adapter_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("adapter_"))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
