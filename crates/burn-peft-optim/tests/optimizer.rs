//! The optimizer against hand-computed references: LoRA+ learning rates, global-norm clipping,
//! accumulation equal to one large batch, exact resume into a freshly loaded model, and full
//! fine-tuning through the same path.

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::ParamGroup;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::LinearConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_peft_adapters::{Adapter, AddAdapter, LoraConfig, LoraInit, load_adapter, save_adapter};
use burn_peft_core::format::{read_safetensors, write_safetensors};
use burn_peft_core::{
    AdaptedLinear, AdapterHost, PeftModel, SplitMix64, TargetModules, host_random,
};
use burn_peft_optim::{
    LossScaleConfig, PeftOptimizerConfig, clip_global_norm, global_grad_norm, make_trainable,
    trainable_param_ids,
};

#[derive(Module, Debug)]
struct Net {
    hidden: AdaptedLinear<Adapter>,
    out: AdaptedLinear<Adapter>,
}

impl AdapterHost for Net {
    type Adapter = Adapter;
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        f("net.hidden", &mut self.hidden);
        f("net.out", &mut self.out);
    }
}

impl AddAdapter for Net {}

impl Net {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(self.hidden.forward(x).tanh())
    }
}

/// The same base weights every time, fresh parameter ids every time. The values come from a
/// formula, not from the device's RNG: that generator is shared by every test of this binary,
/// and a test running in parallel could draw between a seed and its use.
fn base(device: &Device) -> Net {
    let linear = |d_in: usize, d_out: usize, phase: f32| {
        let wave = |n: usize, offset: f32| -> Vec<f32> {
            (0..n)
                .map(|i| 0.4 * (1.7 * i as f32 + offset).sin())
                .collect()
        };
        let mut layer = LinearConfig::new(d_in, d_out).init(device);
        layer.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(wave(d_in * d_out, phase), [d_in, d_out]),
            device,
        ));
        layer.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(wave(d_out, phase + 0.5), [d_out]),
            device,
        )));
        AdaptedLinear::new(layer)
    };
    Net {
        hidden: linear(6, 8, 0.0),
        out: linear(8, 3, 1.0),
    }
}

fn lora(init: LoraInit) -> LoraConfig {
    LoraConfig::new(4)
        .with_lora_alpha(8.0)
        .with_init(init)
        .with_init_seed(7)
        .with_target_modules(TargetModules::names(["hidden", "out"]))
}

/// Drawn on the host: the device's generator is shared by the tests running in parallel, and one
/// could draw between another's seed and its draws.
fn data(device: &Device, rows: usize, seed: u64) -> (Tensor<2>, Tensor<2>) {
    let mut rng = SplitMix64::new(seed);
    let normal = Distribution::Normal(0.0, 1.0);
    let x = host_random([rows, 6], normal, &mut rng, device);
    let y = host_random([rows, 3], normal, &mut rng, device);
    (x, y)
}

fn mse(net: &Net, x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    (net.forward(x) - y).square().mean()
}

/// Every float parameter's values, in visiting order.
fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
    struct V(Vec<Vec<f32>>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .push(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn lora_b_update(ratio: Option<f64>) -> f32 {
    let device = Device::flex().autodiff();
    let mut net = base(&device);
    net.add_lora("t", &lora(LoraInit::Default)).unwrap();
    let before = net
        .hidden
        .adapter("t")
        .unwrap()
        .as_lora()
        .unwrap()
        .lora_b
        .val();
    let mut optim = PeftOptimizerConfig::new(10)
        .with_learning_rate(1e-3)
        .with_max_grad_norm(None)
        .with_loraplus_lr_ratio(ratio)
        .init::<Net>()
        .unwrap();
    let (x, y) = data(&device, 16, 1);
    let (net, report) = optim.backward_step(net.clone(), mse(&net, x, y));
    assert_eq!(report.unwrap().lr, 1e-3);
    let after = net
        .hidden
        .adapter("t")
        .unwrap()
        .as_lora()
        .unwrap()
        .lora_b
        .val();
    (after - before).abs().max().into_scalar::<f32>()
}

/// Adam's first step moves every parameter with a gradient by about its learning rate, so the
/// largest change of B (A has no gradient while B = 0) is the B group's learning rate.
#[test]
fn loraplus_gives_b_its_ratio_of_the_learning_rate() {
    let plain = lora_b_update(None);
    let plus = lora_b_update(Some(16.0));
    assert!((plain - 1e-3).abs() < 1e-5, "plain B step {plain}");
    assert!((plus - 16e-3).abs() < 1e-4, "LoRA+ B step {plus}");
}

#[test]
fn global_norm_is_over_all_parameters_and_clips_to_the_limit() {
    let device = Device::flex().autodiff();
    let mut net = base(&device);
    net.add_lora("t", &lora(LoraInit::Gaussian)).unwrap();
    let (x, y) = data(&device, 16, 2);
    let mut grads = GradientsParams::from_grads(mse(&net, x, y).backward(), &net);
    // Reference: the adapters' gradients one by one, squared and summed on the host.
    let mut sum = 0.0f64;
    for layer in [&net.hidden, &net.out] {
        let l = layer.adapter("t").unwrap().as_lora().unwrap();
        for id in [l.lora_a.id, l.lora_b.id] {
            let g = grads
                .get::<2>(id)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            sum += g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        }
    }
    assert_eq!(grads.len(), 4, "only the four LoRA matrices get gradients");
    let norm = global_grad_norm(&net, &grads).unwrap();
    assert!((norm as f64 - sum.sqrt()).abs() < 1e-5 * sum.sqrt());
    let limit = norm / 4.0;
    let before = clip_global_norm(&net, &mut grads, limit).unwrap();
    assert_eq!(before, norm);
    let after = global_grad_norm(&net, &grads).unwrap();
    assert!((after - limit).abs() < 1e-4 * limit, "{after} vs {limit}");
    // A limit above the norm leaves the gradients alone.
    assert_eq!(
        clip_global_norm(&net, &mut grads, 10.0 * limit),
        Some(after)
    );
}

/// Two accumulated micro-batches of 8 rows take the same step as one batch of 16 (mean losses
/// over equal sizes), with clipping in the path.
#[test]
fn accumulation_equals_one_large_batch() {
    let device = Device::flex().autodiff();
    let (x, y) = data(&device, 16, 3);
    let config = |accum| {
        PeftOptimizerConfig::new(5)
            .with_learning_rate(1e-2)
            .with_max_grad_norm(Some(0.05))
            .with_gradient_accumulation_steps(accum)
    };
    let mut net = base(&device);
    net.add_lora("t", &lora(LoraInit::Gaussian)).unwrap();
    let start = net.clone();

    let mut one = config(1).init::<Net>().unwrap();
    let mut big = start.clone();
    for _ in 0..3 {
        let loss = mse(&big, x.clone(), y.clone());
        big = one.backward_step(big, loss).0;
    }

    let mut two = config(2).init::<Net>().unwrap();
    let mut small = start;
    let mut reports = 0;
    for _ in 0..3 {
        for half in [0..8, 8..16] {
            let loss = mse(
                &small,
                x.clone().slice([half.clone(), 0..6]),
                y.clone().slice([half, 0..3]),
            );
            let (m, report) = two.backward_step(small, loss);
            small = m;
            reports += report.is_some() as usize;
        }
    }
    assert_eq!(reports, 3);
    assert_eq!(two.steps_taken(), 3);
    let diff = max_abs_diff(&values(&big), &values(&small));
    assert!(
        diff < 1e-6,
        "accumulated and large-batch weights differ by {diff}"
    );
}

/// A loss split into parts that run on threads of their own, plus a penalty on the calling
/// thread, under accumulation and loss scaling: the same weights as one loss on one thread.
#[test]
fn parallel_parts_equal_one_loss() {
    let device = Device::flex().autodiff();
    let (x, y) = data(&device, 16, 5);
    let (general, _) = data(&device, 4, 6);
    let config = PeftOptimizerConfig::new(5)
        .with_learning_rate(1e-2)
        .with_max_grad_norm(Some(0.05))
        .with_gradient_accumulation_steps(2)
        .with_loss_scale(Some(LossScaleConfig::new().with_init_scale(1024.0)));
    let mut net = base(&device);
    net.add_lora("t", &lora(LoraInit::Gaussian)).unwrap();
    let penalty = |m: &Net| m.forward(general.clone()).square().mean() * 0.1;
    let rows = |r: std::ops::Range<usize>| (x.clone().slice([r.clone()]), y.clone().slice([r]));

    let mut one = config.init::<Net>().unwrap();
    let mut reference = net.clone();
    let mut reference_losses = Vec::new();
    for _ in 0..3 {
        for half in [0..8, 8..16] {
            let (xh, yh) = rows(half);
            let loss = mse(&reference, xh, yh);
            reference_losses.push(loss.clone().into_scalar::<f32>());
            let loss = loss + penalty(&reference);
            reference = one.backward_step(reference, loss).0;
        }
    }

    let mut parallel = config.init::<Net>().unwrap();
    let mut split = net;
    let mut reports = 0;
    for step in 0..3 {
        for (h, (lo, hi)) in [(0, 8), (8, 16)].into_iter().enumerate() {
            // Uneven parts, each weighted by its share of the half.
            let parts = vec![(lo, lo + 3), (lo + 3, lo + 7), (lo + 7, hi)];
            let extra = Some(penalty(&split));
            let (m, losses, report) =
                parallel.backward_step_parallel(split, parts, extra, |m: &Net, (a, b)| {
                    let (xp, yp) = rows(a..b);
                    mse(m, xp, yp) * ((b - a) as f32 / 8.0)
                });
            split = m;
            reports += report.is_some() as usize;
            assert_eq!(losses.len(), 3);
            let total: f32 = losses.into_iter().map(|l| l.into_scalar::<f32>()).sum();
            let expected = reference_losses[2 * step + h];
            assert!(
                (total - expected).abs() < 1e-5 * expected.abs().max(1.0),
                "parts sum to {total}, the whole loss is {expected}"
            );
        }
    }
    assert_eq!(reports, 3);
    let diff = max_abs_diff(&values(&reference), &values(&split));
    assert!(
        diff < 1e-6,
        "parallel and single-thread weights differ by {diff}"
    );
    assert!(
        max_abs_diff(&values(&reference), &values(&base(&device))) > 0.0,
        "the steps moved nothing"
    );

    // No parts: the penalty alone; one part without a penalty: the plain path.
    let mut optim = PeftOptimizerConfig::new(2).init::<Net>().unwrap();
    let (after, losses, report) = optim.backward_step_parallel(
        split.clone(),
        Vec::<()>::new(),
        Some(penalty(&split)),
        |m: &Net, ()| penalty(m),
    );
    assert!(losses.is_empty() && report.is_some());
    assert!(max_abs_diff(&values(&split), &values(&after)) > 0.0);
}

/// The optimizer steps buckets of flattened parameters with burn-optim's AdamW; burn-optim's own
/// per-tensor `ModuleOptimizer`, with LoRA+ as a `ModuleLrScheduler` group, is the reference.
/// The weights are the same to the bit, under a warm-up and cosine schedule, with and without
/// LoRA+, also when an adapter is frozen (its bucket loses members, whose state is cut out of
/// it) and trained again (its old state meets parameters with more steps).
#[test]
fn steps_equal_burn_optims_per_tensor_adamw() {
    for ratio in [None, Some(4.0)] {
        let device = Device::flex().autodiff();
        let config = PeftOptimizerConfig::new(9)
            .with_learning_rate(3e-2)
            .with_warmup_steps(2)
            .with_lr_scheduler_type(burn_peft_optim::ScheduleKind::Cosine)
            .with_weight_decay(0.05)
            .with_loraplus_lr_ratio(ratio)
            .with_max_grad_norm(None);
        let mut reference = AdamWConfig::new()
            .with_beta_1(config.adam_beta1)
            .with_beta_2(config.adam_beta2)
            .with_epsilon(config.adam_epsilon)
            .with_weight_decay(config.weight_decay)
            .init();
        let mut lrs = ModuleLrScheduler::new(config.schedule());
        if let Some(r) = ratio {
            let group = ParamGroup::from_predicate("lora_b");
            lrs = lrs.with_group(group, config.schedule().scaled(r));
        }
        let mut optim = config.init::<Net>().unwrap();
        let mut ours = base(&device);
        ours.add_lora("a", &lora(LoraInit::Gaussian)).unwrap();
        ours.add_lora("b", &lora(LoraInit::Gaussian).with_init_seed(8))
            .unwrap();
        ours.set_adapter(&["a", "b"]).unwrap();
        let mut theirs = ours.clone();
        let a_of = |net: &Net| {
            let a = net.out.adapter("a").unwrap().as_lora().unwrap();
            [a.lora_a.val(), a.lora_b.val()].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        };
        let mut frozen_a = a_of(&ours);
        for step in 0..9 {
            let requires_grad = match step {
                4 => Some(false),
                6 => Some(true),
                _ => None,
            };
            if let Some(on) = requires_grad {
                ours.set_requires_grad(&["a"], on).unwrap();
                theirs.set_requires_grad(&["a"], on).unwrap();
                frozen_a = a_of(&ours);
            }
            let (x, y) = data(&device, 8, 40 + step);
            let (o, _) = optim.backward_step(ours.clone(), mse(&ours, x.clone(), y.clone()));
            ours = o;
            let loss = mse(&theirs, x, y);
            let grads = GradientsParams::from_grads(loss.backward(), &theirs);
            theirs = reference.step(lrs.step(), theirs, grads);
            let diff = max_abs_diff(&values(&ours), &values(&theirs));
            assert_eq!(
                diff, 0.0,
                "{ratio:?}, step {step}: weights differ by {diff}"
            );
            // Frozen, "a" stays put; trained, it moves (from step 1: the warm-up starts at 0).
            let moved = max_abs_diff(&frozen_a, &a_of(&ours)) > 0.0;
            assert_eq!(moved, step > 0 && !(4..6).contains(&step), "step {step}");
        }
    }
}

/// Six steps in one go, or three, save (adapter in PEFT's format + optimizer), a fresh model
/// with new parameter ids loaded from the files, and three more: the same weights.
#[test]
fn resume_into_a_fresh_model_continues_exactly() {
    let device = Device::flex().autodiff();
    let config = PeftOptimizerConfig::new(6)
        .with_learning_rate(5e-2)
        .with_warmup_steps(2)
        .with_lr_scheduler_type(burn_peft_optim::ScheduleKind::Cosine)
        .with_loraplus_lr_ratio(Some(4.0))
        .with_weight_decay(0.01);
    let batches: Vec<_> = (0..6).map(|i| data(&device, 8, 10 + i)).collect();
    let mut start = base(&device);
    start.add_lora("t", &lora(LoraInit::Gaussian)).unwrap();

    let mut optim = config.init::<Net>().unwrap();
    let mut straight = start.clone();
    for (x, y) in &batches {
        let loss = mse(&straight, x.clone(), y.clone());
        straight = optim.backward_step(straight, loss).0;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut optim = config.init::<Net>().unwrap();
    let mut first = start;
    for (x, y) in &batches[..3] {
        let loss = mse(&first, x.clone(), y.clone());
        first = optim.backward_step(first, loss).0;
    }
    save_adapter(&first, "t", dir.path()).unwrap();
    optim.save(&first, dir.path()).unwrap();

    let mut fresh = base(&device);
    load_adapter(&mut fresh, dir.path(), "t").unwrap();
    let old_ids = trainable_param_ids(&first);
    let new_ids = trainable_param_ids(&fresh);
    assert_eq!(new_ids.len(), 4);
    assert!(
        new_ids
            .values()
            .all(|id| !old_ids.values().any(|o| o == id))
    );
    let mut resumed = config.init::<Net>().unwrap();
    let mut fresh = resumed.load(fresh, dir.path()).unwrap();
    assert_eq!(resumed.steps_taken(), 3);
    assert_eq!(max_abs_diff(&values(&first), &values(&fresh)), 0.0);
    for (x, y) in &batches[3..] {
        let loss = mse(&fresh, x.clone(), y.clone());
        fresh = resumed.backward_step(fresh, loss).0;
    }
    let diff = max_abs_diff(&values(&straight), &values(&fresh));
    assert!(diff < 1e-6, "resumed weights differ by {diff}");

    // Without the optimizer state, the same three steps land elsewhere.
    let mut cold = base(&device);
    load_adapter(&mut cold, dir.path(), "t").unwrap();
    let mut restart = config.init::<Net>().unwrap();
    for (x, y) in &batches[3..] {
        let loss = mse(&cold, x.clone(), y.clone());
        cold = restart.backward_step(cold, loss).0;
    }
    assert!(max_abs_diff(&values(&straight), &values(&cold)) > 1e-4);
}

#[test]
fn bad_state_is_refused_with_errors() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let mut net = base(&device);
    net.add_lora("t", &lora(LoraInit::Gaussian)).unwrap();
    let mut optim = PeftOptimizerConfig::new(4)
        .with_gradient_accumulation_steps(2)
        .init::<Net>()
        .unwrap();
    let (x, y) = data(&device, 4, 5);
    let net = optim.backward_step(net.clone(), mse(&net, x, y)).0;
    let err = optim.save(&net, dir.path()).unwrap_err().to_string();
    assert!(err.contains("accumulated"), "{err}");
    assert!(!dir.path().join("optimizer.safetensors").exists());

    // Missing files and a model with other trainable parameters.
    assert!(optim.load(net.clone(), dir.path()).is_err());
    let mut fine = PeftOptimizerConfig::new(4).init::<Net>().unwrap();
    fine.save(&net, dir.path()).unwrap();
    let full = make_trainable(base(&device));
    let err = fine.load(full, dir.path()).unwrap_err().to_string();
    assert!(err.contains("trainable parameters"), "{err}");
    // It names parameters on both sides: the full model's weights, the saved LoRA factors.
    assert!(err.contains("in the model only: [\""), "{err}");
    assert!(err.contains("in the state only: [\""), "{err}");
    std::fs::write(dir.path().join("optimizer_state.json"), "{not json").unwrap();
    assert!(fine.load(net.clone(), dir.path()).is_err());

    // Moments that do not fit the model: a wrong shape, a missing one, one too many.
    let mut stepped = PeftOptimizerConfig::new(4).init::<Net>().unwrap();
    let (x, y) = data(&device, 4, 6);
    let net = stepped.backward_step(net.clone(), mse(&net, x, y)).0;
    stepped.save(&net, dir.path()).unwrap();
    let file = dir.path().join("optimizer.safetensors");
    let saved = read_safetensors(&file).unwrap();
    assert_eq!(saved.len(), 8, "two moments for each of four LoRA factors");
    let key = saved
        .keys()
        .find(|k| k.ends_with(".exp_avg"))
        .unwrap()
        .clone();
    let fresh = || PeftOptimizerConfig::new(4).init::<Net>().unwrap();
    for what in ["shape", "missing", "extra"] {
        let mut moments = saved.clone();
        match what {
            "shape" => moments.get_mut(&key).unwrap().shape.push(1),
            "missing" => drop(moments.remove(&key)),
            _ => drop(moments.insert("extra.exp_avg".into(), saved[&key].clone())),
        }
        write_safetensors(&file, &moments).unwrap();
        let err = fresh()
            .load(net.clone(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("optimizer.safetensors") || err.contains(&key),
            "{what}: {err}"
        );
    }
    write_safetensors(&file, &saved).unwrap();
    assert!(fresh().load(net.clone(), dir.path()).is_ok());

    // More Adam steps than optimizer steps: a hand-edited or foreign file.
    let json_path = dir.path().join("optimizer_state.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    json["step"] = 0.into();
    std::fs::write(&json_path, json.to_string()).unwrap();
    let err = fresh()
        .load(net.clone(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 Adam steps, more than the 0 taken"), "{err}");
    // A checkpoint from before the moments moved to safetensors says so.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(dir.path().join("optimizer.bpk"), b"old").unwrap();
    let err = fresh().load(net, dir.path()).unwrap_err().to_string();
    assert!(err.contains("does not read"), "{err}");

    for bad in [
        PeftOptimizerConfig::new(0),
        PeftOptimizerConfig::new(3).with_learning_rate(-1.0),
        PeftOptimizerConfig::new(3).with_gradient_accumulation_steps(0),
        PeftOptimizerConfig::new(3).with_max_grad_norm(Some(0.0)),
        PeftOptimizerConfig::new(3).with_loraplus_lr_ratio(Some(f64::NAN)),
        PeftOptimizerConfig::new(3)
            .with_loss_scale(Some(LossScaleConfig::new().with_backoff_factor(1.0))),
        PeftOptimizerConfig::new(3)
            .with_loss_scale(Some(LossScaleConfig::new().with_init_scale(f32::INFINITY))),
        PeftOptimizerConfig::new(3)
            .with_loss_scale(Some(LossScaleConfig::new().with_growth_interval(0))),
    ] {
        assert!(bad.init::<Net>().is_err(), "{bad:?}");
    }
}

/// Without clipping and loss scaling the norm is not computed (`None`), and the steps are those
/// of a limit too large to clip.
#[test]
fn without_clipping_the_norm_is_left_out() {
    let device = Device::flex().autodiff();
    let run = |max: Option<f32>| {
        let mut net = make_trainable(base(&device).no_grad());
        let mut optim = PeftOptimizerConfig::new(3)
            .with_learning_rate(1e-2)
            .with_max_grad_norm(max)
            .init::<Net>()
            .unwrap();
        let mut norms = Vec::new();
        for step in 0..3 {
            let (x, y) = data(&device, 8, step);
            let loss = mse(&net, x, y);
            let (n, report) = optim.backward_step(net, loss);
            net = n;
            norms.push(report.unwrap().grad_norm);
        }
        (values(&net), norms)
    };
    let (unclipped, none) = run(None);
    let (loose, some) = run(Some(1e9));
    assert_eq!(none, vec![None; 3]);
    assert!(some.iter().all(|n| n.is_some_and(|n| n > 0.0)), "{some:?}");
    assert_eq!(unclipped, loose);
}

/// Full fine-tuning: every weight (biases included) moves, through the same optimizer.
#[test]
fn full_fine_tuning_updates_every_parameter() {
    let device = Device::flex().autodiff();
    let net = make_trainable(base(&device).no_grad());
    let before = values(&net);
    let mut optim = PeftOptimizerConfig::new(3)
        .with_learning_rate(1e-2)
        .init::<Net>()
        .unwrap();
    let (x, y) = data(&device, 8, 6);
    let (net, report) = optim.backward_step(net.clone(), mse(&net, x, y));
    assert!(report.unwrap().grad_norm.is_some_and(|n| n > 0.0));
    let after = values(&net);
    assert_eq!(before.len(), 4);
    for (b, a) in before.iter().zip(&after) {
        assert!(
            b.iter().zip(a).all(|(p, q)| p != q),
            "a weight did not move"
        );
    }
}

/// Inputs and targets from a formula (no shared RNG), `step` shifting them.
fn wave_data(device: &Device, rows: usize, step: usize) -> (Tensor<2>, Tensor<2>) {
    let wave = |n: usize, k: f32| -> Vec<f32> {
        (0..n)
            .map(|i| (0.9 * i as f32 + k + step as f32).cos())
            .collect()
    };
    (
        Tensor::from_data(TensorData::new(wave(rows * 6, 0.3), [rows, 6]), device),
        Tensor::from_data(TensorData::new(wave(rows * 3, 2.1), [rows, 3]), device),
    )
}

/// Loss scaling (for f16 training) changes nothing in f32 but the scale: the update is that of
/// the unscaled loss, clipping included; an overflow skips the step and halves the scale; the
/// scale grows after `growth_interval` good steps and survives a save and resume.
#[test]
fn loss_scaling_gives_the_unscaled_update_and_backs_off_on_overflow() {
    let device = Device::flex().autodiff();
    let mut plain_net = base(&device);
    plain_net.add_lora("t", &lora(LoraInit::Random)).unwrap();
    let mut scaled_net = plain_net.clone();
    let config = PeftOptimizerConfig::new(10)
        .with_learning_rate(1e-2)
        .with_max_grad_norm(Some(0.5));
    let mut plain = config.init::<Net>().unwrap();
    let mut scaled = config
        .clone()
        .with_loss_scale(Some(
            LossScaleConfig::new()
                .with_init_scale(1024.0)
                .with_growth_interval(2),
        ))
        .init::<Net>()
        .unwrap();
    assert_eq!(plain.loss_scale(), None);
    let initial = values(&plain_net);
    for step in 0..3 {
        let (x, y) = wave_data(&device, 8, step);
        let loss = mse(&plain_net, x.clone(), y.clone());
        let (n, a) = plain.backward_step(plain_net, loss);
        plain_net = n;
        let loss = mse(&scaled_net, x, y);
        let (n, b) = scaled.backward_step(scaled_net, loss);
        scaled_net = n;
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(!b.skipped);
        // A power-of-two scale is exact in f32: the same norm, the same update.
        assert!(
            (a.grad_norm.unwrap() - b.grad_norm.unwrap()).abs() <= 1e-6 * a.grad_norm.unwrap(),
            "{a:?} {b:?}"
        );
        let diff = max_abs_diff(&values(&plain_net), &values(&scaled_net));
        assert!(diff < 1e-6, "step {step}: {diff}");
    }
    assert!(max_abs_diff(&values(&plain_net), &initial) > 1e-4);
    // Two good steps doubled it once; the third is one of the next two.
    assert_eq!(scaled.loss_scale(), Some(2048.0));

    // Saved and resumed with the optimizer.
    let dir = tempfile::tempdir().unwrap();
    scaled.save(&scaled_net, dir.path()).unwrap();
    let mut resumed = config
        .clone()
        .with_loss_scale(Some(LossScaleConfig::new()))
        .init::<Net>()
        .unwrap();
    let scaled_net = resumed.load(scaled_net, dir.path()).unwrap();
    assert_eq!(resumed.loss_scale(), Some(2048.0));

    // A scale that overflows f32 gradients: the step is skipped, nothing moves, the scale halves.
    let mut huge = config
        .with_loss_scale(Some(LossScaleConfig::new().with_init_scale(1e38)))
        .init::<Net>()
        .unwrap();
    let before = values(&scaled_net);
    let (x, y) = wave_data(&device, 8, 7);
    let loss = mse(&scaled_net, x, y);
    let (net, report) = huge.backward_step(scaled_net, loss);
    let report = report.unwrap();
    assert!(
        report.skipped && report.grad_norm.is_some_and(|n| !n.is_finite()),
        "{report:?}"
    );
    assert_eq!(report.step, 1);
    assert_eq!(values(&net), before);
    assert_eq!(huge.loss_scale(), Some(5e37));
}
