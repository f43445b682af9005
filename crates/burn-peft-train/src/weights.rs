//! What a run saves as its result and in its checkpoints, and how it loads it back, per
//! method: an adapter in PEFT's files, or a whole model as an HF directory.

use std::path::Path;

use burn::tensor::Device;
use burn_peft_adapters::{AdapterConfig, AddAdapter, read_adapter_config};
use burn_peft_core::Precision;
use burn_peft_models::{PretrainedWeights, TextTokenizer};
use burn_peft_optim::make_trainable;

use crate::error::{Result, TrainError};

/// Writes the trained weights of a model into a directory.
pub type SaveWeights<'a, M> = Box<dyn Fn(&M, &Path) -> Result<()> + 'a>;
/// Loads weights that a [`SaveWeights`] wrote into a freshly built model.
pub type LoadWeights<'a, M> = Box<dyn Fn(M, &Path) -> Result<M> + 'a>;
/// Checks, before anything is loaded, that saved weights fit a freshly built model.
pub type CheckWeights<'a, M> = Box<dyn Fn(&M, &Path) -> Result<()> + 'a>;

/// Saves and loads the trained weights (an adapter directory, or a full model): what the
/// [`Trainer`](crate::Trainer) writes as the result and into every checkpoint, and reads back
/// on resume. [`adapter`](Self::adapter) and [`full_model`](Self::full_model) cover the
/// methods; the closures can be your own.
pub struct WeightsIo<'a, M> {
    /// Writes the trained weights of `model` into a directory.
    pub save: SaveWeights<'a, M>,
    /// Loads weights that `save` wrote into a freshly built model.
    pub load: LoadWeights<'a, M>,
    /// Checks that weights `save` wrote fit a freshly built model (an adapter's method, rank
    /// and targets), without loading them: what [`Trainer::check_resume`] asks before a run
    /// resumes. `None` checks nothing.
    ///
    /// [`Trainer::check_resume`]: crate::Trainer::check_resume
    pub check: Option<CheckWeights<'a, M>>,
}

impl<'a, M: AddAdapter + 'a> WeightsIo<'a, M> {
    /// Adapter `name`, of any method, in PEFT's files. Prefix tuning with projection also
    /// keeps its embedding and MLP (`prefix_encoder.safetensors`; PEFT's file has only their
    /// product), so that a checkpoint can resume and a finished run continue.
    ///
    /// Loading replaces the model's adapter `name` (freshly added by the run) with the saved
    /// one; other active adapters (O-LoRA's earlier tasks) stay active and frozen, since a run
    /// trains one adapter.
    ///
    /// ```
    /// use burn::tensor::Device;
    /// use burn_peft_adapters::{AddAdapter, LoraConfig};
    /// use burn_peft_core::PeftModel;
    /// use burn_peft_models::LlamaConfig;
    /// use burn_peft_train::WeightsIo;
    ///
    /// let device = Device::flex().autodiff();
    /// let mut model = LlamaConfig::tiny(32).init(&device);
    /// model.add_lora("default", &LoraConfig::new(4)).unwrap();
    /// let io = WeightsIo::adapter("default");
    /// let dir = tempfile::tempdir().unwrap();
    /// (io.save)(&model, dir.path()).unwrap();
    /// let again = (io.load)(model.clone(), dir.path()).unwrap();
    /// assert_eq!(again.active_adapters(), vec!["default".to_string()]);
    /// ```
    pub fn adapter(name: &str) -> Self {
        let save_name = name.to_string();
        let check_name = name.to_string();
        let name = name.to_string();
        WeightsIo {
            check: Some(Box::new(move |m: &M, dir: &Path| {
                check_adapter_unchanged(m, &check_name, dir)
            })),
            save: Box::new(move |m: &M, dir: &Path| {
                m.save_adapter(&save_name, dir)?;
                m.save_prefix_encoder(dir)?;
                Ok(())
            }),
            load: Box::new(move |mut m: M, dir: &Path| {
                check_adapter_unchanged(&m, &name, dir)?;
                // The encoder goes into the freshly added adapter.
                if m.load_prefix_encoder(dir)? {
                    return Ok(m);
                }
                let others: Vec<String> = m
                    .active_adapters()
                    .into_iter()
                    .filter(|a| *a != name)
                    .collect();
                if m.adapter_names().contains(&name) {
                    m.delete_adapter(&name)?;
                }
                let prompt = m.prompt_adapter_name().as_deref() == Some(name.as_str());
                if prompt {
                    m.remove_prompt_learning();
                }
                m.load_adapter(dir, &name)?;
                if !prompt {
                    let mut active: Vec<&str> = others.iter().map(String::as_str).collect();
                    active.push(&name);
                    m.set_adapter(&active)?;
                    m.set_requires_grad(&active[..others.len()], false)?;
                }
                Ok(m)
            }),
        }
    }
}

/// The model holds this run's freshly added adapter `name`, which must be the one the
/// checkpoint in `dir` was made with: a changed method, rank or target is refused, not silently
/// replaced by the checkpoint's.
fn check_adapter_unchanged<M: AddAdapter>(m: &M, name: &str, dir: &Path) -> Result<()> {
    let Some(current) = m.adapter_config(name) else {
        return Ok(());
    };
    let saved = read_adapter_config(dir)?;
    let changed = differences(&saved, &current)?;
    if changed.is_empty() {
        return Ok(());
    }
    Err(TrainError::Resume {
        path: dir.to_path_buf(),
        message: format!(
            "the checkpoint's adapter differs from this run's in {}",
            changed.join(", ")
        ),
    })
}

/// The fields of PEFT's config that differ between a checkpoint's adapter and this run's, as
/// `field (was, now)`; where the base model came from and the layers saved in full are not
/// compared (the first is informative, the second is filled in on save).
fn differences(saved: &AdapterConfig, current: &AdapterConfig) -> Result<Vec<String>> {
    let value = |c: &AdapterConfig| -> Result<serde_json::Value> {
        let text = c.to_peft_json()?;
        serde_json::from_str(&text).map_err(|e| TrainError::Config(e.to_string()))
    };
    let (was, now) = (value(saved)?, value(current)?);
    let empty = serde_json::Map::new();
    let (was, now) = (
        was.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = was.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    Ok(keys
        .into_iter()
        .filter(|k| !["base_model_name_or_path", "modules_to_save"].contains(&k.as_str()))
        .filter_map(|k| {
            let (a, b) = (was.get(k).unwrap_or(&null), now.get(k).unwrap_or(&null));
            (a != b).then(|| format!("{k} ({a}, now {b})"))
        })
        .collect())
}

impl<'a, M: PretrainedWeights + burn::module::Module + 'a> WeightsIo<'a, M> {
    /// The whole model as an HF directory (full fine-tuning), with `tokenizer` and
    /// `chat_template` beside it; loading reads it back on `device`, every weight trainable,
    /// frozen weights stored in `precision`.
    pub fn full_model(
        tokenizer: TextTokenizer,
        chat_template: Option<String>,
        device: Device,
        precision: Precision,
    ) -> Self {
        WeightsIo {
            check: None,
            save: Box::new(move |m: &M, dir: &Path| {
                Ok(m.save_pretrained(dir, Some(&tokenizer), chat_template.as_deref())?)
            }),
            load: Box::new(move |_m: M, dir: &Path| {
                let mut model = make_trainable(M::from_pretrained(dir, &device)?);
                model.set_precision(precision);
                Ok(model)
            }),
        }
    }
}
