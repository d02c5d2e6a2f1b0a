//! The measurement behind the CPU engine's GEMM crate (BENCHMARKS.md, "The CPU engine on every
//! core"): GFLOP/s of `gemm` 0.19 (the engine's), `matrixmultiply` 0.3 and a plain row loop
//! (what the reference layers do) on the products one LeNet training step makes per image,
//! one thread each, side by side in one run.
//! `cargo run --release --example gemm_choice`

use web_time::Instant;

type Product = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);

/// c[M,N] = a[M,K] . b[K,N] on the gemm crate, one thread.
fn with_gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    tabcnn::cpu::layers::matmul(c, a, k, 1, b, n, 1, m, n, k, false);
}

/// The same on matrixmultiply.
fn with_matrixmultiply(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    // SAFETY: a, b, c are m x k, k x n and m x n, row-major, as the strides say.
    unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, 0.0, c.as_mut_ptr(), n as isize, 1) }
}

/// Rows of b scaled and added, as the reference layers' loops do (they vectorise).
fn with_loops(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        row.fill(0.0);
        for p in 0..k {
            let av = a[i * k + p];
            for (o, &bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *o += av * bv;
            }
        }
    }
}

fn main() {
    // (M, K, N, what): conv1 and conv2 forward, their weight gradients, conv2's input
    // gradient, fc1 forward on a lane of 32; then a large square for the ceiling.
    let shapes = [
        (6, 75, 784, "conv1 forward"),
        (16, 150, 100, "conv2 forward"),
        (6, 784, 75, "conv1 dweight"),
        (16, 100, 150, "conv2 dweight"),
        (150, 16, 100, "conv2 dinp"),
        (32, 400, 120, "fc1 forward, 32 images"),
        (512, 512, 512, "512^3"),
    ];
    println!("{:<24} {:>14} {:>10} {:>16} {:>10}", "product", "M x K x N", "gemm", "matrixmultiply", "loops");
    for (m, k, n, what) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (3e9 / flops) as usize + 1;
        let rate = |f: Product, c: &mut [f32]| {
            f(m, k, n, &a, &b, c);
            let t = Instant::now();
            for _ in 0..reps {
                f(m, k, n, &a, &b, c);
                std::hint::black_box(&c);
            }
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let (g, mm, l) = (rate(with_gemm, &mut c), rate(with_matrixmultiply, &mut c), rate(with_loops, &mut c));
        println!("{what:<24} {:>14} {g:>10.1} {mm:>16.1} {l:>10.1}", format!("{m}x{k}x{n}"));
    }
    println!("(GFLOP/s, one thread each)");
}
