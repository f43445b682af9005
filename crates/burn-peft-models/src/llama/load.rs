//! Loading a Llama-family model from an HF model directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use burn_peft_core::PeftError;
use burn_peft_core::format::{NamedTensor, check_shape, read_safetensors};

use super::config::LlamaConfig;
use super::model::{Llama, WeightSource};
use crate::error::Result;

/// Tensors read from safetensors files, handed out by key.
struct FileWeights {
    tensors: BTreeMap<String, NamedTensor>,
    origin: PathBuf,
}

impl FileWeights {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<NamedTensor> {
        let tensor = self
            .tensors
            .remove(key)
            .ok_or_else(|| PeftError::MissingTensor {
                file: self.origin.clone(),
                key: key.to_string(),
            })?;
        check_shape(key, &tensor, shape)?;
        Ok(tensor)
    }
}

impl WeightSource for FileWeights {
    fn matrix(&mut self, key: &str, shape: [usize; 2], device: &Device) -> Result<Tensor<2>> {
        Ok(self.take(key, &shape)?.to_tensor(device, key)?)
    }

    fn vector(&mut self, key: &str, len: usize, device: &Device) -> Result<Tensor<1>> {
        Ok(self.take(key, &[len])?.to_tensor(device, key)?)
    }

    fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        PeftError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors and no model.safetensors.index.json",
            ),
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PeftError::format(&index, e))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| PeftError::format(&index, "no 'weight_map' object"))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let name = file
            .as_str()
            .filter(|n| !n.contains('/') && !n.contains('\\') && !n.starts_with('.'))
            .ok_or_else(|| PeftError::format(&index, format!("bad shard name {file}")))?;
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

impl Llama {
    /// Loads `config.json` and the safetensors weights (single file or sharded) of an HF model
    /// directory. Weights in f16 and bf16 are widened to f32.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let mut tensors = BTreeMap::new();
        for file in weight_files(dir)? {
            tensors.append(&mut read_safetensors(&file)?);
        }
        let mut src = FileWeights {
            tensors,
            origin: dir.to_path_buf(),
        };
        Llama::build(&config, &mut src, device)
    }
}
