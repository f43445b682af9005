//! `burn-peft`: the command-line tool.
//!
//! ```text
//! burn-peft eval --model <dir> [--adapter <dir>]... [--merge] --text <file>
//!                [--max-tokens N] [--device D] [--json]
//! ```

mod eval;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("burn-peft: {message}");
            ExitCode::FAILURE
        }
    }
}
