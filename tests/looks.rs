//! Where the network looks: the reference's saliency (d logit / d input) and Grad-CAM weights
//! (d logit / d conv2.bias) against central finite differences of the forward in f64, and
//! each engine's `looks` (the GPU's looks pass, the CPU engine) against the reference.

use tabcnn::cpu::{self, all_cores, forward, gather, Acts, CpuEngine};
use tabcnn::data;
use tabcnn::gpu::GpuEngine;
use tabcnn::model::*;
use tabcnn::recipe::Hyper;

mod common;
use common::{compare, gpu};

const EPS: f64 = 1e-5;
const ODD: Arch = Arch { c1: 7, c2: 9, f1: 33, f2: 17 };

/// The logit of `class` for the normalised input `x` [3,32,32] under `p`, all in f64.
fn logit(arch: Arch, p: &[f64], x: &[f64], class: usize) -> f64 {
    let mut a = Acts::<f64>::new(1, arch);
    a.x.copy_from_slice(x);
    forward(&mut a, p, &Layout::new(arch));
    a.logits[class]
}

fn image(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..IMG_LEN).map(|_| rng.below(256) as u8).collect()
}

#[test]
fn saliency_and_cam_weights_are_finite_differences_of_the_logit() {
    for (arch, seed) in [(Arch::LENET, 3u64), (ODD, 8)] {
        let l = Layout::new(arch);
        let p32 = init_params(&l, seed);
        let p: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
        let img = image(seed + 1);
        let (mut x32, mut y) = (vec![0.0f32; IMG_LEN], [0u32]);
        gather(&mut x32, &mut y, &img, &[0], &[0], 0, 1);
        let x: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        for class in [0usize, 6] {
            let looks = cpu::looks(arch, &p32, &img, class);
            let scale = looks.dx.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            // 40 pixels spread over the three planes (7919 is prime), and the most salient one.
            let top = (0..IMG_LEN).max_by(|&a, &b| looks.dx[a].abs().total_cmp(&looks.dx[b].abs())).unwrap();
            let mut worst = 0.0f64;
            for i in (0..40).map(|j| (j * 7919) % IMG_LEN).chain([top]) {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += EPS;
                xm[i] -= EPS;
                let num = (logit(arch, &p, &xp, class) - logit(arch, &p, &xm, class)) / (2.0 * EPS);
                let err = (num - looks.dx[i] as f64).abs() / (num.abs()).max(1e-2 * scale);
                worst = worst.max(err);
                assert!(err < 1e-3, "{} class {class}: d logit / d x[{i}] is {} but the logit moves at {num}", arch.name(), looks.dx[i]);
            }
            println!("{} class {class}: saliency at 41 pixels vs finite differences (f64, eps {EPS:.0e}), tolerance 1e-3, max relative error {worst:.2e}", arch.name());
            // Grad-CAM's weights: d logit / d conv2.bias[k], k over every map.
            let b = &l.specs[CONV2_B];
            let mut worst = 0.0f64;
            let gscale = looks.dbias2.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            for k in 0..arch.c2 {
                let (mut pp, mut pm) = (p.clone(), p.clone());
                pp[b.offset + k] += EPS;
                pm[b.offset + k] -= EPS;
                let num = (logit(arch, &pp, &x, class) - logit(arch, &pm, &x, class)) / (2.0 * EPS);
                let err = (num - looks.dbias2[k] as f64).abs() / num.abs().max(1e-2 * gscale);
                worst = worst.max(err);
                assert!(err < 1e-3, "{} class {class}: d logit / d conv2.bias[{k}] is {} but the logit moves at {num}", arch.name(), looks.dbias2[k]);
            }
            println!("{} class {class}: Grad-CAM weights of {} maps vs finite differences, tolerance 1e-3, max relative error {worst:.2e}", arch.name(), arch.c2);
            assert_eq!(looks.saliency().len(), IMG * IMG);
            let cam = looks.cam();
            assert!(cam.len() == H2 * H2 && cam.iter().all(|&v| v >= 0.0), "the CAM is 10x10 and ReLU'd");
        }
    }
}

#[test]
fn every_engine_looks_where_the_reference_does() {
    let g = gpu();
    let d = data::load_path(&data::sample_dir()).expect("the bundled sample loads");
    for (arch, seed) in [(Arch::LENET, 5u64), (ODD, 2), (Arch::WIDE, 4)] {
        let l = Layout::new(arch);
        let p0 = init_params(&l, seed);
        let hyper = Hyper { batch: 4, net: arch, ..Hyper::default() };
        let ge = pollster::block_on(GpuEngine::new(&g, &p0, 4, &hyper, &d.train, &d.test)).unwrap();
        let ce = CpuEngine::new(&p0, &hyper, &d.train, &d.test, all_cores()).unwrap();
        // A test record and a picture that is not in the data (the visitor's own), two classes
        // each, in one engine one after another: nothing of the last call is left in the next.
        let test7 = d.test.images[7 * IMG_LEN..8 * IMG_LEN].to_vec();
        for (what, img) in [("test record 7", test7), ("a picture of noise", image(seed))] {
            for class in [3usize, 9] {
                let want = cpu::looks(arch, &p0, &img, class);
                let got = pollster::block_on(ge.looks(&img, class)).unwrap();
                let name = format!("{} {what} class {class}", arch.name());
                assert_eq!(got.class, class);
                compare(&format!("{name}: GPU logits"), &got.logits, &want.logits, 1e-4);
                compare(&format!("{name}: GPU conv2 maps"), &got.h2, &want.h2, 1e-4);
                compare(&format!("{name}: GPU d logit / d x (saliency)"), &got.dx, &want.dx, 1e-3);
                compare(&format!("{name}: GPU d logit / d conv2.bias (Grad-CAM)"), &got.dbias2, &want.dbias2, 1e-3);
                assert_eq!(ce.looks(&img, class).unwrap(), want, "the CPU engine is the reference");
            }
        }
        // Training's gradients are untouched by a look.
        let grads = pollster::block_on(ge.read_grads()).unwrap();
        assert!(grads.iter().all(|&v| v == 0.0), "{}: the looks pass has gradients of its own", arch.name());
        assert!(pollster::block_on(ge.looks(&[0; 10], 0)).unwrap_err().to_string().contains("not a 3x32x32 image"));
        assert!(ce.looks(&image(1), 10).unwrap_err().to_string().contains("class 10 does not exist"));
    }
}
