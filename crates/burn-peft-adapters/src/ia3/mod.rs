//! IA3: learned vectors that rescale activations, as in HF PEFT's `tuners/ia3`.
//!
//! On attention projections the vector multiplies the layer's output (`[out]`, saved as PEFT's
//! `ia3_l` `[out, 1]`); on feed-forward projections it multiplies the layer's input (`[in]`,
//! saved as `[1, in]`). Several active IA3 adapters multiply.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn_peft_core::format::NamedTensor;
use burn_peft_core::{PeftError, Result, TargetModules, TargetSelector};
use serde::{Deserialize, Serialize};

use crate::lora::replace;

/// PEFT's default IA3 targets for Llama-family models.
pub const LLAMA_IA3_TARGETS: [&str; 3] = ["k_proj", "v_proj", "down_proj"];
/// PEFT's default IA3 feed-forward modules for Llama-family models.
pub const LLAMA_IA3_FEEDFORWARD: [&str; 1] = ["down_proj"];

/// IA3's configuration, with PEFT's field names and JSON form.
///
/// ```
/// use burn_peft_adapters::Ia3Config;
/// let config = Ia3Config::default(); // Llama defaults: k_proj, v_proj, down_proj (feed-forward)
/// assert!(config.is_feedforward("model.layers.0.mlp.down_proj").unwrap());
/// assert!(!config.is_feedforward("model.layers.0.self_attn.k_proj").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ia3Config {
    /// Modules to adapt; `None` means the Llama default.
    pub target_modules: Option<TargetModules>,
    /// The targets whose input (not output) is scaled; must be a subset of the targets.
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

    /// The targets, PEFT's Llama default when none are set.
    fn targets(&self) -> TargetModules {
        let targets = self.target_modules.clone();
        targets.unwrap_or_else(|| TargetModules::names(LLAMA_IA3_TARGETS))
    }

    /// The feed-forward modules, PEFT's Llama default when none are set.
    fn feedforward(&self) -> TargetModules {
        let ff = self.feedforward_modules.clone();
        ff.unwrap_or_else(|| TargetModules::names(LLAMA_IA3_FEEDFORWARD))
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

/// One IA3 vector on one linear layer.
#[derive(Module, Debug)]
pub struct Ia3 {
    /// The scale: per input feature on feed-forward layers, per output feature otherwise.
    pub scale: Param<Tensor<1>>,
    /// Whether the scale applies to the input.
    pub feedforward: bool,
    /// The config the adapter was made from.
    #[module(skip)]
    pub config: Ia3Config,
}

impl Ia3 {
    /// Builds the vector for the module at `path` with base weight dims `[in, out]`.
    pub fn init(
        config: &Ia3Config,
        path: &str,
        dims: [usize; 2],
        device: &burn::tensor::Device,
    ) -> Result<Self> {
        let feedforward = config.is_feedforward(path)?;
        let len = if feedforward { dims[0] } else { dims[1] };
        let scale = if config.init_ia3_weights {
            Tensor::ones([len], device)
        } else {
            Tensor::random([len], burn::tensor::Distribution::Normal(1.0, 0.3), device)
        };
        Ok(Self {
            scale: Param::from_tensor(scale),
            feedforward,
            config: config.clone(),
        })
    }

    pub(crate) fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.feedforward { self.scaled(x) } else { x }
    }

    pub(crate) fn apply<const D: usize>(&self, out: Tensor<D>) -> Tensor<D> {
        if self.feedforward {
            out
        } else {
            self.scaled(out)
        }
    }

    /// `t` times the scale vector, computed in the vector's type (f32) and returned in `t`'s,
    /// as PEFT does for a half-precision base.
    fn scaled<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        let scale = self.scale.val();
        let dtype = t.dtype();
        (t.cast(scale.dtype()) * scale.unsqueeze::<D>()).cast(dtype)
    }

    fn weight_factor(&self, eps: f64) -> Tensor<2> {
        let l = self.scale.val().detach() + eps;
        if self.feedforward {
            l.unsqueeze_dim::<2>(1) // [in, 1]: scales rows of W [in, out]
        } else {
            l.unsqueeze_dim::<2>(0) // [1, out]: scales columns
        }
    }

    pub(crate) fn merge_into(&self, weight: Tensor<2>) -> Tensor<2> {
        weight * self.weight_factor(0.0)
    }

    pub(crate) fn unmerge_from(&self, weight: Tensor<2>) -> Tensor<2> {
        // PEFT divides by (l + 1e-8) so that a zero entry does not blow up.
        weight / self.weight_factor(1e-8)
    }

    pub(crate) fn export(&self) -> Vec<(String, NamedTensor)> {
        let mut t = NamedTensor::from_tensor(self.scale.val());
        let n = t.shape[0];
        t.shape = if self.feedforward {
            vec![1, n]
        } else {
            vec![n, 1]
        };
        vec![("ia3_l".to_string(), t)]
    }

    pub(crate) fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        let n = self.scale.shape().dims::<1>()[0];
        let shape = if self.feedforward { [1, n] } else { [n, 1] };
        let mut t = take("ia3_l", &shape)?;
        t.shape = vec![n];
        let device = self.scale.device();
        self.scale = replace(&self.scale, t.to_tensor(&device, "ia3_l")?);
        Ok(())
    }
}
