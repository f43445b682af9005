//! `LoraConfig`: HF PEFT's LoRA hyper-parameters, with PEFT's field names and JSON form.

use std::collections::BTreeMap;

use burn_peft_core::{AdapterHost, PeftError, Result, TargetModules, TargetSelector};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the LoRA factors start (PEFT's `init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraInit {
    /// `true`: A kaiming-uniform (a = √5), B zeros, so the adapter starts as a no-op.
    #[default]
    Default,
    /// `"gaussian"`: A ~ N(0, 1/r), B zeros.
    Gaussian,
    /// `"pissa"`: A and B from the top-r singular vectors of W, which keeps the residual.
    Pissa,
    /// `false`: both factors random (the adapter changes the output from the start; for tests).
    Random,
}

impl Serialize for LoraInit {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LoraInit::Default => s.serialize_bool(true),
            LoraInit::Random => s.serialize_bool(false),
            LoraInit::Gaussian => s.serialize_str("gaussian"),
            LoraInit::Pissa => s.serialize_str("pissa"),
        }
    }
}

impl<'de> Deserialize<'de> for LoraInit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(LoraInit::Default),
            Raw::Bool(false) => Ok(LoraInit::Random),
            Raw::Text(t) if t == "gaussian" => Ok(LoraInit::Gaussian),
            Raw::Text(t) if t == "pissa" || t.starts_with("pissa_niter_") => Ok(LoraInit::Pissa),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "init_lora_weights '{t}' is not supported (true, false, \"gaussian\", \"pissa\")"
            ))),
        }
    }
}

/// A value PEFT accepts as one item or a list (`layers_to_transform`, `layers_pattern`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// LoRA's configuration, read and written as PEFT's `adapter_config.json`.
///
/// Field names and defaults are PEFT's, so a config from either side reads the same.
///
/// ```
/// use burn_peft_adapters::LoraConfig;
/// use burn_peft_core::TargetModules;
///
/// let config = LoraConfig::new(16)
///     .with_lora_alpha(32.0)
///     .with_target_modules(TargetModules::all_linear())
///     .with_use_rslora(true);
/// assert!((config.scaling_for(16, 32.0) - 8.0).abs() < 1e-12); // 32 / sqrt(16)
/// let json = config.to_peft_json().unwrap();
/// assert!(json.contains("\"peft_type\": \"LORA\""));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator: s = lora_alpha / r (or / √r with `use_rslora`). Written as an
    /// integer when it is one, as PEFT does.
    #[serde(serialize_with = "int_if_whole")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input while training.
    pub lora_dropout: f64,
    /// Modules to adapt; `None` means the Llama default (`q_proj`, `v_proj`).
    pub target_modules: Option<TargetModules>,
    /// Modules never to adapt.
    pub exclude_modules: Option<TargetModules>,
    /// Only these layer indices.
    pub layers_to_transform: Option<OneOrMany<usize>>,
    /// Name(s) of the layer container in module paths.
    pub layers_pattern: Option<OneOrMany<String>>,
    /// Rank-stabilized scaling alpha / √r.
    pub use_rslora: bool,
    /// Weight-decomposed LoRA (DoRA): a learned magnitude per output feature.
    pub use_dora: bool,
    /// How the factors start.
    pub init_lora_weights: LoraInit,
    /// Per-module rank overrides: regex key (matched at the end of the path) -> r.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, like `rank_pattern`.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Whether the base stores weights as `[in, out]` (Conv1D); only `false` is supported.
    pub fan_in_fan_out: bool,
    /// Which biases train: only `"none"` is supported.
    pub bias: String,
    /// A bias on lora_B; not supported.
    pub lora_bias: bool,
    /// Modules trained in full and saved with the adapter. The model declares them
    /// (`AdapterHost::visit_modules_to_save`); saving fills this list from the model.
    pub modules_to_save: Option<Vec<String>>,
    /// PEFT's method name, always `"LORA"`.
    pub peft_type: String,
    /// PEFT's task type, e.g. `"CAUSAL_LM"`.
    pub task_type: Option<String>,
    /// Where the base model came from.
    pub base_model_name_or_path: Option<String>,
    /// Whether the adapter was saved for inference.
    pub inference_mode: bool,
    /// burn-peft's own, not written to PEFT's file: draw the initial factors on the host from
    /// this seed and the module path ([`burn_peft_core::host_random`]), so that every backend
    /// starts from the same values. Two adapters with the same seed on the same layers start
    /// equal, so give each its own. `None` draws them with the device's own generator (seed it
    /// with `device.seed(..)`), which differs from backend to backend.
    #[serde(skip)]
    pub init_seed: Option<u64>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: None,
            exclude_modules: None,
            layers_to_transform: None,
            layers_pattern: None,
            use_rslora: false,
            use_dora: false,
            init_lora_weights: LoraInit::Default,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            fan_in_fan_out: false,
            bias: "none".to_string(),
            lora_bias: false,
            modules_to_save: None,
            peft_type: "LORA".to_string(),
            task_type: Some("CAUSAL_LM".to_string()),
            base_model_name_or_path: None,
            inference_mode: false,
            init_seed: None,
        }
    }
}

/// The largest scaling (`lora_alpha / r`, or `/ √r` with rsLoRA) accepted, in magnitude: usual
/// values are 0.5 to 4, and 10⁶ already drowns the base layer's output.
const MAX_SCALING: f64 = 1e6;

impl LoraConfig {
    /// Rank `r` with PEFT's other defaults (alpha 8, no dropout, the model family's default
    /// targets: `q_proj`/`v_proj` on Llama, `query`/`value` on BERT).
    pub fn new(r: usize) -> Self {
        Self {
            r,
            ..Self::default()
        }
    }

    /// Sets `lora_alpha`.
    pub fn with_lora_alpha(mut self, alpha: f64) -> Self {
        self.lora_alpha = alpha;
        self
    }

    /// Sets `init_seed`: the same starting factors on every backend.
    ///
    /// ```
    /// use burn_peft_adapters::LoraConfig;
    /// let config = LoraConfig::new(8).with_init_seed(42);
    /// assert_eq!(config.init_seed, Some(42));
    /// assert!(!config.to_peft_json().unwrap().contains("init_seed"));
    /// ```
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = Some(seed);
        self
    }

    /// Sets `lora_dropout`.
    pub fn with_lora_dropout(mut self, p: f64) -> Self {
        self.lora_dropout = p;
        self
    }

    /// Sets `target_modules`.
    pub fn with_target_modules(mut self, targets: TargetModules) -> Self {
        self.target_modules = Some(targets);
        self
    }

    /// Sets `exclude_modules`.
    pub fn with_exclude_modules(mut self, exclude: TargetModules) -> Self {
        self.exclude_modules = Some(exclude);
        self
    }

    /// Sets `layers_to_transform`.
    pub fn with_layers_to_transform(mut self, layers: Vec<usize>) -> Self {
        self.layers_to_transform = Some(OneOrMany::Many(layers));
        self
    }

    /// Sets `use_rslora`.
    pub fn with_use_rslora(mut self, on: bool) -> Self {
        self.use_rslora = on;
        self
    }

    /// Sets `use_dora`.
    pub fn with_use_dora(mut self, on: bool) -> Self {
        self.use_dora = on;
        self
    }

    /// Sets `init_lora_weights`.
    pub fn with_init(mut self, init: LoraInit) -> Self {
        self.init_lora_weights = init;
        self
    }

    /// Checks every field this implementation relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PeftError::InvalidConfig(m));
        if self.peft_type != "LORA" {
            return bad(format!(
                "peft_type is '{}', expected 'LORA'",
                self.peft_type
            ));
        }
        if self.r == 0 || self.rank_pattern.values().any(|&r| r == 0) {
            return bad("r must be at least 1".into());
        }
        // A finite but absurd alpha (1e308) scales the adapter's output to infinity.
        let alphas = std::iter::once(&self.lora_alpha).chain(self.alpha_pattern.values());
        let ranks = std::iter::once(&self.r).chain(self.rank_pattern.values());
        for (&alpha, &r) in alphas.flat_map(|a| ranks.clone().map(move |r| (a, r))) {
            let scaling = self.scaling_for(r, alpha);
            if scaling.is_nan() || scaling.abs() > MAX_SCALING {
                return bad(format!(
                    "lora_alpha {alpha} at rank {r} scales the adapter by {scaling:e}: at most \
                     {MAX_SCALING:e} in magnitude"
                ));
            }
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad(format!(
                "lora_dropout {} is not in [0, 1)",
                self.lora_dropout
            ));
        }
        if self.bias != "none" {
            return bad(format!(
                "bias '{}' is not supported (only 'none')",
                self.bias
            ));
        }
        if self.lora_bias {
            return bad("lora_bias is not supported".into());
        }
        if self.fan_in_fan_out {
            return bad("fan_in_fan_out is not supported".into());
        }
        self.selector().validate()
    }

    /// The target selection this config describes.
    pub fn selector(&self) -> TargetSelector {
        TargetSelector {
            target_modules: self
                .target_modules
                .clone()
                .unwrap_or_else(|| TargetModules::Names(Vec::new())),
            exclude_modules: self.exclude_modules.clone(),
            layers_to_transform: self.layers_to_transform.as_ref().map(OneOrMany::to_vec),
            layers_pattern: self.layers_pattern.as_ref().map(OneOrMany::to_vec),
        }
    }

    /// This config with `target_modules` taken from `host`'s family default when it is unset
    /// (PEFT's LoRA mapping); an error when the model has none.
    pub fn with_defaults_of<H: AdapterHost>(mut self, host: &H) -> Result<Self> {
        if self.target_modules.is_none() {
            self.target_modules = Some(host.default_target_modules("LORA").ok_or_else(|| {
                PeftError::InvalidConfig(
                    "LoRA target_modules is not set and the model has no default for LORA".into(),
                )
            })?);
        }
        Ok(self)
    }

    /// Rank and alpha for the module at `path`, after `rank_pattern` and `alpha_pattern`.
    pub fn rank_and_alpha(&self, path: &str) -> Result<(usize, f64)> {
        let r = pattern_value(&self.rank_pattern, path)?.unwrap_or(self.r);
        let alpha = pattern_value(&self.alpha_pattern, path)?.unwrap_or(self.lora_alpha);
        Ok((r, alpha))
    }

    /// The scaling s for rank `r` and `alpha`.
    pub fn scaling_for(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// The config as PEFT writes it: sorted keys, two-space indent, `inference_mode: true`.
    pub fn to_peft_json(&self) -> Result<String> {
        burn_peft_core::format::peft_config_json(self)
    }
}

fn int_if_whole<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

fn pattern_value<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Result<Option<T>> {
    for (key, value) in patterns {
        let re = burn_peft_core::TargetModules::Pattern(format!("(.*\\.)?(?:{key})"));
        if re.matches(path)? {
            return Ok(Some(*value));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peft_json_with_unknown_and_missing_keys() {
        let json = r#"{"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["q_proj","v_proj"],
            "init_lora_weights":false,"some_future_key":1,"layers_to_transform":1}"#;
        let c: LoraConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.r, 4);
        assert_eq!(c.lora_alpha, 8.0);
        assert_eq!(c.init_lora_weights, LoraInit::Random);
        assert_eq!(c.layers_to_transform, Some(OneOrMany::One(1)));
        assert_eq!(c.lora_dropout, 0.0);
        c.validate().unwrap();
    }

    #[test]
    fn round_trips_through_peft_json() {
        let c = LoraConfig::new(4)
            .with_use_dora(true)
            .with_init(LoraInit::Gaussian)
            .with_target_modules(TargetModules::Pattern(r".*\.q_proj".into()));
        let json = c.to_peft_json().unwrap();
        let back: LoraConfig = serde_json::from_str(&json).unwrap();
        assert!(back.inference_mode);
        assert_eq!(
            LoraConfig {
                inference_mode: false,
                ..back
            },
            c
        );
        // Keys are sorted as PEFT writes them.
        let keys: Vec<&str> = json
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(LoraConfig::new(0).validate().is_err());
        assert!(
            LoraConfig::new(4)
                .with_lora_dropout(1.0)
                .validate()
                .is_err()
        );
        let bias = LoraConfig {
            bias: "all".into(),
            ..LoraConfig::new(4)
        };
        assert!(bias.validate().is_err());
        let bad_init: std::result::Result<LoraConfig, _> =
            serde_json::from_str(r#"{"init_lora_weights":"loftq"}"#);
        assert!(bad_init.is_err());
    }

    #[test]
    fn patterns_override_rank_and_alpha() {
        let mut c = LoraConfig::new(8).with_lora_alpha(16.0);
        c.rank_pattern.insert("q_proj".into(), 2);
        c.alpha_pattern
            .insert(r"layers\.1\.mlp\.up_proj".into(), 4.0);
        assert_eq!(
            c.rank_and_alpha("model.layers.0.self_attn.q_proj").unwrap(),
            (2, 16.0)
        );
        assert_eq!(
            c.rank_and_alpha("model.layers.1.mlp.up_proj").unwrap(),
            (8, 4.0)
        );
        assert_eq!(
            c.rank_and_alpha("model.layers.0.mlp.up_proj").unwrap(),
            (8, 16.0)
        );
        assert!((c.scaling_for(8, 16.0) - 2.0).abs() < 1e-12);
    }
}
