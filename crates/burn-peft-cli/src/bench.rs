//! `burn-peft bench-step`: the time of one training step (forward, backward, AdamW) on a
//! random-init Llama of a given shape, for a fine-tuning method.

use std::path::Path;
use std::time::Instant;

use burn::module::{Lora as NativeLora, Module, ParamGroup};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{AdapterConfig, AddAdapter, Ia3Config, LoraConfig, PrefixTuningConfig};
use burn_peft_core::limits::MemoryBudget;
use burn_peft_core::{DeviceSpec, Precision, TargetModules, TrainableParameters};
use burn_peft_models::{Llama, LlamaConfig};
use burn_peft_optim::{LossScaleConfig, PeftOptimizerConfig, make_trainable};
use burn_peft_train::{SplitMix64, split_evenly};
use clap::Args;

use crate::common::{Checkpointing, batch_threads, err, train_device};
use crate::finetune::Method;

/// Arguments of `burn-peft bench-step`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// smollm2-135m, llama-1b, tiny, or an HF config.json.
    #[arg(long, default_value = "smollm2-135m")]
    pub shape: String,
    /// The method (prompt tuning is not benchmarked).
    #[arg(long, value_enum, default_value_t = Method::Lora)]
    pub method: Method,
    /// LoRA / DoRA rank (alpha = 2 r, all linear layers).
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Device: flex, cpu, wgpu, vulkan, cuda[:N], tch[:cuda:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Precision of the frozen weights and activations: f32, bf16 or f16 (adapters, trainable
    /// weights and optimizer state stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Recompute activations in the backward pass instead of keeping them: `layers` (the
    /// default value) keeps only each decoder layer's input and recomputes the layer, as HF's
    /// gradient checkpointing; `ops` is burn's balanced strategy (element-wise operations
    /// only). Less memory for more time.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "layers")]
    pub gradient_checkpointing: Option<Checkpointing>,
    /// Slices of each batch run at once, on threads of their own [default: on flex, the
    /// batch size up to one per core, but 1 for full fine-tuning; elsewhere 1].
    #[arg(long)]
    pub batch_threads: Option<usize>,
    /// With `--method lora`: burn's own `apply_lora` on every `*_proj` weight instead of
    /// burn-peft's adapters, for comparison (burn rebuilds W + s·A·B on every forward).
    #[arg(long)]
    pub burn_native_lora: bool,
    /// After the timed steps, as many again on one thread in three phases (forward, backward,
    /// optimizer), each ended by flushing and then synchronizing the device, and report per
    /// phase the host's time to record the operations, to hand them to the device (flush) and
    /// to wait for them (sync): where a GPU step spends its time.
    #[arg(long)]
    pub phases: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Where one phase of a step spent its time, in seconds.
#[derive(Clone, Copy)]
struct PhaseTime {
    /// Recording the operations (autodiff, fusion's queue) on the host.
    record: f64,
    /// `Device::flush`: handing the queue to the device (fusion's kernels built and launched).
    flush: f64,
    /// `Device::sync`: waiting for the device to finish.
    wait: f64,
}

impl PhaseTime {
    /// Runs `work`, then flushes and synchronizes `device`, timing each part.
    fn measure<T>(device: &Device, work: impl FnOnce() -> T) -> Result<(T, Self), String> {
        let t0 = Instant::now();
        let out = work();
        let t1 = Instant::now();
        device.flush().map_err(|e| format!("{e:?}"))?;
        let t2 = Instant::now();
        device.sync().map_err(|e| format!("{e:?}"))?;
        let t3 = Instant::now();
        let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok((
            out,
            Self {
                record: secs(t0, t1),
                flush: secs(t1, t2),
                wait: secs(t2, t3),
            },
        ))
    }
}

/// The median of each part over the steps of each phase, as JSON in milliseconds.
fn phases_json(steps: &[[PhaseTime; 3]]) -> serde_json::Value {
    let median = |f: &dyn Fn(&[PhaseTime; 3]) -> f64| {
        let mut v: Vec<f64> = steps.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    let mut out = serde_json::Map::new();
    for (i, name) in ["forward", "backward", "optimizer"].into_iter().enumerate() {
        out.insert(
            name.into(),
            serde_json::json!({
                "record_ms": median(&|s| s[i].record),
                "flush_ms": median(&|s| s[i].flush),
                "wait_ms": median(&|s| s[i].wait),
            }),
        );
    }
    out.insert(
        "step_ms".into(),
        median(&|s| s.iter().map(|p| p.record + p.flush + p.wait).sum()).into(),
    );
    serde_json::Value::Object(out)
}

/// The shapes of `scripts/peft_runner.py` (tied embeddings, as there).
fn shape(name: &str) -> Result<LlamaConfig, String> {
    let base = |hidden, layers, heads, kv, inter, vocab| LlamaConfig {
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        intermediate_size: inter,
        vocab_size: vocab,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        ..LlamaConfig::tiny(vocab)
    };
    match name {
        "tiny" => Ok(base(256, 4, 4, 2, 688, 8192)),
        "smollm2-135m" | "smol" => Ok(base(576, 30, 9, 3, 1536, 49152)),
        "llama-1b" | "1b" => Ok(base(2048, 16, 32, 8, 8192, 128256)),
        path => LlamaConfig::from_file(Path::new(path)).map_err(|e| {
            format!("unknown shape '{path}' (smollm2-135m, llama-1b, tiny or a config.json): {e}")
        }),
    }
}

/// Runs the command; the error is the one-line message to print.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.steps == 0 || args.batch_size == 0 || args.seq_len < 2 {
        return Err("--steps and --batch-size must be at least 1, --seq-len at least 2".into());
    }
    let config = shape(&args.shape)?;
    let spec: DeviceSpec = args.device.parse().map_err(err)?;
    let device = spec.device().map_err(err)?;
    let layerwise = args.gradient_checkpointing == Some(Checkpointing::Layers);
    let threads = batch_threads(
        args.batch_threads,
        spec,
        args.batch_size,
        args.method == Method::Full,
    )?;
    if layerwise && args.phases {
        return Err(
            "--phases times the forward and backward passes apart, which \
                    --gradient-checkpointing layers interleaves: use one or the other"
                .into(),
        );
    }
    args.dtype.check(&device).map_err(err)?;
    if args.burn_native_lora && args.dtype != Precision::F32 {
        return Err(
            "--burn-native-lora runs in f32 only (burn builds its factors in the base's type)"
                .into(),
        );
    }
    let device = train_device(&device, args.gradient_checkpointing);
    device.seed(0);
    // The inputs and one layer's attention scores, checked before the model is allocated.
    let mut budget = MemoryBudget::new("bench-step");
    let (b, s) = (args.batch_size, args.seq_len);
    budget.reserve("token ids", &[b, s], 8).map_err(err)?;
    let heads = config.num_attention_heads;
    budget
        .reserve("one layer's attention scores", &[b, heads, s, s], 4)
        .map_err(err)?;
    let mut model = Llama::try_init(&config, &device).map_err(err)?;
    let lora = |dora| {
        LoraConfig::new(args.r)
            .with_lora_alpha(2.0 * args.r as f64)
            .with_use_dora(dora)
            .with_target_modules(TargetModules::all_linear())
    };
    let adapter = match args.method {
        Method::Lora if args.burn_native_lora => {
            // The layers all-linear picks: the base weights of the seven *_proj layers.
            let group =
                ParamGroup::from_regex(r"_proj\.base\.weight$").map_err(|e| format!("{e:?}"))?;
            model = model
                .apply_lora(NativeLora::new(args.r, 2.0 * args.r as f64).set_param_group(group));
            None
        }
        _ if args.burn_native_lora => {
            return Err("--burn-native-lora compares against --method lora only".into());
        }
        Method::Lora => Some(AdapterConfig::Lora(lora(false))),
        Method::Dora => Some(AdapterConfig::Lora(lora(true))),
        Method::Ia3 => Some(AdapterConfig::Ia3(Ia3Config::default())),
        Method::Prefix => Some(AdapterConfig::Prefix(PrefixTuningConfig::new(20))),
        Method::Prompt => return Err("bench-step covers lora, dora, ia3, prefix and full".into()),
        Method::Full => {
            model = make_trainable(model);
            None
        }
    };
    if let Some(config) = adapter {
        model.add_adapter("b", &config).map_err(err)?;
    }
    model.set_precision(args.dtype);
    let params = TrainableParameters::of(&model);
    let total = args.warmup + args.steps;
    let mut optim = PeftOptimizerConfig::new(total)
        .with_learning_rate(1e-4)
        .with_lr_scheduler_type(burn_peft_optim::ScheduleKind::Constant)
        .with_max_grad_norm(None)
        .with_loss_scale(args.dtype.needs_loss_scaling().then(LossScaleConfig::new))
        .init::<Llama>()
        .map_err(err)?;
    let mut rng = SplitMix64::new(1);
    let batches: Vec<Tensor<2, Int>> = (0..4)
        .map(|_| {
            let ids: Vec<i64> = (0..b * s)
                .map(|_| (rng.next_u64() % config.vocab_size as u64) as i64)
                .collect();
            Tensor::from_data(TensorData::new(ids, [b, s]), &device)
        })
        .collect();
    let mut times = Vec::new();
    let mut first = 0.0;
    let mut loss = f32::NAN;
    // GPU backends report their allocator's pool; its reserved size only grows between
    // cleanups, so the largest value seen after a step is the step's peak (as reserved, like
    // PyTorch's max_memory_reserved, not its max_memory_allocated).
    let mut device_peak: Option<u64> = None;
    // On stderr, also under --json: a GPU's first step compiles and autotunes its kernels,
    // minutes in a fresh kernel cache (about a second from a warm one).
    eprintln!("first step (compiles and tunes kernels on a GPU)...");
    for i in 0..total {
        let x = batches[i % batches.len()].clone();
        let t0 = Instant::now();
        let slices: Vec<(Tensor<2, Int>, f32)> = split_evenly(b, threads)
            .into_iter()
            .map(|rows| {
                (
                    x.clone().slice([rows.clone(), 0..s]),
                    rows.len() as f32 / b as f32,
                )
            })
            .collect();
        let (m, losses, _) = if layerwise {
            optim.backward_step_parallel_with(model, slices, None, |m, (x, share), scale| {
                let head = |hidden, p| m.lm_loss_from_hidden(hidden, p, x.clone(), None) * share;
                m.layerwise_gradients(x.clone(), None, head, scale, i as u64)
            })
        } else {
            optim.backward_step_parallel(model, slices, None, |m, (x, share)| {
                let l = m.lm_loss(x, None);
                if share == 1.0 { l } else { l * share }
            })
        };
        model = m;
        // Reading the loss waits for the step's work on asynchronous backends.
        loss = losses.into_iter().map(|l| l.into_scalar::<f32>()).sum();
        let dt = t0.elapsed().as_secs_f64();
        if let Some(usage) = device.memory_pool_usage() {
            device_peak = Some(device_peak.unwrap_or(0).max(usage.bytes_reserved));
        }
        if i == 0 {
            first = dt;
        }
        if i >= args.warmup {
            times.push(dt);
        }
    }
    let mut phases = Vec::new();
    for i in 0..if args.phases { args.steps } else { 0 } {
        let x = batches[i % batches.len()].clone();
        let (loss, forward) = PhaseTime::measure(&device, || model.lm_loss(x, None))?;
        let scale = optim.loss_scale().unwrap_or(1.0);
        let (grads, backward) = PhaseTime::measure(&device, || {
            GradientsParams::from_grads((loss * scale).backward(), &model)
        })?;
        let (m, optimizer) = PhaseTime::measure(&device, || optim.apply(model, grads).0)?;
        model = m;
        phases.push([forward, backward, optimizer]);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens_per_s = (b * s) as f64 / median;
    let peak = burn_peft_core::limits::peak_rss();
    let phases = (!phases.is_empty()).then(|| phases_json(&phases));
    if args.json {
        let mut out = serde_json::json!({
            "shape": args.shape,
            "method": format!("{:?}", args.method).to_lowercase(),
            "device": args.device,
            "dtype": args.dtype.to_string(),
            "gradient_checkpointing": args.gradient_checkpointing.map(Checkpointing::name),
            "burn_native_lora": args.burn_native_lora,
            "batch": b,
            "batch_threads": threads,
            "seq": s,
            "trainable": params.trainable,
            "total": params.total,
            "ms_per_step": median * 1e3,
            "first_step_ms": first * 1e3,
            "tokens_per_s": tokens_per_s,
            "peak_bytes": peak,
            "device_peak_bytes": device_peak,
            "loss": loss,
        });
        if let Some(phases) = phases {
            out["phases"] = phases;
        }
        println!("{out}");
    } else {
        println!(
            "{} {:?} {} batch {b} seq {s} ({threads} at once): {:.1} ms/step, {:.0} tokens/s (first step {:.1} ms), peak RSS {}{}; {params}",
            args.shape,
            args.method,
            args.dtype,
            median * 1e3,
            tokens_per_s,
            first * 1e3,
            peak.map_or("n/a".into(), |p| format!(
                "{:.2} GiB",
                p as f64 / (1u64 << 30) as f64
            )),
            device_peak.map_or(String::new(), |p| format!(
                ", device pool {:.2} GiB",
                p as f64 / (1u64 << 30) as f64
            )),
        );
        if let Some(phases) = phases {
            println!("phases (median ms: recorded on the host, flushed, waited for): {phases}");
        }
    }
    Ok(())
}
