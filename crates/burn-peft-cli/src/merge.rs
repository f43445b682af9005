//! `burn-peft merge`: adapters merged into the base weights, written as an HF model directory
//! (with no adapter: the model converted, e.g. from GGUF).

use std::path::PathBuf;

use burn_peft_adapters::AddAdapter;
use burn_peft_core::{PeftModel, parse_device};
use clap::Args;

use crate::common::{load_adapters, load_model};

/// Arguments of `burn-peft merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Model: HF directory, .gguf file, or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// PEFT adapter directory (LoRA, DoRA or IA3); repeat for several (their effects add up).
    /// None: the model is written as it is (a GGUF file becomes an HF directory that
    /// transformers loads).
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
    /// The HF model directory to write (config.json, model.safetensors, tokenizer).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a model already in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs the command; the error is the one-line message to print.
pub fn run(args: &MergeArgs) -> Result<(), String> {
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    if args.out.join("model.safetensors").exists() && !args.overwrite {
        return Err(format!(
            "{} already holds a model: pass --overwrite to replace it",
            args.out.display()
        ));
    }
    let pretrained = load_model(&args.model, args.cache_dir.clone(), &device)?;
    let mut model = pretrained.model;
    load_adapters(&mut model, &args.adapter)?;
    if model.prompt_adapter_name().is_some() {
        return Err(
            "prefix and prompt tuning add virtual tokens and cannot be merged into weights".into(),
        );
    }
    let model = model.merge_and_unload().map_err(|e| e.to_string())?;
    model
        .save_pretrained(
            &args.out,
            Some(&pretrained.tokenizer),
            pretrained.chat_template.as_deref(),
        )
        .map_err(|e| e.to_string())?;
    if args.adapter.is_empty() {
        println!("converted {}: wrote {}", args.model, args.out.display());
    } else {
        println!(
            "merged {} adapter(s) into {}: wrote {}",
            args.adapter.len(),
            args.model,
            args.out.display()
        );
    }
    Ok(())
}
