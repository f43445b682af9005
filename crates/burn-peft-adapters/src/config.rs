//! One configuration enum for every method, and what each method's config does for it.

use std::collections::BTreeMap;
use std::path::Path;

use burn_peft_core::format::{ADAPTER_CONFIG, NamedTensor, import_adapter};
use burn_peft_core::{PeftError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ia3::Ia3Config;
use crate::lora::LoraConfig;
use crate::model::{AddAdapter, check_name_free};
use crate::prefix::PrefixTuningConfig;
use crate::prompt::PromptTuningConfig;

/// What every method's configuration provides: its PEFT name, its checks, and how it adds an
/// adapter to a model and fills it from a file. [`AdapterConfig`] dispatches to these.
pub trait MethodConfig: Clone + Serialize + DeserializeOwned {
    /// PEFT's `peft_type` (`"LORA"`, `"IA3"`, ...).
    const PEFT_TYPE: &'static str;

    /// Checks the fields this implementation relies on.
    fn validate(&self) -> Result<()>;

    /// Adds adapter `name` of this method to `model`; returns the adapted module paths (none
    /// for the methods that do not sit on linear layers).
    fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>>;

    /// The config as read from a saved adapter, made ready to be added and then filled with the
    /// file's weights: no initialization that rewrites the base (PiSSA), not in inference mode.
    fn for_loading(self) -> Self;

    /// Adds adapter `name` with a saved adapter's tensors (`file` names them in errors). The
    /// default adds it ([`add_to`](Self::add_to)) and reads the linear layers' PEFT keys, every
    /// tensor used; a method whose initialization would be wasted or impossible on load (prompt
    /// tuning's `TEXT` init needs a tokenizer) builds the adapter from the tensors instead.
    fn load_into<M: AddAdapter>(
        &self,
        model: &mut M,
        name: &str,
        tensors: BTreeMap<String, NamedTensor>,
        file: &Path,
    ) -> Result<()> {
        check_name_free(model, name)?;
        self.add_to(model, name)?;
        import_adapter(model, name, tensors, file)
    }

    /// Records the layers trained in full next to the adapter (PEFT's `modules_to_save`), for
    /// the methods whose config carries them; the default ignores them.
    fn set_modules_to_save(&mut self, modules: Option<Vec<String>>) {
        let _ = modules;
    }

    /// The config as PEFT writes it.
    fn to_peft_json(&self) -> Result<String> {
        burn_peft_core::format::peft_config_json(self)
    }
}

/// Declares [`AdapterConfig`] with one variant per method and its dispatch to
/// [`MethodConfig`]. Adding a method is one line here (and, for a linear-layer method, one in
/// `linear_adapters!`).
macro_rules! adapter_methods {
    ($($(#[$doc:meta])* $variant:ident($config:ty)),* $(,)?) => {
        /// A configuration of any method: what [`AddAdapter::add_adapter`] takes and what an
        /// `adapter_config.json` holds (its `peft_type` picks the variant).
        ///
        /// ```
        /// use burn_peft_adapters::{AdapterConfig, LoraConfig};
        /// let config = AdapterConfig::from(LoraConfig::new(8));
        /// assert_eq!(config.peft_type(), "LORA");
        /// let json = config.to_peft_json().unwrap();
        /// let back = AdapterConfig::from_peft_json(&json).unwrap();
        /// assert_eq!(back.peft_type(), "LORA");
        /// ```
        #[derive(Debug, Clone, PartialEq)]
        pub enum AdapterConfig {
            $($(#[$doc])* $variant($config),)*
        }

        $(
            impl From<$config> for AdapterConfig {
                fn from(config: $config) -> Self {
                    AdapterConfig::$variant(config)
                }
            }
        )*

        impl AdapterConfig {
            /// PEFT's `peft_type` of the method.
            pub fn peft_type(&self) -> &'static str {
                match self {
                    $(AdapterConfig::$variant(_) => <$config as MethodConfig>::PEFT_TYPE,)*
                }
            }

            /// Parses an `adapter_config.json`'s text, picking the method from `peft_type`,
            /// and checks it.
            pub fn from_peft_json(text: &str) -> Result<Self> {
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| PeftError::InvalidConfig(e.to_string()))?;
                let peft_type = value
                    .get("peft_type")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| PeftError::InvalidConfig("no 'peft_type' string".into()))?
                    .to_string();
                $(
                    if peft_type == <$config as MethodConfig>::PEFT_TYPE {
                        let config: $config = serde_json::from_value(value)
                            .map_err(|e| PeftError::InvalidConfig(e.to_string()))?;
                        config.validate()?;
                        return Ok(AdapterConfig::$variant(config));
                    }
                )*
                Err(PeftError::UnsupportedMethod(peft_type))
            }

            /// The config as PEFT writes it.
            pub fn to_peft_json(&self) -> Result<String> {
                match self {
                    $(AdapterConfig::$variant(c) => c.to_peft_json(),)*
                }
            }

            /// Checks the config.
            pub fn validate(&self) -> Result<()> {
                match self {
                    $(AdapterConfig::$variant(c) => c.validate(),)*
                }
            }

            /// See [`MethodConfig::for_loading`].
            pub fn for_loading(self) -> Self {
                match self {
                    $(AdapterConfig::$variant(c) => AdapterConfig::$variant(c.for_loading()),)*
                }
            }

            /// See [`MethodConfig::set_modules_to_save`].
            pub fn set_modules_to_save(&mut self, modules: Option<Vec<String>>) {
                match self {
                    $(AdapterConfig::$variant(c) => c.set_modules_to_save(modules),)*
                }
            }

            pub(crate) fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>> {
                match self {
                    $(AdapterConfig::$variant(c) => c.add_to(model, name),)*
                }
            }

            pub(crate) fn load_into<M: AddAdapter>(
                &self,
                model: &mut M,
                name: &str,
                tensors: BTreeMap<String, NamedTensor>,
                file: &Path,
            ) -> Result<()> {
                match self {
                    $(AdapterConfig::$variant(c) => c.load_into(model, name, tensors, file),)*
                }
            }
        }
    };
}

adapter_methods! {
    /// `peft_type: "LORA"`: LoRA, rsLoRA, DoRA.
    Lora(LoraConfig),
    /// `peft_type: "IA3"`.
    Ia3(Ia3Config),
    /// `peft_type: "PREFIX_TUNING"`.
    Prefix(PrefixTuningConfig),
    /// `peft_type: "PROMPT_TUNING"`.
    Prompt(PromptTuningConfig),
}

/// Reads `<dir>/adapter_config.json` and picks the method from `peft_type`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| PeftError::io(&path, e))?;
    AdapterConfig::from_peft_json(&text).map_err(|e| match e {
        PeftError::InvalidConfig(m) => PeftError::format(&path, m),
        other => other,
    })
}
