//! What a model implements to take PEFT's methods, and the one way to add them.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_peft_core::{PeftError, PeftModel, Result};

use crate::config::AdapterConfig;
use crate::ia3::Ia3Config;
use crate::lora::LoraConfig;
use crate::prefix::PrefixTuningConfig;
use crate::prompt::PromptTuningConfig;
use crate::{Adapter, PromptLearning};

/// The shape of the model a prompt-learning adapter attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptGeometry {
    /// Decoder layers.
    pub num_layers: usize,
    /// Width of the token embeddings.
    pub hidden_size: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// The place in a model that holds its prompt-learning adapter (prefix or prompt tuning) and
/// its name. A model that supports prompt learning keeps one as a field and reads it in its
/// forward pass (a prefix as past keys and values, virtual tokens in front of the input).
#[derive(Module, Debug)]
pub struct PromptSlot {
    adapter: Option<PromptLearning>,
    #[module(skip)]
    name: Option<String>,
}

impl Default for PromptSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl PromptSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self {
            adapter: None,
            name: None,
        }
    }

    /// The adapter's name, if one is attached.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The adapter, if one is attached.
    pub fn adapter(&self) -> Option<&PromptLearning> {
        self.adapter.as_ref()
    }

    /// The adapter, if one is attached under `name`.
    pub fn named(&self, name: &str) -> Option<&PromptLearning> {
        self.adapter.as_ref().filter(|_| self.name() == Some(name))
    }

    /// The prefix-tuning adapter, if that is what is attached.
    pub fn prefix(&self) -> Option<&crate::PrefixTuning> {
        match &self.adapter {
            Some(PromptLearning::Prefix(p)) => Some(p),
            _ => None,
        }
    }

    /// The prompt-tuning adapter, if that is what is attached.
    pub fn prompt(&self) -> Option<&crate::PromptTuning> {
        match &self.adapter {
            Some(PromptLearning::Prompt(p)) => Some(p),
            _ => None,
        }
    }

    /// Replaces the attached adapter with `f` of it (its name stays), e.g. to freeze it.
    pub fn map(&mut self, f: impl FnOnce(PromptLearning) -> PromptLearning) {
        self.adapter = self.adapter.take().map(f);
    }

    /// Detaches the adapter, returning its name and module.
    pub fn take(&mut self) -> Option<(String, PromptLearning)> {
        let adapter = self.adapter.take()?;
        Some((self.name.take().unwrap_or_default(), adapter))
    }

    pub(crate) fn set(&mut self, name: &str, adapter: PromptLearning) {
        self.adapter = Some(adapter);
        self.name = Some(name.to_string());
    }
}

/// A model that can host a prompt-learning adapter: it says its shape, gives access to its
/// [`PromptSlot`], and embeds token ids (prompt tuning's `TEXT` initialization).
pub trait PromptHost {
    /// The shape prompt-learning adapters need.
    fn prompt_geometry(&self) -> PromptGeometry;

    /// The slot that holds the adapter.
    fn prompt_slot(&self) -> &PromptSlot;

    /// The slot, mutably.
    fn prompt_slot_mut(&mut self) -> &mut PromptSlot;

    /// The input embeddings `[ids, hidden]` of token ids, untracked; an error for an id
    /// outside the vocabulary.
    fn token_embeddings(&self, ids: &[u32]) -> Result<Tensor<2>>;

    /// The device a new adapter is built on (the one the input embeddings live on).
    fn prompt_device(&self) -> Device;
}

/// Adds adapters of every method ([`AdapterConfig`]) to a model whose linear layers host
/// [`Adapter`]s, as PEFT's `add_adapter`. A model opts in with one line,
/// `impl AddAdapter for MyModel {}`; one that also hosts prefix and prompt tuning returns
/// itself from [`prompt_host`](Self::prompt_host) and
/// [`prompt_host_mut`](Self::prompt_host_mut).
pub trait AddAdapter: PeftModel<Adapter = Adapter> {
    /// The model's prompt-learning host; `None` (the default) refuses prefix and prompt tuning.
    fn prompt_host(&self) -> Option<&dyn PromptHost> {
        None
    }

    /// The model's prompt-learning host, mutably; `None` by default.
    fn prompt_host_mut(&mut self) -> Option<&mut dyn PromptHost> {
        None
    }

    /// Adds adapter `name` of any method, as `config` says; targets the config leaves unset
    /// are the model family's defaults ([`AdapterHost::default_target_modules`]). Everything
    /// else is frozen; the first adapter becomes active. Returns the adapted module paths
    /// (none for prefix and prompt tuning). On error the model is unchanged.
    ///
    /// [`AdapterHost::default_target_modules`]: burn_peft_core::AdapterHost::default_target_modules
    fn add_adapter(&mut self, name: &str, config: &AdapterConfig) -> Result<Vec<String>> {
        check_name_free(self, name)?;
        config.add_to(self, name)
    }

    /// Adds a LoRA (rsLoRA, DoRA) adapter: [`add_adapter`](Self::add_adapter) with
    /// [`AdapterConfig::Lora`].
    fn add_lora(&mut self, name: &str, config: &LoraConfig) -> Result<Vec<String>> {
        self.add_adapter(name, &AdapterConfig::Lora(config.clone()))
    }

    /// Adds an IA3 adapter: [`add_adapter`](Self::add_adapter) with [`AdapterConfig::Ia3`].
    fn add_ia3(&mut self, name: &str, config: &Ia3Config) -> Result<Vec<String>> {
        self.add_adapter(name, &AdapterConfig::Ia3(config.clone()))
    }

    /// Adds a prefix-tuning adapter (geometry missing from `config` is taken from the model).
    fn add_prefix_tuning(&mut self, name: &str, config: &PrefixTuningConfig) -> Result<()> {
        self.add_adapter(name, &AdapterConfig::Prefix(config.clone()))
            .map(drop)
    }

    /// Adds a prompt-tuning adapter; `TEXT` initialization needs
    /// [`PromptTuningConfig::init_token_ids`].
    fn add_prompt_tuning(&mut self, name: &str, config: &PromptTuningConfig) -> Result<()> {
        self.add_adapter(name, &AdapterConfig::Prompt(config.clone()))
            .map(drop)
    }

    /// The configuration adapter `name` was added with (PEFT's `peft_config[name]`), of any
    /// method; `None` when the model has no such adapter.
    fn adapter_config(&self, name: &str) -> Option<AdapterConfig> {
        let prompt = self.prompt_host().and_then(|h| h.prompt_slot().named(name));
        if let Some(prompt) = prompt {
            return Some(prompt.config());
        }
        let mut config = None;
        self.clone().visit_adapter(name, &mut |_, adapter| {
            config.get_or_insert_with(|| adapter.config());
        });
        config
    }

    /// The name of the prompt-learning adapter, if one is attached.
    fn prompt_adapter_name(&self) -> Option<String> {
        self.prompt_host()
            .and_then(|h| h.prompt_slot().name().map(str::to_string))
    }

    /// Removes the prompt-learning adapter, if any.
    fn remove_prompt_learning(&mut self) -> Option<PromptLearning> {
        self.prompt_host_mut()
            .and_then(|h| h.prompt_slot_mut().take())
            .map(|(_, adapter)| adapter)
    }

    /// Merges the active linear-layer adapters into the weights; refused while a prefix or
    /// prompt adapter is attached (they cannot be merged).
    fn merge_active(&mut self) -> Result<()> {
        if let Some(prompt) = self.prompt_host().and_then(|h| h.prompt_slot().adapter()) {
            return Err(PeftError::InvalidConfig(format!(
                "{} adapters cannot be merged into the weights",
                prompt.peft_type()
            )));
        }
        self.merge_adapter(None)
    }

    /// Writes adapter `name` (any method) to `dir` in PEFT's format: see
    /// [`save_adapter`](crate::save_adapter).
    fn save_adapter(&self, name: &str, dir: &Path) -> Result<()> {
        crate::persist::save_adapter(self, name, dir)
    }

    /// Loads the PEFT adapter directory `dir` (any method) as adapter `name`: see
    /// [`load_adapter`](crate::load_adapter). On error the model is unchanged.
    fn load_adapter(&mut self, dir: &Path, name: &str) -> Result<()> {
        crate::persist::load_adapter(self, dir, name)
    }

    /// Writes the embedding and the MLP of a prefix-tuning adapter trained with
    /// `prefix_projection` to `dir/`[`PREFIX_ENCODER_FILE`](crate::PREFIX_ENCODER_FILE), next
    /// to what [`save_adapter`](Self::save_adapter) writes, so that training can resume.
    /// Returns `false`, writing nothing, when the model has no such adapter.
    fn save_prefix_encoder(&self, dir: &Path) -> Result<bool> {
        crate::persist::save_prefix_encoder(self, dir)
    }

    /// Puts what [`save_prefix_encoder`](Self::save_prefix_encoder) wrote into this model's
    /// prefix-tuning adapter, which must have been added with the same configuration
    /// (`prefix_projection`, sizes). Returns `false` when `dir` has no such file. On error the
    /// model is unchanged.
    fn load_prefix_encoder(&mut self, dir: &Path) -> Result<bool> {
        crate::persist::load_prefix_encoder(self, dir)
    }

    /// Adds adapter `name` whose update is the weighted sum of the LoRA adapters `adapters`
    /// (`(name, weight)` pairs), by concatenating their factors: PEFT's
    /// `add_weighted_adapter(..., combination_type="cat")`. See
    /// [`lora::add_concatenated`](crate::lora::add_concatenated).
    fn add_concatenated_lora(
        &mut self,
        name: &str,
        adapters: &[(&str, f64)],
    ) -> Result<Vec<String>> {
        crate::lora::add_concatenated(self, name, adapters)
    }
}

/// Attaches a prompt-learning adapter to `model`'s slot and freezes everything else.
pub(crate) fn attach_prompt<M: AddAdapter>(
    model: &mut M,
    name: &str,
    prompt: PromptLearning,
) -> Result<()> {
    let host = prompt_host(model, prompt.peft_type())?;
    if let Some(existing) = host.prompt_slot().name() {
        return Err(PeftError::InvalidConfig(format!(
            "the model already has the prompt-learning adapter '{existing}': remove it first"
        )));
    }
    if model.adapter_names().iter().any(|n| n == name) {
        return Err(PeftError::DuplicateAdapter(name.to_string()));
    }
    let mut frozen = model.clone().no_grad();
    frozen
        .prompt_host_mut()
        .ok_or_else(|| no_prompt_host(prompt.peft_type()))?
        .prompt_slot_mut()
        .set(name, prompt.set_require_grad(true));
    *model = frozen;
    Ok(())
}

/// `model`'s prompt host, or the error for a model without one.
pub(crate) fn prompt_host<'a, M: AddAdapter>(
    model: &'a M,
    method: &str,
) -> Result<&'a dyn PromptHost> {
    model.prompt_host().ok_or_else(|| no_prompt_host(method))
}

/// The error for prompt learning (`method`) on a model that implements no [`PromptHost`].
pub(crate) fn no_prompt_host(method: &str) -> PeftError {
    PeftError::UnsupportedMethod(format!(
        "{method} on a model without prompt-learning support (it implements no PromptHost)"
    ))
}

/// Replaces the module in `model`'s prompt slot, keeping its name.
pub(crate) fn set_prompt_adapter<M: AddAdapter>(
    model: &mut M,
    adapter: PromptLearning,
) -> Result<()> {
    let method = adapter.peft_type();
    let host = model
        .prompt_host_mut()
        .ok_or_else(|| no_prompt_host(method))?;
    host.prompt_slot_mut().map(|_| adapter);
    Ok(())
}

/// The saved table of a prompt-learning adapter (PEFT's `prompt_embeddings`), checked against
/// `dims`; every other tensor in the file is refused.
pub(crate) fn read_prompt_table(
    mut tensors: std::collections::BTreeMap<String, burn_peft_core::format::NamedTensor>,
    file: &Path,
    dims: [usize; 2],
    device: &Device,
) -> Result<Tensor<2>> {
    use burn_peft_core::format::{check_shape, ensure_all_used, take_tensor};
    let table = take_tensor(&mut tensors, file, PROMPT_KEY)?;
    ensure_all_used(&tensors, file)?;
    check_shape(PROMPT_KEY, &table, &dims)?;
    table.to_tensor(device, PROMPT_KEY)
}

/// The key PEFT saves prompt-learning adapters under.
pub(crate) const PROMPT_KEY: &str = "prompt_embeddings";

/// A linear-layer method refuses a name the prompt-learning adapter holds.
pub(crate) fn check_name_free<M: AddAdapter>(model: &M, name: &str) -> Result<()> {
    if model.prompt_adapter_name().as_deref() == Some(name) {
        return Err(PeftError::DuplicateAdapter(name.to_string()));
    }
    Ok(())
}
