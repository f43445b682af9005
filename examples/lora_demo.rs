//! LoRA in a few lines: load the committed tiny Llama fixture (an HF model directory made by
//! transformers), attach LoRA to every linear layer, train it on a text, save the adapter in
//! PEFT's format and load it back.
//!
//! ```text
//! cargo run --release --example lora_demo [-- --device flex --steps 60 --out target/lora-demo]
//! ```

use std::path::PathBuf;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use burn_peft::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("lora_demo: {e}");
        std::process::exit(1);
    }
}

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model_dir = fixtures.join("tiny-llama");
    let device = parse_device(&flag("--device", "flex"))?;
    let steps: usize = flag("--steps", "60").parse()?;
    let out = PathBuf::from(flag("--out", "target/lora-demo"));
    let train = device.clone().autodiff();
    train.seed(0);

    let tokenizer = TextTokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let ids = tokenizer.encode(&std::fs::read_to_string(fixtures.join("text.txt"))?)?;
    let mut model = Llama::from_pretrained(&model_dir, &train)?;
    let config = LoraConfig::new(8)
        .with_lora_alpha(16.0)
        .with_target_modules(TargetModules::all_linear());
    let adapted = model.add_lora("default", &config)?;
    println!(
        "LoRA on {} modules; {}",
        adapted.len(),
        TrainableParameters::of(&model)
    );

    let (seq, batch) = (64usize, 4usize);
    let windows: Vec<&[u32]> = ids.chunks_exact(seq).collect();
    let eval_ids = &ids[..seq];
    let before = model.valid().sequence_loss(eval_ids, &device)?;
    let mut optim = AdamWConfig::new().init();
    for step in 0..steps {
        let chunk: Vec<i64> = (0..batch)
            .flat_map(|b| {
                windows[(step * batch + b) % windows.len()]
                    .iter()
                    .map(|&t| t as i64)
            })
            .collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(chunk, [batch, seq]), &train);
        let logits = model.forward(input.clone(), None);
        let loss = Llama::causal_lm_loss(logits, input, None);
        if step % 10 == 0 || step + 1 == steps {
            println!(
                "step {step:>3}  loss {:.4}",
                loss.clone().into_scalar::<f32>()
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = model.valid().sequence_loss(eval_ids, &device)?;
    println!("loss on the first {seq} tokens: {before:.4} -> {after:.4}");

    save_adapter(&model, "default", &out)?;
    let mut reloaded = Llama::from_pretrained(&model_dir, &device)?;
    load_adapter(&mut reloaded, &out, "default")?;
    let again = reloaded.sequence_loss(eval_ids, &device)?;
    println!(
        "saved to {} (PEFT format); reloaded loss {again:.4}",
        out.display()
    );
    println!(
        "evaluate it: cargo run --release -p burn-peft-cli -- eval --model {} --adapter {} --text {}",
        model_dir.display(),
        out.display(),
        fixtures.join("text.txt").display()
    );
    Ok(())
}
