//! `burn-peft generate`.

use std::io::Write;
use std::path::PathBuf;

use burn_peft_core::{Precision, parse_device};
use burn_peft_models::GenerationConfig;
use clap::Args;

use crate::common::load_model;

/// Arguments of `burn-peft generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: HF directory, .gguf file, or pypi:<package>==<version>#<path in the wheel>.
    #[arg(long)]
    pub model: String,
    /// PEFT adapter directory; repeat for several (all active).
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (ChatML).
    #[arg(long)]
    pub chat: bool,
    /// Upper bound on generated tokens.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 is greedy; above 0 samples.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Precision of the weights and activations: f32, bf16 or f16 (adapters stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Asset cache directory (default: $BURN_PEFT_CACHE or ~/.cache/burn-peft).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Runs the command, streaming the answer to stdout.
pub fn run(args: &GenerateArgs) -> Result<(), String> {
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    args.dtype.check(&device).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut p = load_model(&args.model, args.cache_dir.clone(), &device)?;
    crate::common::load_adapters(&mut p.model, &args.adapter)?;
    p.model = crate::common::for_inference(p.model, args.dtype);
    let load_s = started.elapsed().as_secs_f64();
    let text = if args.chat {
        p.chat_prompt(&args.prompt).map_err(|e| e.to_string())?
    } else {
        args.prompt.clone()
    };
    let ids = p.tokenizer.encode(&text).map_err(|e| e.to_string())?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_tokens: p.stop_tokens(),
    };
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut stdout = std::io::stdout();
    let started = std::time::Instant::now();
    let mut first_token_s = None;
    let out = p
        .model
        .generate(&ids, &config, &device, |token| {
            first_token_s.get_or_insert(started.elapsed().as_secs_f64());
            generated.push(token);
            // Decode everything so far and print what is new: multi-byte characters can span
            // several tokens.
            if let Ok(text) = p.tokenizer.decode(&generated)
                && text.len() > printed.len()
                && text.starts_with(printed.as_str())
            {
                let _ = write!(stdout, "{}", &text[printed.len()..]);
                let _ = stdout.flush();
                printed = text;
            }
        })
        .map_err(|e| e.to_string())?;
    let total = started.elapsed().as_secs_f64();
    println!();
    let rest = out.len().saturating_sub(1);
    let decode_rate = match first_token_s {
        Some(first) if rest > 0 && total > first => rest as f64 / (total - first),
        _ => 0.0,
    };
    let context = p.model.config.context_length();
    if out.len() < args.max_new_tokens && ids.len() + out.len() >= context {
        eprintln!("[stopped: the model's context of {context} tokens is full]");
    }
    eprintln!(
        "[{} prompt tokens, {} generated; load {load_s:.1} s, first token {:.2} s, {decode_rate:.1} tokens/s after]",
        ids.len(),
        out.len(),
        first_token_s.unwrap_or(0.0),
    );
    Ok(())
}
