//! Gradient checkpointing recomputes activations in the backward pass, by operation (burn's
//! balanced strategy) or by decoder layer (`Llama::layerwise_gradients`): the gradients of
//! every adapter method and of full fine-tuning must be those of a plain backward pass.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{
    AddAdapter, Ia3Config, LoraConfig, LoraInit, PrefixTuningConfig, PromptHost, PromptTuningConfig,
};
use burn_peft_core::{AdapterHost, Precision, TargetModules};
use burn_peft_models::{Llama, LlamaConfig};
use burn_peft_optim::make_trainable;

/// The device's random generator is shared: the dropout test seeds it and then draws, so no
/// other test may draw in between.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Attaches a method to a model.
type AddFn = Box<dyn Fn(&mut Llama)>;

/// The same model with every parameter rebuilt on `device` from its values (no shared RNG).
fn on_device(model: &Llama, device: &Device) -> Llama {
    struct Move<'a>(&'a Device);
    impl ModuleMapper for Move<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let trains = p.is_require_grad();
            let value = Tensor::from_data(p.val().into_data(), self.0);
            p.map(|_| value).set_require_grad(trains)
        }
    }
    model.clone().map(&mut Move(device))
}

/// How the gradients are computed.
#[derive(Clone, Copy, PartialEq)]
enum Backward {
    /// One backward pass of the loss.
    Plain,
    /// Layer by layer, recomputing each layer, the loss multiplied by this before its
    /// backward pass.
    Layerwise(f32),
}

fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let ids: Vec<i64> = (0..32).map(|i| (i * 5 + 1) % 40).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 16]), device);
    let mask: Vec<i64> = (0..32).map(|i| i64::from(i % 16 < 13 || i < 16)).collect();
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, [2, 16]), device);
    (ids, mask)
}

/// The loss and every gradient, flattened in visiting order.
fn gradients_by(model: &Llama, device: &Device, how: Backward, seed: u64) -> (f32, Vec<f32>) {
    struct Flatten<'a>(&'a GradientsParams, Vec<f32>);
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.extend(g.into_data().try_to_vec::<f32>().unwrap());
            }
        }
    }
    let (ids, mask) = batch(device);
    let (loss, grads) = match how {
        Backward::Plain => {
            let loss = model.lm_loss(ids, Some(mask));
            let grads = GradientsParams::from_grads(loss.backward(), model);
            (loss, grads)
        }
        Backward::Layerwise(scale) => model.layerwise_gradients(
            ids.clone(),
            Some(mask.clone()),
            |hidden, p| model.lm_loss_from_hidden(hidden, p, ids, Some(mask)),
            &|loss| loss * scale,
            seed,
        ),
    };
    let mut f = Flatten(&grads, Vec::new());
    model.visit(&mut f);
    (loss.into_scalar::<f32>(), f.1)
}

/// Every gradient, flattened in visiting order.
fn gradients(model: &Llama, device: &Device) -> Vec<f32> {
    gradients_by(model, device, Backward::Plain, 0).1
}

/// The largest difference between two gradients, relative to the reference's magnitude.
fn worst_relative(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0.0f32, f32::max)
}

#[test]
fn checkpointed_gradients_equal_the_plain_ones() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let plain = Device::flex().autodiff();
    let checkpointed = Device::flex().autodiff().gradient_checkpointing();
    assert!(checkpointed.gradient_checkpointing_strategy().is_some());
    let lora = LoraConfig::new(4)
        .with_lora_alpha(8.0)
        .with_init(LoraInit::Random)
        .with_target_modules(TargetModules::all_linear());
    let methods: Vec<(&str, AddFn)> = vec![
        (
            "lora",
            Box::new(move |m| drop(m.add_lora("a", &lora).unwrap())),
        ),
        (
            "ia3",
            Box::new(|m| drop(m.add_ia3("a", &Ia3Config::default()).unwrap())),
        ),
        ("full", Box::new(|m| *m = make_trainable(m.clone()))),
    ];
    for (name, add) in methods {
        let mut model = Llama::init(&LlamaConfig::tiny(40), &plain);
        add(&mut model);
        let want = gradients(&model, &plain);
        let got = gradients(&on_device(&model, &checkpointed), &checkpointed);
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(want.iter().any(|g| g.abs() > 1e-6), "{name}: no gradient");
        let worst = worst_relative(&got, &want);
        assert!(worst < 1e-4, "{name}: relative difference {worst}");
    }
}

#[test]
fn layerwise_gradients_equal_one_backward_pass() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex().autodiff();
    let lora = |dora: bool| {
        LoraConfig::new(4)
            .with_lora_alpha(8.0)
            .with_init(LoraInit::Random)
            .with_use_dora(dora)
            .with_target_modules(TargetModules::all_linear())
    };
    let methods: Vec<(&str, bool, AddFn)> = vec![
        (
            "lora",
            true,
            Box::new(move |m| drop(m.add_lora("a", &lora(false)).unwrap())),
        ),
        (
            "dora",
            true,
            Box::new(move |m| drop(m.add_lora("a", &lora(true)).unwrap())),
        ),
        (
            // Only the last layer trains: the first layer's recomputation is skipped.
            "lora on layer 1",
            true,
            Box::new(move |m| {
                let c = lora(false).with_layers_to_transform(vec![1]);
                drop(m.add_lora("a", &c).unwrap())
            }),
        ),
        (
            // Only the first layer trains: the gradient goes back through a frozen layer.
            "lora on layer 0",
            true,
            Box::new(move |m| {
                let c = lora(false).with_layers_to_transform(vec![0]);
                drop(m.add_lora("a", &c).unwrap())
            }),
        ),
        (
            // Layer 0's adapters are trainable but disabled: they take no part.
            "lora, layer 0 disabled",
            true,
            Box::new(move |m| {
                drop(m.add_lora("a", &lora(false)).unwrap());
                m.visit_adapted_linears(&mut |path, linear| {
                    linear.set_disabled(path.starts_with("model.layers.0."));
                });
            }),
        ),
        (
            // A frozen prefix in front of every layer, a LoRA training.
            "frozen prefix, lora",
            true,
            Box::new(move |m| {
                m.add_prefix_tuning("p", &PrefixTuningConfig::new(3))
                    .unwrap();
                m.prompt_slot_mut().map(Module::no_grad);
                drop(m.add_lora("a", &lora(false)).unwrap());
            }),
        ),
        (
            "ia3",
            true,
            Box::new(|m| drop(m.add_ia3("a", &Ia3Config::default()).unwrap())),
        ),
        (
            "prefix",
            true,
            Box::new(|m| {
                let mut c = PrefixTuningConfig::new(3);
                c.prefix_projection = true;
                m.add_prefix_tuning("a", &c).unwrap()
            }),
        ),
        (
            "prompt",
            true,
            Box::new(|m| {
                m.add_prompt_tuning("a", &PromptTuningConfig::new(3))
                    .unwrap()
            }),
        ),
        (
            // Activations in bf16: the layers' inputs and their gradients are bf16 too.
            "lora, bf16",
            true,
            Box::new(move |m| {
                drop(m.add_lora("a", &lora(false)).unwrap());
                m.set_precision(Precision::Bf16);
            }),
        ),
        (
            "full, tied",
            true,
            Box::new(|m| *m = make_trainable(m.clone())),
        ),
        (
            "full, untied",
            false,
            Box::new(|m| *m = make_trainable(m.clone())),
        ),
    ];
    for (name, tied, add) in methods {
        let mut config = LlamaConfig::tiny(40);
        config.tie_word_embeddings = tied;
        let mut model = Llama::init(&config, &device);
        add(&mut model);
        let (want_loss, want) = gradients_by(&model, &device, Backward::Plain, 0);
        let (loss, got) = gradients_by(&model, &device, Backward::Layerwise(1.0), 0);
        assert_eq!(got.len(), want.len(), "{name}: gradients missing");
        assert!(want.iter().any(|g| g.abs() > 1e-6), "{name}: no gradient");
        assert!(
            (loss - want_loss).abs() < 1e-6,
            "{name}: loss {loss} against {want_loss}"
        );
        let worst = worst_relative(&got, &want);
        assert!(worst < 1e-4, "{name}: relative difference {worst}");
        // The scale (accumulation, loss scaling) reaches every gradient.
        let (_, scaled) = gradients_by(&model, &device, Backward::Layerwise(0.25), 0);
        let quarter: Vec<f32> = want.iter().map(|g| g * 0.25).collect();
        let worst = worst_relative(&scaled, &quarter);
        assert!(worst < 1e-4, "{name}, scaled: relative difference {worst}");
    }
}

/// With dropout, each layer must draw the same masks when it is recomputed as in the forward
/// pass: the gradient then matches the slope of the loss (same seed, same masks) along the
/// gradient's direction.
#[test]
fn layerwise_gradients_with_dropout_follow_the_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    struct Shift<'a>(&'a [f32], usize, f32);
    impl ModuleMapper for Shift<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !p.is_require_grad() {
                return p;
            }
            let value = p.val();
            let (shape, device) = (value.shape(), value.device());
            let mut data = value.into_data().try_to_vec::<f32>().unwrap();
            for v in &mut data {
                *v += self.2 * self.0[self.1];
                self.1 += 1;
            }
            let value = Tensor::from_data(TensorData::new(data, shape), &device);
            p.map(|_| value).set_require_grad(true)
        }
    }
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = Llama::init(&LlamaConfig::tiny(40), &device);
    let config = LoraConfig::new(4)
        .with_lora_alpha(8.0)
        .with_init(LoraInit::Random)
        .with_lora_dropout(0.5)
        .with_target_modules(TargetModules::all_linear());
    model.add_lora("a", &config).unwrap();
    let (loss, grad) = gradients_by(&model, &device, Backward::Layerwise(1.0), 11);
    let (again, same) = gradients_by(&model, &device, Backward::Layerwise(1.0), 11);
    assert!(loss == again && grad == same, "not reproducible");
    let (other, _) = gradients_by(&model, &device, Backward::Layerwise(1.0), 12);
    assert_ne!(loss, other, "the seed does not reach the dropout masks");

    // On threads at once (slices of a batch): each layer's seeding and drawing is not
    // interleaved with another thread's, so each gets the masks it gets alone.
    for _ in 0..3 {
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| gradients_by(&model, &device, Backward::Layerwise(1.0), 11));
            let b = scope.spawn(|| gradients_by(&model, &device, Backward::Layerwise(1.0), 12));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(
            a.0 == loss && a.1 == grad && b.0 == other,
            "threads changed the masks"
        );
    }

    // Along the gradient's own (unit) direction the slope is the gradient's norm: large
    // against f32's rounding of the loss, and a short step keeps the curvature out.
    let norm = grad.iter().map(|g| g * g).sum::<f32>().sqrt();
    let direction: Vec<f32> = grad.iter().map(|g| g / norm).collect();
    let eps = 1e-3;
    let at = |step: f32| {
        let shifted = model.clone().map(&mut Shift(&direction, 0, step));
        gradients_by(&shifted, &device, Backward::Layerwise(1.0), 11).0
    };
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
    let slope = norm;
    assert!(slope > 1e-2, "slope {slope}");
    assert!(
        (numeric - slope).abs() < 0.01 * slope,
        "the loss's slope {numeric} against the gradient's {slope}"
    );
}
