//! # burn-peft-adapters
//!
//! Adapter methods for models that host [`burn_peft_core::AdaptedLinear`] layers: LoRA,
//! rsLoRA and DoRA ([`lora`]), behind one module type, [`Adapter`], and saved or loaded in HF
//! PEFT's on-disk format ([`save_adapter`], [`load_adapter`]).
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Device, Tensor};
//! use burn_peft_adapters::{AddAdapter, Adapter, LoraConfig};
//! use burn_peft_core::{AdaptedLinear, AdapterHost, PeftModel, TargetModules};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Tiny { proj: AdaptedLinear<Adapter> }
//! impl AdapterHost for Tiny {
//!     type Adapter = Adapter;
//!     fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
//!         f("proj", &mut self.proj);
//!     }
//! }
//!
//! let device = Device::flex();
//! let mut model = Tiny { proj: AdaptedLinear::new(LinearConfig::new(8, 8).init(&device)) };
//! let lora = LoraConfig::new(4).with_target_modules(TargetModules::names(["proj"]));
//! model.add_lora("default", &lora).unwrap();
//! assert_eq!(model.active_adapters(), vec!["default".to_string()]);
//! let y = model.proj.forward(Tensor::<2>::ones([1, 8], &device));
//! assert_eq!(y.dims(), [1, 8]);
//! ```
#![warn(missing_docs)]

pub mod ia3;
pub mod lora;
mod persist;
pub mod prefix;
pub mod prompt;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_peft_core::format::{NamedTensor, PeftTensors};

use burn_peft_core::{LinearAdapter, PeftError, PeftModel, Result};

pub use ia3::{Ia3, Ia3Config};
pub use lora::{Lora, LoraConfig, LoraInit};
pub use persist::{AdapterConfig, load_adapter, read_adapter_config, save_adapter};
pub use prefix::{PrefixProjection, PrefixTuning, PrefixTuningConfig, PromptGeometry};
pub use prompt::{PromptTuning, PromptTuningConfig, PromptTuningInit};

/// Every adapter method a linear layer can host.
// One value per adapted layer: the size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Adapter {
    /// LoRA, rsLoRA or DoRA.
    Lora(Lora),
    /// IA3.
    Ia3(Ia3),
}

impl Adapter {
    /// The LoRA / DoRA adapter, if this is one.
    pub fn as_lora(&self) -> Option<&Lora> {
        match self {
            Adapter::Lora(l) => Some(l),
            _ => None,
        }
    }

    /// The LoRA / DoRA adapter, mutably, if this is one.
    pub fn as_lora_mut(&mut self) -> Option<&mut Lora> {
        match self {
            Adapter::Lora(l) => Some(l),
            _ => None,
        }
    }
}

impl LinearAdapter for Adapter {
    fn peft_type(&self) -> &'static str {
        match self {
            Adapter::Lora(_) => "LORA",
            Adapter::Ia3(_) => "IA3",
        }
    }

    fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Adapter::Lora(_) => x,
            Adapter::Ia3(a) => a.transform_input(x),
        }
    }

    fn forward<const D: usize>(
        &self,
        x: &Tensor<D>,
        base: &Linear,
        base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        match self {
            Adapter::Lora(l) => l.apply(x, base, base_out, out),
            Adapter::Ia3(a) => a.apply(out),
        }
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => Ok(l.merge_into(weight)),
            Adapter::Ia3(a) => Ok(a.merge_into(weight)),
        }
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.unmerge_from(weight),
            Adapter::Ia3(a) => Ok(a.unmerge_from(weight)),
        }
    }

    fn merged_bias_factor(&self) -> Option<Tensor<1>> {
        match self {
            Adapter::Ia3(a) if !a.feedforward => Some(a.scale.val().detach()),
            _ => None,
        }
    }

    fn take_base_update(&mut self) -> Option<Tensor<2>> {
        match self {
            Adapter::Lora(l) => l.take_base_update(),
            Adapter::Ia3(_) => None,
        }
    }
}

impl PeftTensors for Adapter {
    fn export(&self) -> Vec<(String, NamedTensor)> {
        match self {
            Adapter::Lora(l) => l.export(),
            Adapter::Ia3(a) => a.export(),
        }
    }

    fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        match self {
            Adapter::Lora(l) => l.import(take),
            Adapter::Ia3(a) => a.import(take),
        }
    }
}

/// A prompt-learning adapter: it works on the model's attention or input, not on linear layers.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PromptLearning {
    /// Prefix tuning (past keys and values per layer).
    Prefix(PrefixTuning),
    /// Prompt tuning (virtual input tokens).
    Prompt(PromptTuning),
}

impl PromptLearning {
    /// PEFT's `peft_type`.
    pub fn peft_type(&self) -> &'static str {
        match self {
            PromptLearning::Prefix(_) => "PREFIX_TUNING",
            PromptLearning::Prompt(_) => "PROMPT_TUNING",
        }
    }

    /// The saved tensor, PEFT's `prompt_embeddings`.
    pub fn prompt_embeddings(&self) -> Tensor<2> {
        match self {
            PromptLearning::Prefix(p) => p.table(),
            PromptLearning::Prompt(p) => p.embedding.val(),
        }
    }

    /// The config as PEFT writes it.
    pub fn to_peft_json(&self) -> Result<String> {
        match self {
            PromptLearning::Prefix(p) => p.config.to_peft_json(),
            PromptLearning::Prompt(p) => p.config.to_peft_json(),
        }
    }
}

/// Adds adapters of each method to any model whose layers host [`Adapter`]s.
pub trait AddAdapter: PeftModel<Adapter = Adapter> {
    /// Adds a LoRA (rsLoRA, DoRA) adapter called `name` to the modules `config` targets.
    /// Returns the adapted module paths.
    fn add_lora(&mut self, name: &str, config: &LoraConfig) -> Result<Vec<String>> {
        config.validate()?;
        self.add_adapter_with(name, &config.selector(), |path, base| {
            Ok(Adapter::Lora(Lora::init(config, path, base)?))
        })
    }

    /// Adds an IA3 adapter called `name`. Returns the adapted module paths.
    fn add_ia3(&mut self, name: &str, config: &Ia3Config) -> Result<Vec<String>> {
        config.validate()?;
        self.add_adapter_with(name, &config.selector(), |path, base| {
            let dims = base.weight.shape().dims::<2>();
            Ok(Adapter::Ia3(Ia3::init(
                config,
                path,
                dims,
                &base.weight.device(),
            )?))
        })
    }

    /// Adds adapter `name` whose update is the weighted sum of the LoRA adapters `adapters`
    /// (`(name, weight)` pairs), by concatenating their factors: PEFT's
    /// `add_weighted_adapter(..., combination_type="cat")`. Its rank is the sum of theirs and
    /// its `lora_alpha` equals the rank; each source's scaling and weight are folded into its
    /// rows of A, so `ΔW = Σ wᵢ·sᵢ·Aᵢ·Bᵢ` exactly, also with rsLoRA (the result does not use
    /// it). Like PEFT it is added frozen and inactive. The sources must be plain LoRA (no DoRA)
    /// on the same modules (PEFT also joins adapters on different modules; this refuses them);
    /// they are left as they were. Returns the adapted module paths.
    ///
    /// ```
    /// use burn::nn::LinearConfig;
    /// use burn::tensor::{Device, Distribution, Tensor};
    /// use burn_peft_adapters::{AddAdapter, Adapter, LoraConfig, LoraInit};
    /// use burn_peft_core::{AdaptedLinear, AdapterHost, PeftModel, TargetModules};
    ///
    /// #[derive(burn::module::Module, Debug)]
    /// struct Tiny { proj: AdaptedLinear<Adapter> }
    /// impl AdapterHost for Tiny {
    ///     type Adapter = Adapter;
    ///     fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
    ///         f("proj", &mut self.proj);
    ///     }
    /// }
    ///
    /// let device = Device::flex();
    /// let mut model = Tiny { proj: AdaptedLinear::new(LinearConfig::new(8, 8).init(&device)) };
    /// let lora = |seed| LoraConfig::new(2).with_init(LoraInit::Random).with_init_seed(seed)
    ///     .with_target_modules(TargetModules::names(["proj"]));
    /// model.add_lora("a", &lora(1)).unwrap();
    /// model.add_lora("b", &lora(2)).unwrap();
    /// model.add_concatenated_lora("ab", &[("a", 1.0), ("b", 1.0)]).unwrap();
    /// let x = Tensor::<2>::random([3, 8], Distribution::Default, &device);
    /// model.set_adapter(&["a", "b"]).unwrap();
    /// let both = model.proj.forward(x.clone());
    /// model.set_adapter(&["ab"]).unwrap();
    /// let one = model.proj.forward(x);
    /// assert!((both - one).abs().max().into_scalar::<f32>() < 1e-5);
    /// ```
    fn add_concatenated_lora(
        &mut self,
        name: &str,
        adapters: &[(&str, f64)],
    ) -> Result<Vec<String>> {
        if adapters.is_empty() {
            return Err(PeftError::InvalidConfig(
                "no adapters to concatenate".into(),
            ));
        }
        let known = self.adapter_names();
        if let Some((unknown, _)) = adapters.iter().find(|(n, _)| !known.iter().any(|k| k == n)) {
            return Err(PeftError::UnknownAdapter(unknown.to_string()));
        }
        // Each source's config (from its first layer) and factors per module path.
        let mut configs: Vec<Option<LoraConfig>> = vec![None; adapters.len()];
        let mut factors: BTreeMap<String, Vec<Option<(Tensor<2>, Tensor<2>)>>> = BTreeMap::new();
        let mut error = None;
        self.clone().visit_adapted_linears(&mut |path, layer| {
            for (i, (source, weight)) in adapters.iter().enumerate() {
                let Some(adapter) = layer.adapter(source) else {
                    continue;
                };
                let lora = match adapter {
                    Adapter::Lora(l) if l.magnitude.is_none() => l,
                    _ => {
                        error.get_or_insert(PeftError::InvalidConfig(format!(
                            "adapter '{source}' is not plain LoRA: only LoRA adapters without \
                             DoRA can be concatenated"
                        )));
                        continue;
                    }
                };
                configs[i].get_or_insert_with(|| lora.config.clone());
                let a = lora.lora_a.val().detach() * (weight * lora.scaling);
                factors
                    .entry(path.to_string())
                    .or_insert_with(|| vec![None; adapters.len()])[i] =
                    Some((a, lora.lora_b.val().detach()));
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        let configs: Vec<LoraConfig> = configs.into_iter().flatten().collect();
        let selector = configs[0].selector();
        if configs.iter().any(|c| c.selector() != selector) {
            return Err(PeftError::InvalidConfig(format!(
                "adapters {:?} adapt different modules: only adapters on the same modules can \
                 be concatenated",
                adapters.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            )));
        }
        // PEFT's rank: each source's largest, summed; a layer with smaller ranks is padded with
        // zeros so that every layer has the rank the config states.
        let rank: usize = configs
            .iter()
            .map(|c| c.rank_pattern.values().copied().fold(c.r, usize::max))
            .sum();
        let config = LoraConfig {
            r: rank,
            lora_alpha: rank as f64,
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            init_lora_weights: LoraInit::Default,
            init_seed: None,
            ..configs[0].clone()
        };
        let scaling = config.scaling_for(rank, rank as f64);
        self.add_adapter_with(name, &selector, |path, base| {
            let parts = factors.remove(path).ok_or_else(|| {
                PeftError::InvalidConfig(format!("no adapter to concatenate on {path}"))
            })?;
            let (mut a, mut b): (Vec<Tensor<2>>, Vec<Tensor<2>>) =
                parts.into_iter().flatten().unzip();
            let [d_in, d_out] = base.weight.dims();
            let device = base.weight.device();
            let used: usize = a.iter().map(|a| a.dims()[1]).sum();
            if used < rank {
                a.push(Tensor::zeros([d_in, rank - used], &device));
                b.push(Tensor::zeros([rank - used, d_out], &device));
            }
            Ok(Adapter::Lora(Lora::from_factors(
                config.clone(),
                Tensor::cat(a, 1),
                Tensor::cat(b, 0),
                scaling,
            )))
        })
    }
}

impl<M: PeftModel<Adapter = Adapter>> AddAdapter for M {}
