//! IA3 on a small layer: PEFT's formulas, several adapters multiplying, merge round trips.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft_adapters::{Adapter, AddAdapter, Ia3Config};
use burn_peft_core::{AdaptedLinear, AdapterHost, PeftModel, TargetModules};

#[derive(Module, Debug)]
struct Block {
    k_proj: AdaptedLinear<Adapter>,
    down_proj: AdaptedLinear<Adapter>,
}

impl AdapterHost for Block {
    type Adapter = Adapter;
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        f("block.k_proj", &mut self.k_proj);
        f("block.down_proj", &mut self.down_proj);
    }

    // A model family declares PEFT's defaults for itself; these are the Llama family's.
    fn default_target_modules(&self, peft_type: &str) -> Option<TargetModules> {
        (peft_type == "IA3").then(|| TargetModules::names(["k_proj", "v_proj", "down_proj"]))
    }

    fn default_feedforward_modules(&self) -> Option<TargetModules> {
        Some(TargetModules::names(["down_proj"]))
    }
}

impl AddAdapter for Block {}

impl Block {
    /// A block whose layers map `d_in` features to `k_out` and `down_out`.
    fn new(d_in: usize, k_out: usize, down_out: usize, device: &Device) -> Self {
        Self {
            k_proj: AdaptedLinear::new(LinearConfig::new(d_in, k_out).init(device)),
            down_proj: AdaptedLinear::new(LinearConfig::new(d_in, down_out).init(device)),
        }
    }
}

fn scales(m: &Block, name: &str) -> (Tensor<1>, Tensor<1>) {
    let get = |l: &AdaptedLinear<Adapter>| match l.adapter(name) {
        Some(Adapter::Ia3(a)) => a.scale.val(),
        _ => unreachable!(),
    };
    (get(&m.k_proj), get(&m.down_proj))
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn ia3_scales_outputs_and_feedforward_inputs_and_multiplies() {
    let device = Device::flex();
    device.seed(4);
    let mut m = Block::new(6, 4, 5, &device);
    let base = m.clone();
    let config = Ia3Config {
        init_ia3_weights: false,
        ..Ia3Config::default()
    }
    .with_targets(
        TargetModules::names(["k_proj", "down_proj"]),
        TargetModules::names(["down_proj"]),
    );
    m.add_ia3("a", &config).unwrap();
    m.add_ia3("b", &config).unwrap();
    m.set_adapter(&["a", "b"]).unwrap();
    let (ka, da) = scales(&m, "a");
    let (kb, db) = scales(&m, "b");
    assert_eq!(ka.dims(), [4]); // output features of k_proj
    assert_eq!(da.dims(), [6]); // input features of down_proj
    let x = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
    // k_proj: base(x) * l_a * l_b.
    let want = base.k_proj.forward(x.clone()) * (ka * kb).unsqueeze::<2>();
    assert!(max_diff(m.k_proj.forward(x.clone()), want) < 1e-5);
    // down_proj: base(x * l_a * l_b).
    let want = base
        .down_proj
        .forward(x.clone() * (da * db).unsqueeze::<2>());
    assert!(max_diff(m.down_proj.forward(x.clone()), want.clone()) < 1e-5);
    // Merged weights compute the same (the output-scaled layer's bias is scaled too, as in
    // PEFT); unmerge restores the base weight and bias.
    let k_out = m.k_proj.forward(x.clone());
    m.merge_adapter(None).unwrap();
    assert!(max_diff(m.down_proj.forward(x.clone()), want) < 1e-5);
    assert!(max_diff(m.k_proj.forward(x.clone()), k_out) < 1e-5);
    m.unmerge_adapter().unwrap();
    assert!(
        max_diff(
            m.down_proj.base.weight.val(),
            base.down_proj.base.weight.val()
        ) < 1e-5
    );
    assert!(max_diff(m.k_proj.base.weight.val(), base.k_proj.base.weight.val()) < 1e-5);
    let bias = |l: &AdaptedLinear<Adapter>| l.base.bias.as_ref().unwrap().val();
    assert!(max_diff(bias(&m.k_proj), bias(&base.k_proj)) < 1e-5);
}

#[test]
fn default_ia3_starts_as_identity_and_bad_regex_fails() {
    let device = Device::flex();
    let mut m = Block::new(3, 3, 3, &device);
    let x = Tensor::<2>::ones([1, 3], &device);
    let before = m.k_proj.forward(x.clone());
    // Llama defaults: k_proj (output), down_proj (feed-forward input); v_proj is absent here.
    assert_eq!(m.add_ia3("d", &Ia3Config::default()).unwrap().len(), 2);
    assert!(max_diff(m.k_proj.forward(x), before) == 0.0);
    let bad = Ia3Config::default().with_targets(
        TargetModules::Pattern("(".into()),
        TargetModules::names(["down_proj"]),
    );
    assert!(m.add_ia3("e", &bad).is_err());
}

#[test]
fn feedforward_modules_outside_the_targets_are_refused() {
    let device = Device::flex();
    let mut m = Block::new(3, 3, 3, &device);
    // Against the default targets (k_proj, v_proj, down_proj) ...
    let config = Ia3Config {
        feedforward_modules: Some(TargetModules::names(["gate_proj"])),
        ..Ia3Config::default()
    };
    let err = m.add_ia3("a", &config).unwrap_err().to_string();
    assert!(err.contains("not a target: gate_proj"), "{err}");
    // ... and against given ones.
    let config = Ia3Config::default().with_targets(
        TargetModules::names(["k_proj"]),
        TargetModules::names(["down_proj"]),
    );
    assert!(m.add_ia3("b", &config).is_err());
    assert!(m.k_proj.adapter("a").is_none() && m.k_proj.adapter("b").is_none());
    // A feed-forward list alone keeps the default targets.
    let config = Ia3Config {
        feedforward_modules: Some(TargetModules::names(["k_proj"])),
        ..Ia3Config::default()
    };
    assert_eq!(m.add_ia3("c", &config).unwrap().len(), 2);
    assert!(config.is_feedforward("block.k_proj").unwrap());
}
