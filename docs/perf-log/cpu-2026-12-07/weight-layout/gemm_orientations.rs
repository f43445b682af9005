use std::time::Instant;
fn run(m: usize, n: usize, k: usize, dst: &mut [f32], dcs: isize, drs: isize,
       lhs: &[f32], lcs: isize, lrs: isize, rhs: &[f32], rcs: isize, rrs: isize) {
    unsafe { gemm::gemm(m, n, k, dst.as_mut_ptr(), dcs, drs, false, lhs.as_ptr(), lcs, lrs,
        rhs.as_ptr(), rcs, rrs, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0)); }
}
fn time(reps: usize, mut f: impl FnMut()) -> f64 { f(); let t = Instant::now(); for _ in 0..reps { f(); } t.elapsed().as_secs_f64() / reps as f64 }
fn main() {
    let rows = 512;
    let reps = 20;
    for (a, b) in [(576usize, 576usize), (576, 192), (576, 1536), (1536, 576), (576, 8192)] {
        // a = in, b = out. x [rows, a], g [rows, b]; W [a, b] row-major; Wt [b, a] row-major.
        let x: Vec<f32> = (0..rows * a).map(|i| (i % 7) as f32 * 0.1).collect();
        let g: Vec<f32> = (0..rows * b).map(|i| (i % 5) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..a * b).map(|i| (i % 3) as f32 * 0.1).collect();
        let mut out = vec![0f32; rows * a.max(b)];
        let fl = 2.0 * (rows * a * b) as f64 / 1e9;
        let (ai, bi) = (a as isize, b as isize);
        // forward x·W, W [a,b] row-major: rhs cs 1 rs b
        let t1 = time(reps, || run(rows, b, a, &mut out, 1, bi, &x, 1, ai, &w, 1, bi));
        // forward x·Wtᵀ, Wt [b,a]: rhs (k=a rows, n=b cols) element (i,j) = Wt[j,i] -> cs a, rs 1
        let t2 = time(reps, || run(rows, b, a, &mut out, 1, bi, &x, 1, ai, &w, ai, 1));
        // backward g·Wᵀ with W [a,b]: rhs [b, a], element (i,j) = W[j, i] -> cs b, rs 1
        let t3 = time(reps, || run(rows, a, b, &mut out, 1, ai, &g, 1, bi, &w, bi, 1));
        // backward g·Wt with Wt [b,a] row-major: rhs cs 1 rs a
        let t4 = time(reps, || run(rows, a, b, &mut out, 1, ai, &g, 1, bi, &w, 1, ai));
        // g·Wᵀ via transposed copy of W then contiguous product
        let mut wt = vec![0f32; a * b];
        let t5 = time(reps, || {
            for i in 0..a { for j in 0..b { wt[j * a + i] = w[i * b + j]; } }
            run(rows, a, b, &mut out, 1, ai, &g, 1, bi, &wt, 1, ai)
        });
        println!("in {a} out {b}: x·W {:.0} | x·Wtᵀ {:.0} | g·Wᵀ {:.0} | g·Wt {:.0} | copy+g·Wt {:.0} GFLOP/s",
            fl / t1, fl / t2, fl / t3, fl / t4, fl / t5);
    }
}
