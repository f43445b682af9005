//! Where flex's matrix products lose time: burn's `matmul` on the flex device against the
//! `gemm` crate it calls, at the products of a training step at the SmolLM2-135M shape
//! (batch 4 × sequence 128 = 512 rows).
//!
//! For each shape `[512, k] × [k, n]` it times three orientations: the forward product
//! `x · W`, the input's gradient `g · Wᵀ` (`Wᵀ` a transposed view) and the weight's gradient
//! `xᵀ · g`, each through burn (`Tensor::matmul`, which allocates its output) and as one `gemm`
//! call into an output buffer that is reused. For `x · W` it also times `gemm` into a buffer
//! made the way burn-flex 0.22.1 makes every new tensor: a zeroed `Vec<u8>`, then copied into a
//! 16-byte-aligned allocation (`FlexTensor::empty`, `Bytes::from_bytes_vec`).
//!
//! It also times `x · W` and `g · Wᵀ` through burn with the weight as a training step holds it:
//! `burn_peft_core::layout_for_products` stores a weight with more outputs than inputs
//! column-major (variant "burn, laid out", printed only where it changes the weight).
//!
//! The process first sets glibc's malloc up as the `burn-peft` tool does for a training step
//! (`burn_peft_core::allocator::tune_for_training`; `BURN_PEFT_MALLOC=off` keeps glibc's
//! defaults, which cost burn's products much more in a loop that does nothing else).
//!
//! One JSON object per line: `shape`, `op`, `variant`, `ms`, `gflops`. `scripts/bench_matmul.py`
//! runs it beside PyTorch on the same shapes and prints the table.
//!
//! ```sh
//! cargo bench --bench flex_matmul -- [repetitions]
//! ```

use std::alloc::{Layout, alloc, dealloc};
use std::hint::black_box;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

const ROWS: usize = 512;
/// `[k, n]` of the step's weights: q/o, k/v, gate/up, down, and 8192 columns of the output
/// layer (a chunk of the loss).
const SHAPES: [(usize, usize); 5] = [
    (576, 576),
    (576, 192),
    (576, 1536),
    (1536, 576),
    (576, 8192),
];

fn main() {
    // `cargo bench` passes `--bench`; the one argument of our own is the repetition count.
    let count = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let reps: usize = match count.map(|s| s.parse()) {
        None => 20,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: the repetitions must be a positive integer");
            std::process::exit(2);
        }
    };
    let tuning = burn_peft_core::allocator::tune_for_training();
    eprintln!("malloc: {tuning:?}");
    let device = Device::flex();
    for (k, n) in SHAPES {
        let shape = format!("{ROWS}x{k}x{n}");
        let flop = 2.0 * (ROWS * k * n) as f64;
        let report = |op: &str, variant: &str, seconds: f64| {
            println!(
                "{{\"shape\":\"{shape}\",\"op\":\"{op}\",\"variant\":\"{variant}\",\"ms\":{:.4},\"gflops\":{:.1}}}",
                seconds * 1e3,
                flop / seconds / 1e9
            );
        };

        let x = Tensor::<2>::random([ROWS, k], Distribution::Default, &device);
        let w = Tensor::<2>::random([k, n], Distribution::Default, &device);
        let g = Tensor::<2>::random([ROWS, n], Distribution::Default, &device);
        let burn_ops: [(&str, &dyn Fn() -> Tensor<2>); 3] = [
            ("x·W", &|| x.clone().matmul(w.clone())),
            ("g·Wᵀ", &|| g.clone().matmul(w.clone().transpose())),
            ("xᵀ·g", &|| x.clone().transpose().matmul(g.clone())),
        ];
        for (op, product) in burn_ops {
            report(op, "burn", time(reps, || drop(black_box(product()))));
        }
        if n > k {
            let laid_out = burn_peft_core::layout_for_products(w.clone());
            let laid_out_ops: [(&str, &dyn Fn() -> Tensor<2>); 2] = [
                ("x·W", &|| x.clone().matmul(laid_out.clone())),
                ("g·Wᵀ", &|| {
                    g.clone().matmul(laid_out.clone().transpose())
                }),
            ];
            for (op, product) in laid_out_ops {
                report(
                    op,
                    "burn, laid out",
                    time(reps, || drop(black_box(product()))),
                );
            }
        }

        let xs = host(&x);
        let ws = host(&w);
        let gs = host(&g);
        let mut out = vec![0f32; ROWS * n.max(k)];
        let mut wgrad = vec![0f32; k * n];
        // Row-major operands: (column stride, row stride) = (1, columns); a transposed view
        // swaps them.
        let gemm_ops: [(&str, Product); 3] = [
            ("x·W", Product::new(ROWS, n, k, (&xs, 1, k), (&ws, 1, n))),
            ("g·Wᵀ", Product::new(ROWS, k, n, (&gs, 1, n), (&ws, n, 1))),
            ("xᵀ·g", Product::new(k, n, ROWS, (&xs, k, 1), (&gs, 1, n))),
        ];
        for (op, product) in &gemm_ops {
            let dst = if *op == "xᵀ·g" {
                &mut wgrad
            } else {
                &mut out
            };
            report(op, "gemm", time(reps, || product.run(dst.as_mut_ptr())));
        }
        let forward = &gemm_ops[0].1;
        let bytes = ROWS * n * 4;
        report(
            "x·W",
            "gemm, zeroed and copied output",
            time(reps, || {
                let zeroed = vec![0u8; bytes];
                let layout = Layout::from_size_align(bytes, 16).expect("a valid layout");
                // SAFETY: `layout` has a non-zero size; the block is written in full by the
                // copy, used as `ROWS × n` f32 values and freed with the same layout.
                unsafe {
                    let block = alloc(layout);
                    assert!(!block.is_null(), "out of memory");
                    std::ptr::copy_nonoverlapping(zeroed.as_ptr(), block, bytes);
                    drop(zeroed);
                    forward.run(block.cast());
                    dealloc(black_box(block), layout);
                }
            }),
        );
    }
}

/// Mean seconds per call over `reps` calls, after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn host(t: &Tensor<2>) -> Vec<f32> {
    t.to_data().try_to_vec().expect("f32 values")
}

/// One `[m, k] × [k, n]` product over strided row-major operands.
struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    lhs: (&'a [f32], usize, usize),
    rhs: (&'a [f32], usize, usize),
}

impl<'a> Product<'a> {
    fn new(
        m: usize,
        n: usize,
        k: usize,
        lhs: (&'a [f32], usize, usize),
        rhs: (&'a [f32], usize, usize),
    ) -> Self {
        assert!(lhs.0.len() >= m * k && rhs.0.len() >= k * n);
        Self { m, n, k, lhs, rhs }
    }

    /// Writes the `[m, n]` product, row-major, to `dst`, as burn-flex calls `gemm`: all
    /// threads, the output not read.
    fn run(&self, dst: *mut f32) {
        let (lhs, lhs_cs, lhs_rs) = self.lhs;
        let (rhs, rhs_cs, rhs_rs) = self.rhs;
        // SAFETY: the operands hold `m·k` and `k·n` values at these strides (checked in
        // `new`); callers pass a `dst` of at least `m·n` values.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                dst,
                1,
                self.n as isize,
                false,
                lhs.as_ptr(),
                lhs_cs as isize,
                lhs_rs as isize,
                rhs.as_ptr(),
                rhs_cs as isize,
                rhs_rs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
}
