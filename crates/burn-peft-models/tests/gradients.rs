//! Gradients of every adapter method through the whole Llama model, against central finite
//! differences of the loss.

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{
    Adapter, AddAdapter, Ia3Config, LoraConfig, LoraInit, PrefixTuningConfig, PromptHost,
    PromptLearning, PromptTuningConfig,
};
use burn_peft_core::TargetModules;
use burn_peft_models::{Llama, LlamaConfig};

fn tiny(device: &Device) -> Llama {
    device.seed(21);
    let mut config = LlamaConfig::tiny(40);
    config.tie_word_embeddings = true;
    let model = Llama::init(&config, device);
    // Larger weights than the default N(0, 0.02) so that gradients are far from zero.
    scale_weights(model, 10.0)
}

fn scale_weights(model: Llama, factor: f64) -> Llama {
    use burn::module::{Module, ModuleMapper};
    struct Scale(f64);
    impl ModuleMapper for Scale {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D == 2 {
                let f = self.0;
                let trains = p.is_require_grad();
                p.map(|t| (t * f).detach()).set_require_grad(trains)
            } else {
                p
            }
        }
    }
    model.map(&mut Scale(factor))
}

fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let ids: Vec<i64> = vec![3, 17, 5, 9, 31, 2, 8, 11, 4, 0, 22, 39];
    let mask: Vec<i64> = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
    (
        Tensor::from_data(TensorData::new(ids, [2, 6]), device),
        Tensor::from_data(TensorData::new(mask, [2, 6]), device),
    )
}

/// Checks d loss / d param on its first `n` entries.
fn check<const D: usize>(
    what: &str,
    model: &Llama,
    get: impl Fn(&Llama) -> Param<Tensor<D>>,
    set: impl Fn(&mut Llama, Param<Tensor<D>>),
    n: usize,
) {
    let device = model.embed_tokens.weight.device();
    let (ids, mask) = batch(&device);
    let loss = |m: &Llama| m.lm_loss(ids.clone(), Some(mask.clone()));
    let param = get(model);
    let grads = loss(model).backward();
    let analytic: Vec<f32> = param
        .grad(&grads)
        .unwrap_or_else(|| panic!("{what}: no gradient"))
        .into_data()
        .try_to_vec()
        .unwrap();
    let values: Vec<f32> = param.val().into_data().try_to_vec().unwrap();
    let shape = param.shape();
    let eps = 1e-2f32;
    for i in 0..n.min(values.len()) {
        let eval = |delta: f32| {
            let mut v = values.clone();
            v[i] += delta;
            let mut m = model.clone();
            let t = Tensor::<D>::from_data(TensorData::new(v, shape.clone()), &device);
            set(&mut m, param.clone().map(|_| t));
            loss(&m).into_scalar::<f32>()
        };
        let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() < 3e-3 + 0.05 * numeric.abs(),
            "{what}[{i}]: analytic {} numeric {numeric}",
            analytic[i]
        );
    }
    assert!(
        analytic.iter().any(|g| g.abs() > 1e-4),
        "{what}: all gradients vanish"
    );
}

fn lora_of(m: &mut Llama, layer: usize) -> &mut burn_peft_adapters::Lora {
    match &mut m.layers[layer].mlp.down_proj.adapters_mut()[0] {
        Adapter::Lora(l) => l,
        _ => unreachable!(),
    }
}

#[test]
fn lora_and_dora_gradients_through_the_model() {
    let device = Device::flex().autodiff();
    for dora in [false, true] {
        let mut m = tiny(&device);
        let c = LoraConfig::new(2)
            .with_lora_alpha(4.0)
            .with_use_dora(dora)
            .with_init(LoraInit::Random)
            .with_target_modules(TargetModules::names(["down_proj"]));
        m.add_lora("a", &c).unwrap();
        if dora {
            // DoRA detaches the weight norm (DoRA paper, section 4.3; PEFT does the same), so
            // only the magnitude's gradient is the exact derivative of the loss.
            check(
                "magnitude",
                &m,
                |m| lora_of(&mut m.clone(), 0).magnitude.clone().unwrap(),
                |m, p| lora_of(m, 0).magnitude = Some(p),
                8,
            );
        } else {
            check(
                "lora_a",
                &m,
                |m| lora_of(&mut m.clone(), 0).lora_a.clone(),
                |m, p| lora_of(m, 0).lora_a = p,
                8,
            );
            check(
                "lora_b",
                &m,
                |m| lora_of(&mut m.clone(), 1).lora_b.clone(),
                |m, p| lora_of(m, 1).lora_b = p,
                8,
            );
        }
    }
}

#[test]
fn ia3_gradients_through_the_model() {
    let device = Device::flex().autodiff();
    let mut m = tiny(&device);
    m.add_ia3(
        "i",
        &Ia3Config {
            init_ia3_weights: false,
            ..Ia3Config::default()
        },
    )
    .unwrap();
    for (layer, ff) in [(0usize, false), (1, true)] {
        let get = move |m: &Llama| {
            let l = &m.layers[layer];
            let host = if ff {
                &l.mlp.down_proj
            } else {
                &l.self_attn.k_proj
            };
            match &host.adapters()[0] {
                Adapter::Ia3(a) => a.scale.clone(),
                _ => unreachable!(),
            }
        };
        let set = move |m: &mut Llama, p| {
            let l = &mut m.layers[layer];
            let host = if ff {
                &mut l.mlp.down_proj
            } else {
                &mut l.self_attn.k_proj
            };
            match &mut host.adapters_mut()[0] {
                Adapter::Ia3(a) => a.scale = p,
                _ => unreachable!(),
            }
        };
        check(
            if ff { "ia3 down_proj" } else { "ia3 k_proj" },
            &m,
            get,
            set,
            8,
        );
    }
}

#[test]
fn prefix_and_prompt_gradients_through_the_model() {
    let device = Device::flex().autodiff();
    let mut m = tiny(&device);
    m.add_prefix_tuning("p", &PrefixTuningConfig::new(3))
        .unwrap();
    // Entries 0.. are layer 0's keys of the first virtual token; the table's far end holds
    // the last layer's values.
    let get = |m: &Llama| match m.prompt_slot().adapter() {
        Some(PromptLearning::Prefix(p)) => p.embedding.clone(),
        _ => unreachable!(),
    };
    let set = |m: &mut Llama, p| {
        m.prompt_slot_mut().map(|adapter| match adapter {
            PromptLearning::Prefix(mut x) => {
                x.embedding = p;
                PromptLearning::Prefix(x)
            }
            _ => unreachable!(),
        })
    };
    check("prefix", &m, get, set, 12);

    let mut m = tiny(&device);
    m.add_prompt_tuning("q", &PromptTuningConfig::new(2))
        .unwrap();
    let get = |m: &Llama| match m.prompt_slot().adapter() {
        Some(PromptLearning::Prompt(p)) => p.embedding.clone(),
        _ => unreachable!(),
    };
    let set = |m: &mut Llama, p| {
        m.prompt_slot_mut().map(|adapter| match adapter {
            PromptLearning::Prompt(mut x) => {
                x.embedding = p;
                PromptLearning::Prompt(x)
            }
            _ => unreachable!(),
        })
    };
    check("prompt", &m, get, set, 12);
}
