//! Helpers shared by the integration tests: the GPU (or a clear failure when none is there),
//! the element-wise comparison that prints its tolerance and max relative error, and archives
//! in the official layout built in memory.
#![allow(dead_code)]

use std::sync::OnceLock;
use tabcnn::gpu::Gpu;

/// Max relative error accepted between a kernel and the CPU reference (f32).
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
