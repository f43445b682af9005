//! LoRA / DoRA numerics: gradients against finite differences, freezing, merge round trips and
//! initialization schemes, on small random layers built in code.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_peft_adapters::{
    Adapter, AdapterConfig, AddAdapter, LoraConfig, LoraInit, PrefixTuningConfig,
};
use burn_peft_core::{AdaptedLinear, AdapterHost, PeftModel, TargetModules, TrainableParameters};

/// A two-layer network standing in for a user's own model.
#[derive(Module, Debug)]
struct TwoLayer {
    first: AdaptedLinear<Adapter>,
    second: AdaptedLinear<Adapter>,
}

impl AdapterHost for TwoLayer {
    type Adapter = Adapter;
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        f("net.first", &mut self.first);
        f("net.second", &mut self.second);
    }
}

impl AddAdapter for TwoLayer {}

impl TwoLayer {
    fn new(d_in: usize, hidden: usize, d_out: usize, device: &Device) -> Self {
        Self {
            first: AdaptedLinear::new(LinearConfig::new(d_in, hidden).init(device)),
            second: AdaptedLinear::new(LinearConfig::new(hidden, d_out).init(device)),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.second.forward(self.first.forward(x).tanh())
    }
}

fn lora(r: usize, init: LoraInit) -> LoraConfig {
    LoraConfig::new(r)
        .with_lora_alpha(3.0)
        .with_init(init)
        .with_target_modules(TargetModules::names(["first", "second"]))
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// Loss L = Σ y ⊙ c for a fixed random c, on a fixed batch.
fn loss(model: &TwoLayer, x: &Tensor<2>, c: &Tensor<2>) -> Tensor<1> {
    (model.forward(x.clone()) * c.clone()).sum()
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn with_value(p: &Param<Tensor<2>>, data: Vec<f32>, device: &Device) -> Param<Tensor<2>> {
    let shape = p.shape().dims::<2>();
    p.clone()
        .map(|_| Tensor::from_data(TensorData::new(data, shape), device))
}

#[test]
fn lora_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    device.seed(7);
    for rslora in [false, true] {
        let mut model = TwoLayer::new(5, 4, 3, &device);
        model
            .add_lora(
                "default",
                &lora(2, LoraInit::Random).with_use_rslora(rslora),
            )
            .unwrap();
        let x = Tensor::<2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
        let c = Tensor::<2>::random([3, 3], Distribution::Normal(0.0, 1.0), &device);
        let grads = loss(&model, &x, &c).backward();
        let l = model.first.adapters()[0].as_lora().unwrap();
        for (name, param) in [("A", &l.lora_a), ("B", &l.lora_b)] {
            let analytic = values(param.grad(&grads).unwrap());
            let base = values(param.val());
            let eps = 1e-2f32;
            for i in 0..base.len() {
                let eval = |delta: f32| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let mut m = model.clone();
                    let ml = m.first.adapters_mut()[0].as_lora_mut().unwrap();
                    let p = with_value(param, v, &device);
                    if name == "A" {
                        ml.lora_a = p;
                    } else {
                        ml.lora_b = p;
                    }
                    loss(&m, &x, &c).into_scalar::<f32>()
                };
                let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[i]).abs() < 2e-2 * (1.0 + numeric.abs()),
                    "rslora={rslora} d{name}[{i}]: analytic {} numeric {numeric}",
                    analytic[i]
                );
            }
        }
    }
}

#[test]
fn dora_magnitude_gradient_matches_finite_differences() {
    let device = Device::flex().autodiff();
    device.seed(11);
    let mut model = TwoLayer::new(4, 3, 2, &device);
    model
        .add_lora("default", &lora(2, LoraInit::Random).with_use_dora(true))
        .unwrap();
    let x = Tensor::<2>::random([2, 4], Distribution::Normal(0.0, 1.0), &device);
    let c = Tensor::<2>::random([2, 2], Distribution::Normal(0.0, 1.0), &device);
    let grads = loss(&model, &x, &c).backward();
    let l = model.first.adapters()[0].as_lora().unwrap();
    let m = l.magnitude.as_ref().unwrap();
    let analytic: Vec<f32> = m.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
    let base: Vec<f32> = m.val().into_data().try_to_vec().unwrap();
    for i in 0..base.len() {
        let eval = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            let mut mm = model.clone();
            let ml = mm.first.adapters_mut()[0].as_lora_mut().unwrap();
            ml.magnitude = Some(
                m.clone()
                    .map(|_| Tensor::from_data(TensorData::new(v, [base.len()]), &device)),
            );
            loss(&mm, &x, &c).into_scalar::<f32>()
        };
        let numeric = (eval(1e-2) - eval(-1e-2)) / 2e-2;
        assert!(
            (numeric - analytic[i]).abs() < 2e-2 * (1.0 + numeric.abs()),
            "dm[{i}]: analytic {} numeric {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn frozen_base_gets_no_gradient_and_no_optimizer_state() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = TwoLayer::new(6, 5, 4, &device);
    let full = TrainableParameters::of(&model.clone().set_require_grad(true));
    model
        .add_lora("default", &lora(2, LoraInit::Random))
        .unwrap();
    let report = TrainableParameters::of(&model);
    let adapter_params = (6 * 2 + 2 * 5) + (5 * 2 + 2 * 4);
    assert_eq!(report.trainable, adapter_params);
    assert_eq!(report.total, full.total + adapter_params);

    let x = Tensor::<2>::random([3, 6], Distribution::Default, &device);
    let c = Tensor::<2>::random([3, 4], Distribution::Default, &device);
    let grads = loss(&model, &x, &c).backward();
    assert!(model.first.base.weight.grad(&grads).is_none());
    assert!(
        model
            .first
            .base
            .bias
            .as_ref()
            .unwrap()
            .grad(&grads)
            .is_none()
    );
    let l = model.second.adapters()[0].as_lora().unwrap();
    assert!(l.lora_b.grad(&grads).is_some());

    let grads = GradientsParams::from_grads(grads, &model);
    assert_eq!(grads.len(), 4, "only the four LoRA factors have gradients");
    let mut optim = AdamWConfig::new().init();
    let before = model.first.base.weight.val().into_data();
    let l = model.first.adapters()[0].as_lora().unwrap();
    let a_before = l.lora_a.val().into_data();
    let stepped = optim.step(1e-2, model, grads);
    assert_eq!(stepped.first.base.weight.val().into_data(), before);
    let l = stepped.first.adapters()[0].as_lora().unwrap();
    assert_ne!(l.lora_a.val().into_data(), a_before);
    // AdamW keeps two moments per parameter it saw: the four factors, nothing for the base.
    assert_eq!(optim.to_record().len(), 2 * 4);
}

#[test]
fn merge_then_unmerge_restores_weights_for_random_configs() {
    let device = Device::flex();
    for case in 0..24u64 {
        device.seed(100 + case);
        let d_in = 2 + (case as usize * 7) % 9;
        let d_out = 1 + (case as usize * 5) % 8;
        let r = 1 + (case as usize) % d_in.min(4);
        let config = lora(r, LoraInit::Random)
            .with_use_dora(case % 3 == 0)
            .with_use_rslora(case % 2 == 1)
            .with_lora_alpha(0.5 + case as f64);
        let mut model = TwoLayer::new(d_in, 3, d_out, &device);
        model.add_lora("a", &config).unwrap();
        if case % 4 == 1 {
            model
                .add_lora("b", &config.clone().with_use_dora(false))
                .unwrap();
            model.set_adapter(&["a", "b"]).unwrap();
        }
        let x = Tensor::<2>::random([4, d_in], Distribution::Normal(0.0, 1.0), &device);
        let w0 = model.first.base.weight.val();
        let y = model.forward(x.clone());
        model.merge_adapter(None).unwrap();
        let y_merged = model.forward(x.clone());
        assert!(
            max_abs_diff(y.clone(), y_merged) < 1e-4,
            "case {case}: merged output differs"
        );
        assert!(max_abs_diff(model.first.base.weight.val(), w0.clone()) > 1e-6);
        model.unmerge_adapter().unwrap();
        assert!(
            max_abs_diff(model.first.base.weight.val(), w0) < 1e-5,
            "case {case}: unmerge did not restore W"
        );
        assert!(max_abs_diff(model.forward(x), y) < 1e-4);
    }
}

#[test]
fn default_and_gaussian_inits_start_as_the_base() {
    let device = Device::flex();
    device.seed(5);
    for init in [LoraInit::Default, LoraInit::Gaussian] {
        let base = TwoLayer::new(64, 32, 8, &device);
        let mut model = base.clone();
        model
            .add_lora("default", &lora(8, init).with_use_dora(true))
            .unwrap();
        let x = Tensor::<2>::random([5, 64], Distribution::Normal(0.0, 1.0), &device);
        assert!(max_abs_diff(model.forward(x.clone()), base.forward(x)) < 1e-5);
        let l = model.first.adapters()[0].as_lora().unwrap();
        assert_eq!(l.lora_b.val().abs().max().into_scalar::<f32>(), 0.0);
        let a = l.lora_a.val();
        match init {
            // kaiming-uniform(a=√5) on [r, in] is U(-1/√in, 1/√in).
            LoraInit::Default => {
                assert!(a.clone().abs().max().into_scalar::<f32>() <= 1.0 / 8.0);
                assert!(a.abs().max().into_scalar::<f32>() > 0.1);
            }
            _ => {
                // N(0, 1/r): the sample std is close to 1/8.
                let std = a.clone().powi_scalar(2).mean().sqrt().into_scalar::<f32>();
                assert!((std - 0.125).abs() < 0.02, "std {std}");
            }
        }
    }
}

#[test]
fn pissa_moves_the_principal_part_into_the_adapter() {
    let device = Device::flex();
    device.seed(9);
    let base_layer: Linear = LinearConfig::new(12, 10).init(&device);
    let w = base_layer.weight.val();
    let mut model = TwoLayer {
        first: AdaptedLinear::new(base_layer),
        second: AdaptedLinear::new(LinearConfig::new(10, 3).init(&device)),
    };
    let x = Tensor::<2>::random([4, 12], Distribution::Normal(0.0, 1.0), &device);
    let y0 = model.forward(x.clone());
    model
        .add_lora("default", &lora(3, LoraInit::Pissa))
        .unwrap();
    // The model computes the same function at the start...
    assert!(max_abs_diff(model.forward(x), y0) < 1e-4);
    let l = model.first.adapters()[0].as_lora().unwrap();
    let delta = l.delta_weight();
    let residual = model.first.base.weight.val();
    assert!(max_abs_diff(residual.clone() + delta.clone(), w.clone()) < 1e-4);
    // ...and the adapter holds the best rank-3 part: the residual keeps only the rest of the
    // spectrum, so ‖W‖² = ‖ΔW‖² + ‖W_res‖² (orthogonal pieces).
    let sq = |t: Tensor<2>| t.powi_scalar(2).sum().into_scalar::<f32>();
    let (total, top, rest) = (sq(w.clone()), sq(delta), sq(residual));
    assert!(
        (total - top - rest).abs() < 1e-3 * total,
        "{total} {top} {rest}"
    );
    let (_, s, _) = burn::linalg::svd::<2, 1>(w.transpose(), 64);
    let s: Vec<f32> = s.into_data().try_to_vec().unwrap();
    let best: f32 = s[..3].iter().map(|v| v * v).sum();
    assert!(
        (top - best).abs() < 1e-3 * best,
        "top {top} best rank-3 {best}"
    );
}

#[test]
fn dropout_is_random_in_training_and_off_in_eval() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut model = TwoLayer::new(16, 8, 4, &device);
    model
        .add_lora("default", &lora(4, LoraInit::Random).with_lora_dropout(0.5))
        .unwrap();
    let x = Tensor::<2>::ones([2, 16], &device);
    let a = model.forward(x.clone());
    let b = model.forward(x.clone());
    assert!(max_abs_diff(a, b) > 1e-6, "dropout should vary in training");
    let eval = model.valid();
    let a = eval.forward(x.clone().inner());
    let b = eval.forward(x.inner());
    assert!(max_abs_diff(a, b) == 0.0);
}

#[test]
fn exclusions_layers_and_duplicate_names() {
    let device = Device::flex();
    let mut model = TwoLayer::new(4, 4, 4, &device);
    let paths = model
        .add_lora(
            "x",
            &lora(2, LoraInit::Default).with_exclude_modules(TargetModules::names(["second"])),
        )
        .unwrap();
    assert_eq!(paths, vec!["net.first".to_string()]);
    assert!(model.add_lora("x", &lora(2, LoraInit::Default)).is_err());
    let regex =
        LoraConfig::new(2).with_target_modules(TargetModules::Pattern("net\\.sec.*".into()));
    assert_eq!(
        model.add_lora("y", &regex).unwrap(),
        vec!["net.second".to_string()]
    );
    let bad = LoraConfig::new(2).with_target_modules(TargetModules::Pattern("(".into()));
    assert!(model.add_lora("z", &bad).is_err());
    assert_eq!(
        model.adapter_names(),
        vec!["x".to_string(), "y".to_string()]
    );
}

#[test]
fn a_config_without_targets_takes_the_model_family_default_or_is_refused() {
    let device = Device::flex();
    // TwoLayer declares no defaults (AdapterHost::default_target_modules is None): the config
    // must name its targets, and the error says so; nothing is added.
    let mut model = TwoLayer::new(4, 6, 3, &device);
    let err = model
        .add_lora("a", &LoraConfig::new(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("target_modules is not set"), "{err}");
    assert!(model.adapter_names().is_empty());
    // Through the one config enum, every method goes the same way.
    let err = model
        .add_adapter("a", &AdapterConfig::Ia3(Default::default()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no default for IA3"), "{err}");
    let err = model
        .add_adapter("a", &AdapterConfig::Prefix(PrefixTuningConfig::new(2)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("without prompt-learning support"), "{err}");
    // The default is resolved when the adapter is added, so that the saved config names it.
    let named = LoraConfig::new(2).with_target_modules(TargetModules::names(["first"]));
    model.add_adapter("b", &AdapterConfig::from(named)).unwrap();
    let config = model.first.adapter("b").unwrap().config();
    assert_eq!(config.peft_type(), "LORA");
    assert!(model.second.adapter("b").is_none());
}

fn factor_a(model: &TwoLayer, layer: usize) -> Vec<f32> {
    let l = if layer == 0 {
        &model.first
    } else {
        &model.second
    };
    match l.adapter("default") {
        Some(Adapter::Lora(a)) => values(a.lora_a.val()),
        _ => unreachable!(),
    }
}

#[test]
fn a_seeded_init_ignores_the_device_generator_and_follows_kaiming() {
    let device = Device::flex();
    let config = lora(4, LoraInit::Default).with_init_seed(17);
    let init = |device_seed: u64, config: &LoraConfig| {
        device.seed(device_seed);
        let mut m = TwoLayer::new(64, 32, 8, &device);
        m.add_lora("default", config).unwrap();
        m
    };
    // The device's generator does not matter; the host seed and the module path do.
    let (one, two) = (init(1, &config), init(2, &config));
    assert_eq!(factor_a(&one, 0), factor_a(&two, 0));
    assert_eq!(factor_a(&one, 1), factor_a(&two, 1));
    assert_ne!(factor_a(&one, 0)[..32], factor_a(&one, 1)[..32]);
    let other = init(1, &lora(4, LoraInit::Default).with_init_seed(18));
    assert_ne!(factor_a(&one, 0), factor_a(&other, 0));
    // Without a seed the device generator decides, as before.
    let unseeded = lora(4, LoraInit::Default);
    assert_ne!(
        factor_a(&init(1, &unseeded), 0),
        factor_a(&init(2, &unseeded), 0)
    );
    // Kaiming-uniform on [-1/sqrt(64), 1/sqrt(64)): 256 draws, mean 0, variance bound²/3.
    let a = factor_a(&one, 0);
    let bound = 1.0 / 8.0;
    assert!(a.iter().all(|v| (-bound..bound).contains(v)));
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.2,
        "variance {var}"
    );
    // Gaussian init: standard deviation 1/r (PEFT's), so variance 1/16 here.
    let g = init(1, &lora(4, LoraInit::Gaussian).with_init_seed(3));
    let a = factor_a(&g, 0);
    let var = a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32;
    assert!((var / 0.0625 - 1.0).abs() < 0.25, "variance {var}");
}

/// PEFT's `add_weighted_adapter(..., combination_type="cat")`: the joined adapter computes the
/// weighted sum of its sources (rsLoRA and a rank pattern included, so the rank is padded),
/// is frozen and inactive, survives a save and load in PEFT's format, and bad sources are
/// refused without changing the model.
#[test]
fn concatenated_lora_computes_the_weighted_sum_of_its_sources() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut model = TwoLayer::new(6, 5, 4, &device);
    let first = lora(2, LoraInit::Random).with_init_seed(1);
    let mut second = lora(3, LoraInit::Random)
        .with_init_seed(2)
        .with_use_rslora(true);
    second.rank_pattern.insert("second".into(), 1);
    model.add_lora("a", &first).unwrap();
    model.add_lora("b", &second).unwrap();
    let x = Tensor::<2>::random([3, 6], Distribution::Default, &device);
    // The first layer's change of output is linear in its adapters' updates.
    let layer_delta = |m: &mut TwoLayer, names: &[&str]| {
        m.set_adapter(names).unwrap();
        let with = m.first.forward(x.clone());
        m.disable_adapters().unwrap();
        let without = m.first.forward(x.clone());
        m.enable_adapters();
        with - without
    };
    let da = layer_delta(&mut model, &["a"]);
    let db = layer_delta(&mut model, &["b"]);
    let paths = model
        .add_concatenated_lora("ab", &[("a", 0.5), ("b", -1.0)])
        .unwrap();
    assert_eq!(paths, ["net.first", "net.second"]);
    assert_eq!(model.active_adapters(), ["b"], "added inactive, as in PEFT");
    let b_params = 6 * 3 + 3 * 5 + 5 + 4; // "b": rank 3 on the first layer, 1 on the second
    assert_eq!(
        TrainableParameters::of(&model).trainable,
        b_params,
        "added frozen; the active adapter still trains"
    );
    let joined = model.first.adapter("ab").unwrap().as_lora().unwrap();
    // PEFT's rank: 2 + max(3, 1); the second layer's 2 + 1 is padded with zeros.
    assert_eq!(joined.config.r, 5);
    assert_eq!(joined.config.lora_alpha, 5.0);
    assert!(!joined.config.use_rslora);
    assert_eq!(
        model
            .second
            .adapter("ab")
            .unwrap()
            .as_lora()
            .unwrap()
            .rank(),
        5
    );
    let dab = layer_delta(&mut model, &["ab"]);
    assert!(max_abs_diff(dab, da * 0.5 - db) < 1e-5);
    model.set_adapter(&["ab"]).unwrap();
    let out = model.forward(x.clone());

    // Saved and loaded in PEFT's format, it computes the same.
    let dir = tempfile::tempdir().unwrap();
    burn_peft_adapters::save_adapter(&model, "ab", dir.path()).unwrap();
    let mut fresh = model.clone();
    fresh.delete_adapter("ab").unwrap();
    burn_peft_adapters::load_adapter(&mut fresh, dir.path(), "ab").unwrap();
    fresh.set_adapter(&["ab"]).unwrap();
    assert!(max_abs_diff(fresh.forward(x.clone()), out) < 1e-6);

    // Refused, and the model is unchanged: DoRA, an unknown name, other modules, nothing.
    let names = model.adapter_names();
    let mut dora = lora(2, LoraInit::Default);
    dora.use_dora = true;
    model.add_lora("d", &dora).unwrap();
    let err = model
        .add_concatenated_lora("x", &[("a", 1.0), ("d", 1.0)])
        .unwrap_err();
    assert!(err.to_string().contains("DoRA"), "{err}");
    model.delete_adapter("d").unwrap();
    let only_first = lora(2, LoraInit::Random).with_target_modules(TargetModules::names(["first"]));
    model.add_lora("f", &only_first).unwrap();
    let err = model
        .add_concatenated_lora("x", &[("a", 1.0), ("f", 1.0)])
        .unwrap_err();
    assert!(err.to_string().contains("same modules"), "{err}");
    model.delete_adapter("f").unwrap();
    assert!(model.add_concatenated_lora("x", &[("zz", 1.0)]).is_err());
    assert!(model.add_concatenated_lora("x", &[]).is_err());
    assert!(
        model.add_concatenated_lora("a", &[("b", 1.0)]).is_err(),
        "name taken"
    );
    assert_eq!(model.adapter_names(), names);

    // Active but frozen: both run, only "b" trains, until set_adapter resets it.
    model.set_adapter(&["a", "b"]).unwrap();
    let all = TrainableParameters::of(&model).trainable;
    model.set_requires_grad(&["a", "ab"], false).unwrap();
    assert_eq!(TrainableParameters::of(&model).trainable, b_params);
    assert_eq!(all, b_params + 2 * (6 + 5) + 2 * (5 + 4));
    assert_eq!(model.active_adapters(), ["a", "b"]);
    assert!(model.set_requires_grad(&["zz"], false).is_err());
    model.set_adapter(&["a", "b"]).unwrap();
    assert_eq!(TrainableParameters::of(&model).trainable, all);
}

/// `AdaptedLinear` folds a batched input's leading dimensions into rows: a `[2, 3, in]` input
/// gives the output and gradients (input, trainable base weight and bias, LoRA's A and B) of
/// the same six rows passed as `[6, in]`.
#[test]
fn batched_input_gives_the_rows_results() {
    let device = Device::flex().autodiff();
    device.seed(11);
    let (d_in, d_out) = (5, 4);
    let mut model = TwoLayer::new(d_in, d_out, 1, &device);
    let config = lora(2, LoraInit::Random).with_target_modules(TargetModules::names(["first"]));
    model.add_lora("default", &config).unwrap();
    // The base trains too, as in full fine-tuning with an adapter.
    let mut layer = model.first;
    layer.base.weight = layer.base.weight.clone().set_require_grad(true);
    layer.base.bias = layer.base.bias.take().map(|b| b.set_require_grad(true));
    let rows = Tensor::<2>::random([6, d_in], Distribution::Normal(0.0, 1.0), &device);
    let c = Tensor::<2>::random([6, d_out], Distribution::Normal(0.0, 1.0), &device);

    let run = |batched: bool| {
        let x = rows.clone().detach().require_grad();
        let y = if batched {
            let y = layer.forward(x.clone().reshape([2, 3, d_in]));
            assert_eq!(y.dims(), [2, 3, d_out]);
            y.reshape([6, d_out])
        } else {
            layer.forward(x.clone())
        };
        let grads = (y.clone() * c.clone()).sum().backward();
        let lora = layer.adapter("default").and_then(Adapter::as_lora);
        let lora = lora.expect("a LoRA adapter");
        (
            values(y),
            values(x.grad(&grads).expect("input gradient")),
            values(
                layer
                    .base
                    .weight
                    .val()
                    .grad(&grads)
                    .expect("weight gradient"),
            ),
            layer.base.bias.as_ref().map(|b| {
                let g = b.val().grad(&grads).expect("bias gradient");
                values(g.unsqueeze())
            }),
            values(lora.lora_a.val().grad(&grads).expect("A gradient")),
            values(lora.lora_b.val().grad(&grads).expect("B gradient")),
        )
    };
    let (batched, flat) = (run(true), run(false));
    let close = |what: &str, a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: {x} against {y}"
            );
        }
    };
    close("output", &batched.0, &flat.0);
    close("input gradient", &batched.1, &flat.1);
    close("weight gradient", &batched.2, &flat.2);
    close("bias gradient", &batched.3.unwrap(), &flat.3.unwrap());
    close("A gradient", &batched.4, &flat.4);
    close("B gradient", &batched.5, &flat.5);
}
