//! Which way to adapt SmolLM2-135M-Instruct to Rotten Tomatoes reviews: zero-shot, four
//! demonstrations in the prompt, the four nearest reviews retrieved with MiniLM, LoRA, or full
//! fine-tuning, compared through the library (the `burn-peft compare` command makes the same
//! calls).
//!
//! ```text
//! cargo run --release --example compare [-- --steps 50 --test 50 --seeds 2 --out runs/cmp]
//! ```
//!
//! The model, the embedder, the reviews and Hamlet (the general text whose perplexity measures
//! forgetting) are fetched into the asset cache once. It prints the table and writes
//! compare.json, compare.md and compare.svg.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_peft::adapters::LoraConfig;
use burn_peft::assets::{AssetCache, HAMLET_TXT, MINILM_DIR, ROTTEN_TOMATOES, SMOLLM2_GGUF};
use burn_peft::compare::{CompareConfig, CompareTask, Inputs, compare};
use burn_peft::models::Pretrained;
use burn_peft::retrieval::BertEmbedder;
use burn_peft::train::PromptFormat;

fn main() {
    if let Err(e) = run() {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn flag<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value")),
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = flag("--steps", 50)?;
    let test: usize = flag("--test", 50)?;
    let seeds: u64 = flag("--seeds", 2)?;
    let out: PathBuf = flag("--out", PathBuf::from("runs/compare-example"))?;
    burn_peft::train::check_fresh_output(&out)?;
    let cache = AssetCache::from_env(None);
    let device = Device::default();
    let train_device = device.clone().autodiff();
    let model = Pretrained::load(&cache.resolve(SMOLLM2_GGUF)?, &train_device)?;
    let mut embedder = BertEmbedder::from_pretrained(&cache.resolve(MINILM_DIR)?, &device)?;
    embedder.progress = true;
    let task = CompareTask::rotten_tomatoes(&cache.resolve(ROTTEN_TOMATOES)?, test)?
        .with_train_limit(1000);
    let general = burn_peft::train::read_text(&cache.resolve(HAMLET_TXT)?)?;
    let inputs = Inputs::new(
        &model.model,
        &model.tokenizer,
        PromptFormat::ChatMl { system: None },
        &train_device,
    )
    .with_eos(model.model.config.eos_token_id)
    .with_embedder(&embedder)
    .with_general_text(&general);
    let config = CompareConfig::new(LoraConfig::new(8).into())
        .with_steps(steps)
        .with_seeds((1..=seeds).collect())
        .with_seq_len(384)
        .with_progress(true);
    let report = compare(&inputs, &task, &config, &out)?;
    report.write(&out)?;
    print!("{}", report.markdown());
    println!("written to {}", out.display());
    Ok(())
}
