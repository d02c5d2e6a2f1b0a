//! Helpers shared by the integration tests: the GPU (or a clear failure when none is there),
//! the element-wise comparison that prints its tolerance and max relative error, random layer
//! inputs, and archives in the official layout built in memory.
#![allow(dead_code)]

use std::sync::OnceLock;
use tabcnn::cpu;
use tabcnn::gpu::Gpu;
use tabcnn::model::Rng;

/// Max relative error accepted between two f32 computations of the same values that sum in
/// different orders: a kernel against the CPU reference, or two engines over a few steps from
/// the same weights. A sum of n terms rounds to within about sqrt(n) * 2^-24 of the terms'
/// size (independent roundings; n * 2^-24 at worst), and the longest sums here have n <= 10^4
/// (conv1's weight gradient: N * 28 * 28 at batch 8): about 6e-6. `compare` divides by at
/// least 1 % of the tensor's largest value, so 1e-4 leaves a factor of 16 for cancellation
/// and the few operations after the sum (bias, ReLU, an SGD update: each adds 2^-24). It
/// holds on any machine's arithmetic; a trajectory of hundreds of steps does not (SGD
/// amplifies the last bits), so engines are compared over a few steps at a time.
pub const TOL: f64 = 1e-4;

/// One device for all tests of a binary (opening lavapipe costs ~100 ms each time).
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match pollster::block_on(Gpu::new()) {
        Ok(g) => {
            println!("adapter: {}", g.adapter);
            g
        }
        Err(e) => panic!("the GPU tests need a wgpu adapter: {e}"),
    })
    .clone()
}

/// Relative error of each element: |got - want| / max(|want|, 1e-2 * max|want|), so values
/// near zero from cancellation are measured against the tensor's scale. NaN in `got` (a
/// poisoned element left unwritten) fails.
pub fn compare(name: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    let mut worst = 0.0f64;
    let mut at = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite() || !w.is_finite(), "{name}: element {i} is {g} (unwritten or bad), want {w}");
        let den = (w.abs() as f64).max(1e-2 * scale);
        let e = (g as f64 - w as f64).abs() / den;
        if e > worst {
            worst = e;
            at = i;
        }
    }
    println!("{name}: {} elements, tolerance {tol:.0e}, max relative error {worst:.2e}", got.len());
    assert!(worst <= tol, "{name}: max relative error {worst:.3e} at element {at} (got {}, want {}) exceeds {tol:.0e}", got[at], want[at]);
    worst
}

/// A tar holding `files` under cifar-10-batches-bin/, as the official archive does.
pub fn tar_of(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), &bytes[..]).unwrap();
    }
    tar.into_inner().unwrap()
}

/// `bytes` gzipped (fast level).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `len` values uniform in [-scale, scale).
pub fn randn(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-scale, scale)).collect()
}

/// An output poisoned before a kernel writes it: a value left unwritten shows as NaN.
pub fn nan(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// A conv layer's input x[N,C,H,W] (every 7th value exactly 1.0, so pooling sees ties),
/// weights [OC,C,K,K] and biases [OC] (every third -5, so ReLU cuts whole windows and no
/// gradient flows back through them).
pub fn conv_case(rng: &mut Rng, n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inp: Vec<f32> = (0..n * c * h * w).map(|i| if i % 7 == 0 { 1.0 } else { rng.uniform(-1.0, 1.0) }).collect();
    let weight = randn(rng, oc * c * k * k, 0.3);
    let bias: Vec<f32> = (0..oc).map(|o| if o % 3 == 1 { -5.0 } else { rng.uniform(-0.3, 0.3) }).collect();
    (inp, weight, bias)
}

/// A conv layer's input, weights, the reference forward's pool argmaxes [N,OC,OH/2,OW/2] and
/// a random pooled gradient of that shape: what a backward test starts from.
pub fn pooled_case(rng: &mut Rng, n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<u32>, Vec<f32>) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    let (inp, weight, bias) = conv_case(rng, n, c, h, w, oc, k);
    let pool_len = n * oc * (oh / 2) * (ow / 2);
    let (mut out, mut pool, mut arg) = (vec![0.0f32; n * oc * oh * ow], vec![0.0f32; pool_len], vec![0u32; pool_len]);
    cpu::conv_pool_forward(&mut out, &mut pool, &mut arg, &inp, &weight, &bias, n, c, h, w, oc, k);
    (inp, weight, arg, randn(rng, pool_len, 1.0))
}

/// Binomial standard deviations a learned accuracy must clear above chance: a network that
/// learned nothing passes 5 of them with probability below 3e-7 (the normal tail; the
/// binomial's is no fatter here).
pub const LEARNED_SDS: f64 = 5.0;

/// The test accuracy that proves learning on a test set with `labels`, from the statistics of
/// chance alone. A network whose predictions do not depend on the image scores, on average,
/// at most the largest class's share p (always answering that class); its accuracy on n
/// records has a standard deviation of at most sqrt(p(1-p)/n). The bar is p plus
/// LEARNED_SDS of those: on the sample's 1,000 balanced test images, 10 % + 4.7 %.
pub fn learned_bar(labels: &[u8]) -> f64 {
    let n = labels.len() as f64;
    let p = (0..10u8).map(|c| labels.iter().filter(|&&l| l == c).count()).max().unwrap_or(0) as f64 / n;
    p + LEARNED_SDS * (p * (1.0 - p) / n).sqrt()
}

/// A run that learns well past learned_bar on the sample on any machine: LeNet, batch 64, lr
/// 0.05, 6 epochs of 2,000 images (12,000 images: seconds on the CPU engine, tens on lavapipe).
/// Its accuracy depends on the machine's rounding; over 4 seeds and both CPU roundings (8 runs,
/// 2026-12-03) it landed at 31.8-36.7 %, 15 points above the bar of 16.3 %, where the tutorial's
/// batch 4 at lr 0.01 landed at 22.8-33.0 % after 6 epochs and at 18.0-24.2 % after 2.
pub fn learning_hyper() -> tabcnn::recipe::Hyper {
    tabcnn::recipe::Hyper { batch: 64, lr: 0.05, epochs: 6, ..Default::default() }
}

/// Assert that `accuracy` on the test set with `labels` is learning, not chance (learned_bar).
pub fn assert_learned(what: &str, accuracy: f64, labels: &[u8]) {
    let bar = learned_bar(labels);
    println!("{what}: test accuracy {:.1} %, the bar for learning {:.1} % (chance + {LEARNED_SDS} SD)", 100.0 * accuracy, 100.0 * bar);
    assert!(accuracy > bar, "{what}: test accuracy {:.1} % is not clearly above chance ({:.1} %)", 100.0 * accuracy, 100.0 * bar);
}
