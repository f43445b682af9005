//! Joining LoRA adapters into one (PEFT's `add_weighted_adapter`).

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn_peft_core::{PeftError, Result};

use super::{Lora, LoraConfig, LoraInit};
use crate::{Adapter, AddAdapter};

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
/// impl AddAdapter for Tiny {}
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
pub fn add_concatenated<M: AddAdapter>(
    model: &mut M,
    name: &str,
    adapters: &[(&str, f64)],
) -> Result<Vec<String>> {
    if adapters.is_empty() {
        return Err(PeftError::InvalidConfig(
            "no adapters to concatenate".into(),
        ));
    }
    let known = model.adapter_names();
    if let Some((unknown, _)) = adapters.iter().find(|(n, _)| !known.iter().any(|k| k == n)) {
        return Err(PeftError::UnknownAdapter(unknown.to_string()));
    }
    // Each source's config (from its first layer) and factors per module path.
    let mut configs: Vec<Option<LoraConfig>> = vec![None; adapters.len()];
    let mut factors: BTreeMap<String, Vec<Option<(Tensor<2>, Tensor<2>)>>> = BTreeMap::new();
    let mut error = None;
    model.clone().visit_adapted_linears(&mut |path, layer| {
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
    model.add_adapter_with(name, &selector, |path, base| {
        let parts = factors.remove(path).ok_or_else(|| {
            PeftError::InvalidConfig(format!("no adapter to concatenate on {path}"))
        })?;
        let (mut a, mut b): (Vec<Tensor<2>>, Vec<Tensor<2>>) = parts.into_iter().flatten().unzip();
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
