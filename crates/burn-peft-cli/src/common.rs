//! What several subcommands share: model specs and adapter loading.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Device;
use burn_peft_adapters::AddAdapter;
use burn_peft_assets::AssetCache;
use burn_peft_core::{DeviceSpec, PeftModel, Precision};
use burn_peft_models::{Llama, Pretrained};
use burn_peft_train::{CsvTask, PromptFormat};

/// Resolves a model spec (HF directory, `.gguf` file, or `pypi:...`) and loads it.
pub fn load_model(
    spec: &str,
    cache_dir: Option<PathBuf>,
    device: &Device,
) -> Result<Pretrained, String> {
    let path = AssetCache::from_env(cache_dir)
        .resolve(spec)
        .map_err(|e| e.to_string())?;
    Pretrained::load(&path, device).map_err(|e| e.to_string())
}

/// Loads each adapter directory as `adapter0`, `adapter1`, ... and makes them all active (the
/// linear-layer ones through `set_adapter`; a prefix or prompt adapter is active once loaded).
pub fn load_adapters(model: &mut Llama, dirs: &[PathBuf]) -> Result<(), String> {
    let mut names = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("adapter{i}");
        model
            .load_adapter(dir, &name)
            .map_err(|e| format!("adapter {}: {e}", dir.display()))?;
        names.push(name);
    }
    let prompt = model.prompt_adapter_name();
    let linear: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| prompt.as_deref() != Some(*n))
        .collect();
    if !linear.is_empty() {
        model.set_adapter(&linear).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `model` for inference in `precision`: nothing trains, so every base weight (adapters and
/// merged updates included in it) is stored in that type; adapters stay f32.
pub fn for_inference(model: Llama, precision: Precision) -> Llama {
    let mut model = model.no_grad();
    model.set_precision(precision);
    model
}

/// What `--gradient-checkpointing` recomputes in the backward pass instead of keeping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Checkpointing {
    /// Every decoder layer: the forward pass keeps the layers' inputs only (as HF's
    /// `gradient_checkpointing_enable()`).
    Layers,
    /// burn's balanced strategy: memory-bound operations (element-wise, norms, activations);
    /// matrix products are kept.
    Ops,
}

impl Checkpointing {
    /// The name `--gradient-checkpointing` takes.
    pub fn name(self) -> &'static str {
        match self {
            Checkpointing::Layers => "layers",
            Checkpointing::Ops => "ops",
        }
    }
}

/// The autodiff device training runs on, with burn's balanced gradient checkpointing for
/// [`Checkpointing::Ops`].
pub fn train_device(device: &Device, checkpointing: Option<Checkpointing>) -> Device {
    let device = device.clone().autodiff();
    if checkpointing == Some(Checkpointing::Ops) {
        device.gradient_checkpointing()
    } else {
        device
    }
}

/// A data spec's file name without folders and extensions (`data/train.jsonl.bz2` → `train`).
pub fn file_stem(spec: &str) -> String {
    let file = spec.rsplit(['/', '#']).next().unwrap_or(spec);
    file.split('.').next().unwrap_or(file).to_string()
}

/// An error as the one line a subcommand prints.
pub fn err(e: impl ToString) -> String {
    e.to_string()
}

/// `--batch-threads`, or the device's default for this batch size. Full fine-tuning defaults
/// to 1: each slice holds its own gradient of every weight (0.5 GiB at the SmolLM2-135M shape),
/// which cost more time and memory than the overlap saved.
pub fn batch_threads(
    requested: Option<usize>,
    device: DeviceSpec,
    batch_size: usize,
    full_fine_tuning: bool,
) -> Result<usize, String> {
    match requested {
        Some(0) => Err("--batch-threads must be at least 1".into()),
        Some(n) => Ok(n),
        None if full_fine_tuning => Ok(1),
        None => Ok(device.default_batch_threads(batch_size)),
    }
}

/// How prompts and answers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ChatML when the model has a ChatML chat template, else plain.
    Auto,
    /// The model's ChatML chat turns.
    Chatml,
    /// Prompt, answer, end-of-sequence token.
    Plain,
}

/// How a CSV file is read and how prompts are laid out: the flags `finetune` and `compare`
/// share.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// CSV: the text column.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// CSV: the label column.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// CSV: the labels to keep, in class order [default: all].
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// CSV: the instruction; {text} and {labels} are replaced.
    #[arg(long)]
    pub template: Option<String>,
    /// Prompt layout.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// ChatML: a system message.
    #[arg(long)]
    pub system: Option<String>,
}

impl LayoutArgs {
    /// The CSV columns, labels and template.
    pub fn csv_task(&self) -> CsvTask {
        let mut csv = CsvTask::new(&self.text_column, &self.label_column);
        if !self.labels.is_empty() {
            csv = csv.with_labels(self.labels.clone());
        }
        if let Some(t) = &self.template {
            csv = csv.with_template(t);
        }
        csv
    }

    /// The prompt layout for a model with `chat_template` (`--format auto`: ChatML when the
    /// template is ChatML).
    pub fn prompt_format(&self, chat_template: Option<&str>) -> PromptFormat {
        let chatml = chat_template.is_some_and(|t| t.contains("<|im_start|>"));
        match self.format {
            Format::Chatml => PromptFormat::ChatMl {
                system: self.system.clone(),
            },
            Format::Auto if chatml => PromptFormat::ChatMl {
                system: self.system.clone(),
            },
            Format::Auto | Format::Plain => PromptFormat::Plain,
        }
    }
}
