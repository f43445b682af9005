//! What several subcommands share: model specs and adapter loading.

use std::path::PathBuf;

use burn::tensor::Device;
use burn_peft_models::assets::AssetCache;
use burn_peft_models::{Llama, Pretrained};

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

/// Loads each adapter directory as `adapter0`, `adapter1`, ... and returns the names.
pub fn load_adapters(model: &mut Llama, dirs: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("adapter{i}");
        model
            .load_adapter(dir, &name)
            .map_err(|e| format!("adapter {}: {e}", dir.display()))?;
        names.push(name);
    }
    Ok(names)
}
