//! LoRA linear layer, forward + backward, against a plain trainable linear layer and burn's
//! native `apply_lora`, at 576 -> 1536 with 512 rows and r = 16 (SmolLM2-135M's MLP shape).
//!
//! Prints the peak heap bytes of one step of each before the criterion timings:
//! `cargo bench --bench lora_linear`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::{Lora as NativeLora, Module};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_peft::prelude::*;
use criterion::Criterion;

mod common;
use common::One;

/// Counts live heap bytes and their high-water mark.
struct PeakAlloc;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

const D_IN: usize = 576;
const D_OUT: usize = 1536;
const ROWS: usize = 512;
const RANK: usize = 16;

fn step_plain(layer: &Linear, x: &Tensor<2>) {
    let grads = layer.forward(x.clone()).powi_scalar(2).mean().backward();
    black_box(layer.weight.grad(&grads));
}

fn step_ours(model: &One, x: &Tensor<2>) {
    let grads = model
        .proj
        .forward(x.clone())
        .powi_scalar(2)
        .mean()
        .backward();
    black_box(grads);
}

fn step_native(layer: &Linear, x: &Tensor<2>) {
    let grads = layer.forward(x.clone()).powi_scalar(2).mean().backward();
    black_box(grads);
}

/// Peak bytes above the live heap during one step (after a warm-up step).
fn peak_of(step: impl Fn()) -> usize {
    step();
    let start = CURRENT.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    step();
    PEAK.load(Ordering::Relaxed).saturating_sub(start)
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let x = Tensor::<2>::random([ROWS, D_IN], Distribution::Normal(0.0, 1.0), &device);
    let plain = LinearConfig::new(D_IN, D_OUT).init(&device);
    let mut ours = One {
        proj: AdaptedLinear::new(LinearConfig::new(D_IN, D_OUT).init(&device)),
    };
    let config = LoraConfig::new(RANK)
        .with_lora_alpha(32.0)
        .with_init(LoraInit::Random)
        .with_target_modules(TargetModules::names(["proj"]));
    if let Err(e) = ours.add_lora("default", &config) {
        eprintln!("cannot build the LoRA layer: {e}");
        std::process::exit(1);
    }
    let native = LinearConfig::new(D_IN, D_OUT)
        .init(&device)
        .apply_lora(NativeLora::new(RANK, 32.0));

    println!("peak heap of one forward+backward step ({ROWS}x{D_IN} -> {D_OUT}, r {RANK}):");
    let rows = [
        (
            "plain linear (full fine-tuning)",
            peak_of(|| step_plain(&plain, &x)),
        ),
        ("burn-peft LoRA", peak_of(|| step_ours(&ours, &x))),
        (
            "burn native apply_lora",
            peak_of(|| step_native(&native, &x)),
        ),
    ];
    for (name, bytes) in rows {
        println!("  {name:<34} {:>8.2} MiB", bytes as f64 / (1024.0 * 1024.0));
    }

    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let mut group = c.benchmark_group("linear_fwd_bwd_576x1536_rows512_r16");
    group.bench_function("plain_linear", |b| b.iter(|| step_plain(&plain, &x)));
    group.bench_function("burn_peft_lora", |b| b.iter(|| step_ours(&ours, &x)));
    group.bench_function("burn_native_apply_lora", |b| {
        b.iter(|| step_native(&native, &x))
    });
    group.finish();
    c.final_summary();
}
