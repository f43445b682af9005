//! Gradient checkpointing (burn's balanced strategy, `--gradient-checkpointing`) recomputes
//! activations in the backward pass: the gradients of every adapter method and of full
//! fine-tuning must be those of the plain autodiff device.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{AddAdapter, Ia3Config, LoraConfig, LoraInit};
use burn_peft_core::TargetModules;
use burn_peft_models::{Llama, LlamaConfig};
use burn_peft_optim::make_trainable;

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

/// Every gradient, flattened in visiting order.
fn gradients(model: &Llama, device: &Device) -> Vec<f32> {
    struct Flatten<'a>(&'a GradientsParams, Vec<f32>);
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.extend(g.into_data().try_to_vec::<f32>().unwrap());
            }
        }
    }
    let ids: Vec<i64> = (0..32).map(|i| (i * 5 + 1) % 40).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 16]), device);
    let mask: Vec<i64> = (0..32).map(|i| i64::from(i % 16 < 13 || i < 16)).collect();
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, [2, 16]), device);
    let grads = GradientsParams::from_grads(model.lm_loss(ids, Some(mask)).backward(), model);
    let mut f = Flatten(&grads, Vec::new());
    model.visit(&mut f);
    f.1
}

#[test]
fn checkpointed_gradients_equal_the_plain_ones() {
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
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{name}: relative difference {worst}");
    }
}
