//! Forgetting methods against hand-computed references on a tiny random Llama with LoRA.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn_peft_adapters::{AddAdapter, Lora, LoraConfig, LoraInit};
use burn_peft_core::{PeftModel, TargetModules, TrainableParameters};
use burn_peft_forget::{
    BaseView, Distill, DistillConfig, Ewc, EwcConfig, FisherKind, L2Sp, OLora, Replay,
    ReplayBuffer, backward_transfer,
};
use burn_peft_models::{Llama, LlamaConfig};
use burn_peft_train::{CausalLm, Regularizer, Sample, SplitMix64, batch_loss, collate};

/// The tests seed and draw from the flex device's one random generator (model init, sampled
/// Fisher, dropout): they run one at a time, so that no other test draws in between.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn model(device: &Device, init: LoraInit) -> Llama {
    device.seed(11);
    let mut m = Llama::init(&LlamaConfig::tiny(64), device);
    let c = LoraConfig::new(2)
        .with_init(init)
        .with_target_modules(TargetModules::names(["q_proj", "v_proj"]));
    m.add_lora("t", &c).unwrap();
    m
}

fn samples() -> Vec<Sample> {
    [
        [1u32, 5, 9, 13, 2, 7],
        [3, 3, 8, 40, 41, 2],
        [60, 1, 2, 3, 4, 5],
    ]
    .iter()
    .map(|ids| Sample {
        ids: ids.to_vec(),
        targets: vec![true; ids.len()],
        label: None,
    })
    .collect()
}

/// Adapter "t" on the first layer's `q_proj`.
fn q_lora(m: &Llama) -> Lora {
    m.layers[0]
        .self_attn
        .q_proj
        .adapter("t")
        .unwrap()
        .as_lora()
        .unwrap()
        .clone()
}

fn shift_b(m: &mut Llama, delta: f32) {
    let l = m.layers[0]
        .self_attn
        .q_proj
        .adapter_mut("t")
        .unwrap()
        .as_lora_mut()
        .unwrap();
    // A fresh leaf (no graph behind it), trainable like the original.
    l.lora_b = l
        .lora_b
        .clone()
        .map(|t| {
            let device = t.device();
            burn::tensor::Tensor::from_data((t + delta).into_data(), &device)
        })
        .set_require_grad(true);
}

fn fisher_of(ewc: &Ewc, needle: &str) -> Vec<f32> {
    ewc.fisher()
        .into_iter()
        .find(|(k, _)| k.contains("layers.0.self_attn.q_proj") && k.ends_with(needle))
        .unwrap_or_else(|| panic!("no Fisher for {needle}"))
        .1
}

/// The Fisher is the mean of per-sample squared gradients, and the penalty is
/// `λ/2 Σ F (θ − θ*)²`.
#[test]
fn ewc_fisher_and_penalty_match_hand_computation() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let m = model(&device, LoraInit::Gaussian);
    let data = samples();
    let mut ewc = Ewc::new(
        EwcConfig::new(100.0).with_fisher_samples(3),
        data.clone(),
        0,
    )
    .unwrap();
    ewc.consolidate(&m, &device).unwrap();

    let l = q_lora(&m);
    let mut want = vec![0.0f32; l.lora_b.val().shape().num_elements()];
    for s in &data {
        let batch = collate(&[s], 0, &device);
        let grads = GradientsParams::from_grads(batch_loss(&m, &batch).backward(), &m);
        let g: Vec<f32> = grads
            .get::<2>(l.lora_b.id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        for (w, x) in want.iter_mut().zip(g) {
            *w += x * x / 3.0;
        }
    }
    let got = fisher_of(&ewc, "lora_b");
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 + 1e-4 * b.abs(), "{a} vs {b}");
    }
    assert!(want.iter().any(|v| *v > 0.0));

    let mut rng = SplitMix64::new(0);
    let at_anchor = ewc.penalty(&m, &mut rng).unwrap().into_scalar::<f32>();
    assert_eq!(at_anchor, 0.0);
    let mut moved = m.clone();
    shift_b(&mut moved, 0.1);
    let p = ewc.penalty(&moved, &mut rng).unwrap().into_scalar::<f32>();
    let expect: f32 = 100.0 / 2.0 * got.iter().map(|f| f * 0.01).sum::<f32>();
    assert!((p - expect).abs() <= 1e-4 * expect, "{p} vs {expect}");

    // The state survives a checkpoint.
    let dir = tempfile::tempdir().unwrap();
    Regularizer::<Llama>::save(&ewc, dir.path()).unwrap();
    let mut again = Ewc::new(EwcConfig::new(100.0), data.clone(), 0).unwrap();
    again.load(&m, dir.path(), &device).unwrap();
    let q = again
        .penalty(&moved, &mut rng)
        .unwrap()
        .into_scalar::<f32>();
    assert!((p - q).abs() <= 1e-6 * p);
    // ... and refuses a model with other trainable parameters.
    let other = Llama::init(&LlamaConfig::tiny(64), &device).no_grad();
    assert!(again.load(&other, dir.path(), &device).is_err());
}

/// Per-batch gradients: each is the gradient of one batch's mean loss (here 2 of 3 samples,
/// wrapping around), squared and averaged over the batches.
#[test]
fn ewc_per_batch_fisher_squares_each_batch_gradient() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let m = model(&device, LoraInit::Gaussian);
    let data = samples();
    let config = EwcConfig::new(1.0)
        .with_fisher_samples(2)
        .with_fisher_batch_size(2);
    let mut ewc = Ewc::new(config, data.clone(), 0).unwrap();
    ewc.consolidate(&m, &device).unwrap();
    let id = q_lora(&m).lora_b.id;
    let mut want: Vec<f32> = Vec::new();
    for pair in [[&data[0], &data[1]], [&data[2], &data[0]]] {
        let batch = collate(&pair, 0, &device);
        let grads = GradientsParams::from_grads(batch_loss(&m, &batch).backward(), &m);
        let g: Vec<f32> = grads
            .get::<2>(id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        want.resize(g.len(), 0.0);
        for (w, x) in want.iter_mut().zip(g) {
            *w += x * x / 2.0;
        }
    }
    let got = fisher_of(&ewc, "lora_b");
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 + 1e-4 * b.abs(), "{a} vs {b}");
    }
    // It differs from the per-sample estimate on the same samples.
    let mut per_sample = Ewc::new(EwcConfig::new(1.0).with_fisher_samples(4), data, 0).unwrap();
    per_sample.consolidate(&m, &device).unwrap();
    let other = fisher_of(&per_sample, "lora_b");
    assert!(
        got.iter()
            .zip(&other)
            .any(|(a, b)| (a - b).abs() > 1e-4 * b.abs())
    );
    assert!(Ewc::new(EwcConfig::new(1.0).with_fisher_batch_size(0), samples(), 0).is_err());
}

/// With gradient checkpointing by layer, the Fisher estimate (empirical and sampled) is the one
/// a single backward pass gives, over LoRA on two layers of the tiny model.
#[test]
fn checkpointed_fisher_equals_the_plain_one() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut m = model(&device, LoraInit::Gaussian);
    // B moved on one layer's q_proj, so that its A gets a gradient too.
    shift_b(&mut m, 0.3);
    for kind in [FisherKind::Empirical, FisherKind::Sampled] {
        let fisher = |layers: bool| {
            let config = EwcConfig::new(1.0)
                .with_fisher_samples(3)
                .with_fisher(kind)
                .with_checkpoint_layers(layers);
            let mut e = Ewc::new(config, samples(), 0).unwrap();
            e.consolidate(&m, &device).unwrap();
            e.fisher()
        };
        let (plain, layers) = (fisher(false), fisher(true));
        assert_eq!(plain.len(), layers.len());
        assert!(plain.len() >= 4, "{kind:?}: {} tensors", plain.len());
        for ((name, a), (other, b)) in plain.iter().zip(&layers) {
            assert_eq!(name, other);
            let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            // B always has a gradient; A only where B is not zero.
            if name.ends_with("lora_b") || name.starts_with("layers.0.self_attn.q_proj") {
                assert!(max > 0.0, "{kind:?} {name}: a zero Fisher");
            }
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * max, "{kind:?} {name}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn online_ewc_decays_the_earlier_fisher() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let m = model(&device, LoraInit::Gaussian);
    let data = samples();
    let fisher = |m: &Llama, gamma| {
        let mut e = Ewc::new(
            EwcConfig::new(1.0).with_fisher_samples(2).with_gamma(gamma),
            data.clone(),
            0,
        )
        .unwrap();
        e.consolidate(m, &device).unwrap();
        e
    };
    let mut moved = m.clone();
    shift_b(&mut moved, 0.3);
    let f1 = fisher_of(&fisher(&m, None), "lora_b");
    let f2 = fisher_of(&fisher(&moved, None), "lora_b");
    let mut online = fisher(&m, Some(0.5));
    online.consolidate(&moved, &device).unwrap();
    let f = fisher_of(&online, "lora_b");
    for ((a, b), c) in f.iter().zip(&f1).zip(&f2) {
        assert!((a - (0.5 * b + c)).abs() <= 1e-6 + 1e-4 * a.abs());
    }
    assert_eq!(online.terms(), 1);
    // Separate EWC keeps both terms: its penalty is the sum of the two single-term ones.
    let mut separate = fisher(&m, None);
    separate.consolidate(&moved, &device).unwrap();
    assert_eq!(separate.terms(), 2);
    let mut probe = moved.clone();
    shift_b(&mut probe, -0.2);
    let mut rng = SplitMix64::new(1);
    let mut penalty = |e: &mut Ewc| {
        Regularizer::<Llama>::penalty(e, &probe, &mut rng)
            .unwrap()
            .into_scalar::<f32>()
    };
    let (p1, p2) = (
        penalty(&mut fisher(&m, None)),
        penalty(&mut fisher(&moved, None)),
    );
    let both = penalty(&mut separate);
    assert!(
        (both - (p1 + p2)).abs() <= 1e-5 * both.abs(),
        "{both} vs {p1} + {p2}"
    );
    // The finished task's samples become the data of the next estimate.
    let mut next = fisher(&m, None);
    Regularizer::<Llama>::end_task(&mut next, "other", &data[..1]);
    next.consolidate(&m, &device).unwrap();
    let mut only_first = Ewc::new(
        EwcConfig::new(1.0).with_fisher_samples(2),
        data[..1].to_vec(),
        0,
    )
    .unwrap();
    only_first.consolidate(&m, &device).unwrap();
    assert_eq!(fisher_of(&next, "lora_b"), fisher_of(&only_first, "lora_b"));
    // Sampled Fisher: a different estimate, same shape, non-negative.
    let mut s = Ewc::new(
        EwcConfig::new(1.0)
            .with_fisher_samples(2)
            .with_fisher(FisherKind::Sampled),
        data.clone(),
        0,
    )
    .unwrap();
    s.consolidate(&m, &device).unwrap();
    let fs = fisher_of(&s, "lora_b");
    assert_eq!(fs.len(), f1.len());
    assert!(fs.iter().all(|v| *v >= 0.0) && fs != f1);
    assert!(Ewc::new(EwcConfig::new(-1.0), data.clone(), 0).is_err());
    assert!(Ewc::new(EwcConfig::new(1.0), Vec::new(), 0).is_err());
}

#[test]
fn l2sp_is_half_alpha_times_the_squared_distance() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let m = model(&device, LoraInit::Gaussian);
    let mut l2 = L2Sp::new(4.0).unwrap();
    l2.prepare(&m, &device).unwrap();
    let mut rng = SplitMix64::new(0);
    assert_eq!(
        Regularizer::<Llama>::penalty(&mut l2, &m, &mut rng)
            .unwrap()
            .into_scalar::<f32>(),
        0.0
    );
    let mut moved = m.clone();
    shift_b(&mut moved, 0.5);
    let n = 2 * 32; // q_proj's B is [r 2, out 32]
    let p = l2.penalty(&moved, &mut rng).unwrap().into_scalar::<f32>();
    assert!((p - 4.0 / 2.0 * n as f32 * 0.25).abs() < 1e-3, "{p}");
}

#[test]
fn replay_replaces_its_share_of_each_batch() {
    let _serial = serial();
    let s = |i: u32| Sample {
        ids: vec![i, i + 1],
        targets: vec![true, true],
        label: None,
    };
    let mut buffer = ReplayBuffer::new(10, 1);
    for i in 0..50 {
        buffer.offer("news", s(1000 + i));
    }
    let mut replay = Replay::new(buffer, 0.25).unwrap();
    let mut batch: Vec<Sample> = (0..8).map(s).collect();
    Regularizer::<Llama>::mix(&mut replay, &mut batch, &mut SplitMix64::new(3));
    assert_eq!(batch.iter().filter(|x| x.ids[0] >= 1000).count(), 2);
    assert!(batch[..6].iter().all(|x| x.ids[0] < 1000));
    // A finished task joins the buffer as its own source, with half the room.
    let finished: Vec<Sample> = (0..20).map(|i| s(5000 + i)).collect();
    Regularizer::<Llama>::end_task(&mut replay, "task-0", &finished);
    let mut drawn = 0;
    for seed in 0..40 {
        let mut batch: Vec<Sample> = (0..4).map(s).collect();
        Regularizer::<Llama>::mix(&mut replay, &mut batch, &mut SplitMix64::new(seed));
        drawn += batch.iter().filter(|x| x.ids[0] >= 5000).count();
    }
    assert!(
        (10..=30).contains(&drawn),
        "{drawn} of 40 draws from the finished task"
    );
    assert!(Replay::new(ReplayBuffer::new(4, 0), 0.5).is_err());
    assert!(Replay::new(ReplayBuffer::new(4, 0), 1.5).is_err());
}

/// The teacher is the model with its adapters off: KL is zero while LoRA's B is zero and grows
/// when it moves; no copy of the weights is taken for adapters.
#[test]
fn distillation_compares_with_the_base_view() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let m = model(&device, LoraInit::Default);
    let mut d = Distill::new(DistillConfig::new(1.0), samples(), 0).unwrap();
    d.prepare(&m, &device).unwrap();
    let mut rng = SplitMix64::new(5);
    let zero = d.penalty(&m, &mut rng).unwrap().into_scalar::<f32>();
    assert!(zero.abs() < 1e-9, "{zero}");
    let mut moved = m.clone();
    shift_b(&mut moved, 0.5);
    let p = d.penalty(&moved, &mut rng).unwrap().into_scalar::<f32>();
    assert!(p > 1e-7, "{p}");

    // The base view computes what disabling the adapters computes, and leaves the model alone.
    let base = moved.base_view().unwrap();
    let batch = collate(&[&samples()[0]], 0, &device);
    let mut off = moved.clone();
    off.disable_adapters().unwrap();
    let a = base.token_logits(batch.input_ids.clone(), None);
    let b = off.token_logits(batch.input_ids.clone(), None);
    assert!((a - b).abs().max().into_scalar::<f32>() < 1e-6);
    assert_eq!(moved.active_adapters(), vec!["t".to_string()]);
    // A model without adapters (full fine-tuning) has no base view: a snapshot is used.
    let full = Llama::init(&LlamaConfig::tiny(64), &device);
    assert!(full.base_view().is_none());
    let mut d = Distill::new(DistillConfig::new(1.0), samples(), 0).unwrap();
    d.prepare(&full, &device).unwrap();
    assert!(
        d.penalty(&full, &mut rng)
            .unwrap()
            .into_scalar::<f32>()
            .abs()
            < 1e-6
    );
}

/// The penalty against KL written out with `softmax` over the whole vocabulary and a padding
/// mask: value and the adapter's gradients, at temperature 2, over samples of different lengths.
#[test]
fn distillation_penalty_equals_the_full_softmax_kl() {
    let _serial = serial();
    use burn::tensor::activation::{log_softmax, softmax};
    let device = Device::flex().autodiff();
    let mut m = model(&device, LoraInit::Gaussian);
    shift_b(&mut m, 0.3);
    let mut general = samples();
    general[1].ids.truncate(3);
    general[1].targets.truncate(3);
    let config = DistillConfig {
        lambda: 0.7,
        temperature: 2.0,
        batch_size: 3,
    };
    let mut d = Distill::new(config, general.clone(), 0).unwrap();
    d.prepare(&m, &device).unwrap();
    let rng = SplitMix64::new(9);
    // The samples the penalty draws, drawn again from a copy of its generator.
    let mut draws = rng;
    let picks: Vec<&Sample> = (0..3)
        .map(|_| &general[(draws.next_u64() % general.len() as u64) as usize])
        .collect();
    assert!(
        picks.iter().any(|p| p.ids.len() == 3),
        "no padded sample drawn"
    );
    let lora_b = |m: &Llama| q_lora(m).lora_b;
    let grad_of = |loss: burn::tensor::Tensor<1>| {
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let g: Vec<f32> = grads
            .get::<2>(lora_b(&m).id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        g
    };

    let mut r = rng;
    let ours = d.penalty(&m, &mut r).unwrap();
    let batch = collate(&picks, 0, &device);
    let t = 2.0;
    let teacher = m
        .base_view()
        .unwrap()
        .token_logits(batch.input_ids.clone(), Some(batch.attention_mask.clone()))
        .detach()
        / t;
    let student = m.token_logits(batch.input_ids.clone(), Some(batch.attention_mask.clone())) / t;
    let kl = (softmax(teacher.clone(), 2) * (log_softmax(teacher, 2) - log_softmax(student, 2)))
        .sum_dim(2);
    let [b, s, _] = kl.dims();
    let mask = batch.attention_mask.float().reshape([b, s, 1]);
    let reference = (kl * mask.clone()).sum() / mask.sum() * (0.7 * t * t) as f32;

    let (a, e) = (
        ours.clone().into_scalar::<f32>(),
        reference.clone().into_scalar::<f32>(),
    );
    assert!(e > 1e-6, "a KL worth testing: {e}");
    assert!((a - e).abs() <= 1e-5 * e.max(1e-3), "{a} vs {e}");
    let (ga, ge) = (grad_of(ours), grad_of(reference));
    // Within 1e-4 of the largest entry.
    let tol = 1e-4 * ge.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(tol > 0.0);
    for (x, y) in ga.iter().zip(&ge) {
        assert!((x - y).abs() <= tol, "{x} vs {y}");
    }

    // With gradient checkpointing: the same samples, value and gradients (of the scaled
    // penalty), computed one layer at a time.
    let mut r = rng;
    let (value, grads) = d
        .penalty_gradients(&m, &mut r, &|loss| loss * 0.5, 3)
        .unwrap();
    let v = value.into_scalar::<f32>();
    assert!((v - e).abs() <= 1e-5 * e.max(1e-3), "{v} vs {e}");
    let gl: Vec<f32> = grads
        .get::<2>(lora_b(&m).id)
        .unwrap()
        .into_data()
        .try_to_vec()
        .unwrap();
    for (x, y) in gl.iter().zip(&ge) {
        assert!((x - 0.5 * y).abs() <= 0.5 * tol, "{x} vs {}", 0.5 * y);
    }
}

#[test]
fn backward_transfer_reads_the_table_so_far() {
    let _serial = serial();
    assert_eq!(backward_transfer(&[vec![1.0]]), None);
    assert_eq!(backward_transfer(&[vec![1.0, 0.0], vec![1.0]]), None);
    let t = vec![
        vec![0.8, 0.0, 0.0],
        vec![0.6, 0.9, 0.0],
        vec![0.5, 0.7, 0.9],
    ];
    assert!((backward_transfer(&t).unwrap() - (-0.25)).abs() < 1e-12);
    // Two tasks learned of three: only the first has been revisited.
    assert!((backward_transfer(&t[..2]).unwrap() - (-0.2)).abs() < 1e-12);
}

/// `A` of adapter `name` on every layer that holds it, in layer order.
fn lora_a(m: &Llama, name: &str) -> Vec<Tensor<2>> {
    let mut out = Vec::new();
    m.clone().visit_adapter(name, &mut |_, a| {
        out.push(a.as_lora().unwrap().lora_a.val());
    });
    out
}

/// O-LoRA keeps the learned adapter frozen and computing what it did, trains a fresh one,
/// penalizes `λ Σ |A_oldᵀ A_new|` with the old A unscaled (value and gradient by hand), joins
/// the earlier tasks into one frozen adapter (the penalty still sums over each of them), and
/// joins every task's adapter into one that computes what they did together.
#[test]
fn olora_keeps_each_task_and_penalizes_the_overlap_of_the_subspaces() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut m = model(&device, LoraInit::Default);
    shift_b(&mut m, 0.3);
    let ids = collate(&[&samples()[0]], 0, &device).input_ids;
    let logits = |m: &Llama| m.token_logits(ids.clone(), None);
    let learned = logits(&m);
    let old_a = lora_a(&m, "t");
    let mut o = OLora::new(0.5, "t").unwrap().with_init_seed(3);
    Regularizer::<Llama>::prepare(&mut o, &m, &device).unwrap();
    let mut rng = SplitMix64::new(0);
    assert!(o.penalty(&m, &mut rng).is_none(), "no earlier task yet");

    let m = o.begin_task(m, 1).unwrap();
    assert_eq!(m.adapter_names(), ["t-earlier-1", "t"]);
    assert_eq!(m.active_adapters(), ["t-earlier-1", "t"]);
    assert_eq!(o.earlier_adapter(), Some("t-earlier-1"));
    // The fresh adapter starts at B = 0: the kept one alone computes what the learned one did.
    let kept = logits(&m);
    assert!((kept - learned.clone()).abs().max().into_scalar::<f32>() < 1e-5);
    // Only the fresh adapter trains: A and B of q_proj and v_proj on every layer.
    let mut fresh = 0;
    m.clone().visit_adapter("t", &mut |_, a| {
        let l = a.as_lora().unwrap();
        fresh += l.lora_a.shape().num_elements() + l.lora_b.shape().num_elements();
    });
    assert_eq!(TrainableParameters::of(&m).trainable, fresh);

    let new_a = lora_a(&m, "t");
    assert!(
        (new_a[0].clone() - old_a[0].clone())
            .abs()
            .max()
            .into_scalar::<f32>()
            > 1e-3
    );
    let overlap = |olds: &[&[Tensor<2>]], new: &[Tensor<2>]| -> f32 {
        let mut sum = 0.0;
        for old in olds {
            for (o, n) in old.iter().zip(new) {
                let product = o.clone().detach().transpose().matmul(n.clone().detach());
                sum += product.abs().sum().into_scalar::<f32>();
            }
        }
        sum * 0.5
    };
    let expected = overlap(&[&old_a], &new_a);
    let p = o.penalty(&m, &mut rng).unwrap();
    let value = p.clone().into_scalar::<f32>();
    assert!(
        (value - expected).abs() < 1e-5 * expected,
        "{value} vs {expected}"
    );
    // d/dA_new = λ · A_old · sign(A_oldᵀ A_new).
    let grads = p.backward();
    let got = new_a[0].grad(&grads).unwrap();
    let (o0, n0) = (old_a[0].clone().detach(), new_a[0].clone().detach());
    let want = o0.clone().matmul(o0.transpose().matmul(n0).sign()) * 0.5;
    assert!((got - want).abs().max().into_scalar::<f32>() < 1e-5);

    // A second task: both earlier tasks in one frozen adapter of rank 2 · 2, which computes
    // what they did, and a penalty over each of their A.
    let mut m = m;
    shift_b(&mut m, -0.2);
    let two_tasks = logits(&m);
    let m = o.begin_task(m, 2).unwrap();
    assert_eq!(m.adapter_names(), ["t-earlier-2", "t"]);
    assert_eq!(m.active_adapters(), ["t-earlier-2", "t"]);
    assert_eq!(lora_a(&m, "t-earlier-2")[0].dims(), [32, 4]);
    assert!((logits(&m) - two_tasks).abs().max().into_scalar::<f32>() < 1e-5);
    let third_a = lora_a(&m, "t");
    let expected = overlap(&[&old_a, &new_a], &third_a);
    let value = o.penalty(&m, &mut rng).unwrap().into_scalar::<f32>();
    assert!(
        (value - expected).abs() < 1e-5 * expected,
        "{value} vs {expected}"
    );

    // The join: one adapter of rank 2 · 3 that computes the same.
    let mut m = m;
    shift_b(&mut m, 0.1);
    let together = logits(&m);
    let m = o.end_sequence(m).unwrap();
    assert_eq!(m.adapter_names(), ["t"]);
    assert_eq!(m.active_adapters(), ["t"]);
    assert_eq!(lora_a(&m, "t")[0].dims(), [32, 6]);
    let joined = logits(&m);
    assert!((joined - together).abs().max().into_scalar::<f32>() < 1e-5);
    assert!(o.earlier_adapter().is_none());

    // DoRA, PiSSA, a missing adapter and a "first task" with nothing before it are refused.
    let mut dora = Llama::init(&LlamaConfig::tiny(64), &device);
    dora.add_lora("t", &LoraConfig::new(2).with_use_dora(true))
        .unwrap();
    let err = Regularizer::<Llama>::prepare(&mut o, &dora, &device).unwrap_err();
    assert!(err.to_string().contains("DoRA"), "{err}");
    let pissa = model(&Device::flex(), LoraInit::Pissa);
    let err = Regularizer::<Llama>::prepare(&mut o, &pissa, &device).unwrap_err();
    assert!(err.to_string().contains("PiSSA"), "{err}");
    let mut other = OLora::new(0.5, "missing").unwrap();
    assert!(Regularizer::<Llama>::prepare(&mut other, &dora, &device).is_err());
    let fresh = model(&device, LoraInit::Default);
    assert!(o.begin_task(fresh, 0).is_err());
}
