//! IA3's configuration, with PEFT's field names and JSON form.

use burn_peft_core::{AdapterHost, PeftError, Result, TargetModules, TargetSelector};
use serde::{Deserialize, Serialize};

/// IA3's configuration, with PEFT's field names and JSON form.
///
/// ```
/// use burn_peft_adapters::Ia3Config;
/// use burn_peft_core::TargetModules;
/// // Left unset, the targets are the model family's (Llama: k_proj, v_proj, down_proj).
/// let config = Ia3Config::default().with_targets(
///     TargetModules::names(["k_proj", "v_proj", "down_proj"]),
///     TargetModules::names(["down_proj"]),
/// );
/// assert!(config.is_feedforward("model.layers.0.mlp.down_proj").unwrap());
/// assert!(!config.is_feedforward("model.layers.0.self_attn.k_proj").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ia3Config {
    /// Modules to adapt; `None` means the model family's default (see
    /// `AdapterHost::default_target_modules`).
    pub target_modules: Option<TargetModules>,
    /// The targets whose input (not output) is scaled; must be a subset of the targets.
    /// `None` means the model family's default.
    pub feedforward_modules: Option<TargetModules>,
    /// Modules never to adapt.
    pub exclude_modules: Option<TargetModules>,
    /// Whether the base stores weights as `[in, out]`; only `false` is supported.
    pub fan_in_fan_out: bool,
    /// Start the vectors at one (a no-op); `false` draws them at random (for tests).
    pub init_ia3_weights: bool,
    /// Modules trained in full; filled from the model on save.
    pub modules_to_save: Option<Vec<String>>,
    /// PEFT's method name, always `"IA3"`.
    pub peft_type: String,
    /// PEFT's task type.
    pub task_type: Option<String>,
    /// Where the base model came from.
    pub base_model_name_or_path: Option<String>,
    /// Whether the adapter was saved for inference.
    pub inference_mode: bool,
}

impl Default for Ia3Config {
    fn default() -> Self {
        Self {
            target_modules: None,
            feedforward_modules: None,
            exclude_modules: None,
            fan_in_fan_out: false,
            init_ia3_weights: true,
            modules_to_save: None,
            peft_type: "IA3".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            inference_mode: false,
        }
    }
}

impl Ia3Config {
    /// Sets the targets and the feed-forward subset.
    pub fn with_targets(mut self, targets: TargetModules, feedforward: TargetModules) -> Self {
        self.target_modules = Some(targets);
        self.feedforward_modules = Some(feedforward);
        self
    }

    /// Checks the fields this implementation relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(PeftError::InvalidConfig(m.to_string()));
        if self.peft_type != "IA3" {
            return bad("peft_type must be 'IA3'");
        }
        if self.fan_in_fan_out {
            return bad("fan_in_fan_out is not supported");
        }
        // As PEFT checks lists: a feed-forward module that is not a target would do nothing.
        if let (TargetModules::Names(targets), TargetModules::Names(ff)) =
            (self.targets(), self.feedforward())
        {
            let outside: Vec<&str> = ff
                .iter()
                .filter(|name| !targets.contains(name))
                .map(String::as_str)
                .collect();
            if !outside.is_empty() {
                return Err(PeftError::InvalidConfig(format!(
                    "feedforward_modules must be a subset of target_modules ({}); not a target: {}",
                    targets.join(", "),
                    outside.join(", ")
                )));
            }
        }
        self.selector().validate()
    }

    /// The targets (none until they are set or taken from the model).
    fn targets(&self) -> TargetModules {
        let targets = self.target_modules.clone();
        targets.unwrap_or_else(|| TargetModules::Names(Vec::new()))
    }

    /// The feed-forward modules (none until they are set or taken from the model).
    fn feedforward(&self) -> TargetModules {
        let ff = self.feedforward_modules.clone();
        ff.unwrap_or_else(|| TargetModules::Names(Vec::new()))
    }

    /// This config with the targets it leaves unset taken from `host`'s family defaults
    /// (PEFT's IA3 mappings); an error names what is still missing.
    pub fn with_defaults_of<H: AdapterHost>(mut self, host: &H) -> Result<Self> {
        if self.target_modules.is_none() {
            self.target_modules = host.default_target_modules("IA3");
        }
        if self.feedforward_modules.is_none() {
            self.feedforward_modules = host.default_feedforward_modules();
        }
        if self.target_modules.is_none() {
            return Err(PeftError::InvalidConfig(
                "IA3 target_modules is not set and the model has no default for IA3".into(),
            ));
        }
        if self.feedforward_modules.is_none() {
            return Err(PeftError::InvalidConfig(
                "IA3 feedforward_modules is not set and the model has no default for IA3".into(),
            ));
        }
        Ok(self)
    }

    /// The target selection.
    pub fn selector(&self) -> TargetSelector {
        let mut selector = TargetSelector::new(self.targets());
        selector.exclude_modules = self.exclude_modules.clone();
        selector
    }

    /// Whether the module at `path` is a feed-forward target (PEFT: full regex match, or a list
    /// entry the path ends with).
    pub fn is_feedforward(&self, path: &str) -> Result<bool> {
        match self.feedforward() {
            TargetModules::Names(names) => Ok(names.iter().any(|n| path.ends_with(n.as_str()))),
            pattern => pattern.matches(path),
        }
    }

    /// The config as PEFT writes it.
    pub fn to_peft_json(&self) -> Result<String> {
        burn_peft_core::format::peft_config_json(self)
    }
}
