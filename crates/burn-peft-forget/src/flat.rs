//! Trainable parameters as flat vectors by module path.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn_peft_core::format::{NamedTensor, read_safetensors, write_safetensors};
use burn_peft_train::{Result, TrainError};

/// Path -> flat tensor.
pub(crate) type Flat = BTreeMap<String, Tensor<1>>;

struct Collect<'a> {
    path: Vec<String>,
    grads: Option<&'a GradientsParams>,
    out: Flat,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let value = match self.grads {
            Some(g) => match g.get::<D>(param.id) {
                Some(t) => t,
                None => return,
            },
            None => param.val(),
        };
        let n = value.shape().num_elements();
        self.out.insert(self.path.join("."), value.reshape([n]));
    }
}

/// The trainable parameters' current values (tracked by autodiff on an autodiff device).
pub(crate) fn values<M: Module>(model: &M) -> Flat {
    let mut c = Collect {
        path: Vec::new(),
        grads: None,
        out: Flat::new(),
    };
    model.visit(&mut c);
    c.out
}

/// The gradients of the trainable parameters.
pub(crate) fn gradients<M: Module>(model: &M, grads: &GradientsParams) -> Flat {
    let mut c = Collect {
        path: Vec::new(),
        grads: Some(grads),
        out: Flat::new(),
    };
    model.visit(&mut c);
    c.out
}

/// `Σ w ⊙ (θ − anchor)²` over all paths (`w = None`: unit weights).
pub(crate) fn weighted_distance(
    current: &Flat,
    anchor: &Flat,
    weight: Option<&Flat>,
) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for (path, theta) in current {
        let Some(a) = anchor.get(path) else { continue };
        let d = (theta.clone() - a.clone()).square();
        let d = match weight.and_then(|w| w.get(path)) {
            Some(w) => d * w.clone(),
            None if weight.is_some() => continue,
            None => d,
        };
        let s = d.sum();
        total = Some(match total {
            Some(t) => t + s,
            None => s,
        });
    }
    total
}

/// Detached copies on `device` (anchors and Fisher values are constants).
pub(crate) fn constants(flat: Flat, device: &Device) -> Flat {
    flat.into_iter()
        .map(|(k, v)| (k, Tensor::from_data(v.into_data(), device)))
        .collect()
}

/// Writes groups of flat tensors into one safetensors file as `group.path`.
pub(crate) fn save(path: &Path, groups: &[(&str, &Flat)]) -> Result<()> {
    let mut all = BTreeMap::new();
    for (name, flat) in groups {
        for (k, v) in flat.iter() {
            all.insert(format!("{name}/{k}"), NamedTensor::from_tensor(v.clone()));
        }
    }
    Ok(write_safetensors(path, &all)?)
}

/// Reads the groups [`save`] wrote, in one pass over the file, each of which must cover
/// exactly `paths`; `groups` is called with the group names found (sorted) and returns those to
/// take, in order. A group it names that the file lacks, or a key outside those groups, is an
/// error.
pub(crate) fn load(
    path: &Path,
    groups: impl FnOnce(&[String]) -> Vec<String>,
    paths: &[String],
    device: &Device,
) -> Result<Vec<Flat>> {
    let mut all = read_safetensors(path)?;
    let mut found: Vec<String> = all
        .keys()
        .filter_map(|k| k.split_once('/').map(|(g, _)| g.to_string()))
        .collect();
    found.dedup();
    let mut out = Vec::new();
    for g in groups(&found) {
        let mut flat = Flat::new();
        for p in paths {
            let key = format!("{g}/{p}");
            let t = all.remove(&key).ok_or_else(|| TrainError::Resume {
                path: path.to_path_buf(),
                message: format!("no '{key}': the state was saved for other trainable parameters"),
            })?;
            flat.insert(p.clone(), t.to_tensor::<1>(device, &key)?);
        }
        out.push(flat);
    }
    if let Some(k) = all.keys().next() {
        return Err(TrainError::Resume {
            path: path.to_path_buf(),
            message: format!(
                "unexpected '{k}': the state was saved for other trainable parameters"
            ),
        });
    }
    Ok(out)
}
