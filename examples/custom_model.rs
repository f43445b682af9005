//! Your own burn model can host adapters too. The whole cost: use `AdaptedLinear` where you had
//! `Linear`, and list those layers in `AdapterHost` under the names you want in PEFT files.
//!
//! ```text
//! cargo run --release --example custom_model
//! ```

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft::prelude::*;

/// A small classifier: nothing in it comes from burn-peft but the layer type.
#[derive(Module, Debug)]
struct Classifier {
    hidden: AdaptedLinear<Adapter>,
    out: AdaptedLinear<Adapter>,
}

impl AdapterHost for Classifier {
    type Adapter = Adapter;
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        f("classifier.hidden", &mut self.hidden);
        f("classifier.out", &mut self.out);
    }
}

impl AddAdapter for Classifier {}

impl Classifier {
    fn new(device: &Device) -> Self {
        Self {
            hidden: AdaptedLinear::new(LinearConfig::new(16, 32).init(device)),
            out: AdaptedLinear::new(LinearConfig::new(32, 1).init(device)),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(burn::tensor::activation::relu(self.hidden.forward(x)))
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("custom_model: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(42);
    let mut model = Classifier::new(&device);
    // A new task for the (pretend) pretrained classifier: the sign of the sum of inputs.
    let x = Tensor::<2>::random([256, 16], Distribution::Normal(0.0, 1.0), &device);
    let y = x.clone().sum_dim(1).sign();
    let mse = |m: &Classifier| (m.forward(x.clone()) - y.clone()).powi_scalar(2).mean();

    let lora = LoraConfig::new(4)
        .with_lora_alpha(8.0)
        .with_target_modules(TargetModules::names(["hidden", "out"]));
    model.add_lora("sign", &lora)?;
    println!("{}", TrainableParameters::of(&model));

    let before = mse(&model).into_scalar::<f32>();
    let mut optim = AdamWConfig::new().init();
    for _ in 0..200 {
        let grads = GradientsParams::from_grads(mse(&model).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    println!("mse {before:.4} -> {:.4}", mse(&model).into_scalar::<f32>());

    let dir = std::env::temp_dir().join("burn-peft-custom-model");
    save_adapter(&model, "sign", &dir)?;
    println!("adapter saved to {} in PEFT's format", dir.display());
    model.disable_adapters()?;
    println!("base alone: mse {:.4}", mse(&model).into_scalar::<f32>());
    Ok(())
}
