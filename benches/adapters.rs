//! Small-size criterion benches of what `burn-peft bench-step` times at full size:
//!
//! - `adapter_fwd_bwd`: one adapted linear layer (256 -> 256, 256 rows), forward + backward,
//!   with LoRA (r 8), DoRA (r 8) and IA3, against the frozen layer alone (the input takes a
//!   gradient in every case);
//! - `merge`: folding a LoRA / DoRA / IA3 adapter into the layer's weight and taking it out;
//! - `cross_entropy_head`: the loss through a frozen output layer (256 rows of 576 features,
//!   vocabulary 8192), forward + backward, as `log_softmax` + `gather` and as
//!   `linear_cross_entropy`;
//! - `tiny_llama_step`: a whole training step (forward, backward, AdamW) of the tiny Llama
//!   (2 layers, hidden 32) with LoRA on all linears and with full fine-tuning.
//!
//! `cargo bench --bench adapters` (add `-- merge` for one group).

use std::hint::black_box;

use burn::nn::LinearConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_peft::models::linear_cross_entropy;
use burn_peft::optim::make_trainable;
use burn_peft::prelude::*;
use criterion::Criterion;

mod common;
use common::One;

const D: usize = 256;
const ROWS: usize = 256;

fn layer(device: &Device, method: &str) -> One {
    let mut one = One {
        proj: AdaptedLinear::new(LinearConfig::new(D, D).init(device)),
    };
    let targets = TargetModules::names(["proj"]);
    let lora = |dora| {
        LoraConfig::new(8)
            .with_lora_alpha(16.0)
            .with_init(LoraInit::Random)
            .with_use_dora(dora)
            .with_target_modules(targets.clone())
    };
    let added = match method {
        "lora" => one.add_lora("a", &lora(false)),
        "dora" => one.add_lora("a", &lora(true)),
        "ia3" => one.add_ia3(
            "a",
            &Ia3Config::default().with_targets(targets.clone(), targets),
        ),
        _ => Ok(Vec::new()),
    };
    if let Err(e) = added {
        eprintln!("cannot add {method}: {e}");
        std::process::exit(1);
    }
    one
}

fn tiny_step(model: Llama, optim: &mut PeftOptimizer<Llama>, ids: &Tensor<2, Int>) -> Llama {
    let loss = model.lm_loss(ids.clone(), None);
    let (model, _) = optim.backward_step(model, loss);
    model
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);
    // The input takes a gradient, as inside a network: the frozen layer's backward is then the
    // input gradient alone, the baseline every adapter adds to.
    let x = Tensor::<2>::random([ROWS, D], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let mut c = Criterion::default().configure_from_args().sample_size(30);

    let mut group = c.benchmark_group("adapter_fwd_bwd_256x256_rows256");
    for method in ["frozen", "lora", "dora", "ia3"] {
        let one = layer(&device, method);
        group.bench_function(method, |b| {
            b.iter(|| black_box(one.proj.forward(x.clone()).powi_scalar(2).mean().backward()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("merge_256x256");
    for method in ["lora", "dora", "ia3"] {
        let one = layer(&device.clone().without_autodiff(), method);
        group.bench_function(method, |b| {
            b.iter(|| {
                let mut m = one.clone();
                let merged = m.merge_adapter(None).and_then(|_| m.unmerge_adapter());
                black_box((m, merged.is_ok()))
            })
        });
    }
    group.finish();

    let (rows, features, vocab) = (256, 576, 8192);
    let hidden = Tensor::<2>::random([rows, features], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let table = Tensor::<2>::random([vocab, features], Distribution::Normal(0.0, 0.02), &device);
    let ids: Vec<i64> = (0..rows).map(|i| (i * 7919 % vocab) as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows]), &device);
    let project = |h: Tensor<2>| h.matmul(table.clone().transpose());
    let mut group = c.benchmark_group("cross_entropy_head_rows256_576x8192");
    group.bench_function("log_softmax_gather", |b| {
        b.iter(|| {
            let logp = log_softmax(project(hidden.clone()), 1);
            let loss = logp
                .gather(1, targets.clone().reshape([rows, 1]))
                .mean()
                .neg();
            black_box(loss.backward())
        })
    });
    group.bench_function("linear_cross_entropy", |b| {
        b.iter(|| {
            let loss = linear_cross_entropy(hidden.clone(), targets.clone(), None, project);
            black_box(loss.backward())
        })
    });
    group.finish();

    let config = LlamaConfig::tiny(256);
    let ids: Vec<i64> = (0..4 * 32).map(|i| (i * 37 % 256) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [4, 32]), &device);
    let mut group = c.benchmark_group("tiny_llama_step_b4_s32");
    for method in ["lora", "full"] {
        let mut model = Llama::init(&config, &device);
        if method == "lora" {
            let lora = LoraConfig::new(8).with_target_modules(TargetModules::all_linear());
            if let Err(e) = model.add_lora("a", &lora) {
                eprintln!("cannot add LoRA: {e}");
                std::process::exit(1);
            }
        } else {
            model = make_trainable(model);
        }
        let mut optim = match PeftOptimizerConfig::new(1_000_000).init::<Llama>() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("cannot build the optimizer: {e}");
                std::process::exit(1);
            }
        };
        let mut current = Some(model);
        group.bench_function(method, |b| {
            b.iter(|| {
                if let Some(m) = current.take() {
                    current = Some(tiny_step(m, &mut optim, &ids));
                }
            })
        });
    }
    group.finish();
    c.final_summary();
}
