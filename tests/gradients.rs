//! The CPU reference backward of every layer against central finite differences of its forward,
//! all in f64 (the layers are generic over the float). Each check uses the scalar
//! L = sum(out * R) for a random R, so dL/dout = R is what goes into the backward.

use tabcnn::cpu::*;
use tabcnn::model::Rng;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn rand64(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compare an analytic gradient with central differences of `f` at `x`, element by element.
fn check(name: &str, x: &[f64], analytic: &[f64], f: &dyn Fn(&[f64]) -> f64) {
    check_tol(name, x, analytic, f, TOL)
}

fn check_tol(name: &str, x: &[f64], analytic: &[f64], f: &dyn Fn(&[f64]) -> f64, tol: f64) {
    let mut worst = 0.0f64;
    let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    for i in 0..x.len() {
        let mut xp = x.to_vec();
        xp[i] += EPS;
        let mut xm = x.to_vec();
        xm[i] -= EPS;
        let num = (f(&xp) - f(&xm)) / (2.0 * EPS);
        let err = (num - analytic[i]).abs() / analytic[i].abs().max(1e-2 * scale);
        worst = worst.max(err);
        assert!(err < tol, "{name}: element {i}: analytic {} numeric {num} (relative error {err:.2e})", analytic[i]);
    }
    println!("{name}: {} elements vs finite differences (f64, eps {EPS:.0e}), tolerance {tol:.0e}, max relative error {worst:.2e}", x.len());
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let mut rng = Rng::new(21);
    for (n, c, h, w, oc, k) in [(2usize, 3usize, 7usize, 6usize, 4usize, 3usize), (1, 2, 5, 5, 3, 5)] {
        let (oh, ow) = (h - k + 1, w - k + 1);
        let x = rand64(&mut rng, n * c * h * w);
        let wt = rand64(&mut rng, oc * c * k * k);
        let b = rand64(&mut rng, oc);
        let r = rand64(&mut rng, n * oc * oh * ow);
        let loss = |x: &[f64], wt: &[f64], b: &[f64]| {
            let mut out = vec![0.0; n * oc * oh * ow];
            conv2d_forward(&mut out, x, wt, b, n, c, h, w, oc, k, false);
            dot(&out, &r)
        };
        let mut dx = vec![0.0; x.len()];
        conv2d_backward_input(&mut dx, &r, &wt, n, c, h, w, oc, k);
        let (mut dw, mut db) = (vec![0.0; wt.len()], vec![0.0; oc]);
        conv2d_backward_weight(&mut dw, &mut db, &r, &x, n, c, h, w, oc, k);
        let shape = format!("n{n} c{c} {h}x{w} oc{oc} k{k}");
        check(&format!("conv2d dinp {shape}"), &x, &dx, &|v| loss(v, &wt, &b));
        check(&format!("conv2d dweight {shape}"), &wt, &dw, &|v| loss(&x, v, &b));
        check(&format!("conv2d dbias {shape}"), &b, &db, &|v| loss(&x, &wt, v));
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = Rng::new(22);
    for (n, i, o) in [(3usize, 7usize, 5usize), (4, 20, 10)] {
        let x = rand64(&mut rng, n * i);
        let wt = rand64(&mut rng, o * i);
        let b = rand64(&mut rng, o);
        let r = rand64(&mut rng, n * o);
        let loss = |x: &[f64], wt: &[f64], b: &[f64]| {
            let mut out = vec![0.0; n * o];
            linear_forward(&mut out, x, wt, b, n, i, o, false);
            dot(&out, &r)
        };
        let mut dx = vec![0.0; x.len()];
        linear_backward_input(&mut dx, &r, &wt, &x, n, i, o, false);
        let (mut dw, mut db) = (vec![0.0; wt.len()], vec![0.0; o]);
        linear_backward_weight(&mut dw, &mut db, &r, &x, n, i, o);
        check(&format!("linear dinp n{n} in{i} out{o}"), &x, &dx, &|v| loss(v, &wt, &b));
        check(&format!("linear dweight n{n} in{i} out{o}"), &wt, &dw, &|v| loss(&x, v, &b));
        check(&format!("linear dbias n{n} in{i} out{o}"), &b, &db, &|v| loss(&x, &wt, v));
    }
}

#[test]
fn relu_then_linear_backward_matches_finite_differences() {
    // linear_backward_input with the mask is the gradient wrt z of linear(relu(z)).
    let mut rng = Rng::new(23);
    let (n, i, o) = (3usize, 9usize, 4usize);
    let z = rand64(&mut rng, n * i);
    let wt = rand64(&mut rng, o * i);
    let b = rand64(&mut rng, o);
    let r = rand64(&mut rng, n * o);
    let relu = |z: &[f64]| z.iter().map(|v| v.max(0.0)).collect::<Vec<_>>();
    let loss = |z: &[f64]| {
        let mut out = vec![0.0; n * o];
        linear_forward(&mut out, &relu(z), &wt, &b, n, i, o, false);
        dot(&out, &r)
    };
    let mut dz = vec![0.0; z.len()];
    linear_backward_input(&mut dz, &r, &wt, &relu(&z), n, i, o, true);
    check("relu + linear dinp (fused mask)", &z, &dz, &loss);
}

#[test]
fn conv_pool_backward_matches_finite_differences() {
    // conv2d + ReLU + max-pool: the backward from the pooled gradient at the kept argmax (the
    // pool and ReLU backward together) against differences of the pooled output.
    let mut rng = Rng::new(24);
    for (n, c, h, w, oc, k) in [(2usize, 3usize, 8usize, 9usize, 4usize, 3usize), (1, 2, 9, 9, 3, 5)] {
        let (oh, ow) = (h - k + 1, w - k + 1);
        let pool_len = n * oc * (oh / 2) * (ow / 2);
        let x = rand64(&mut rng, n * c * h * w);
        let wt = rand64(&mut rng, oc * c * k * k);
        let b = rand64(&mut rng, oc);
        let r = rand64(&mut rng, pool_len);
        let forward = |x: &[f64], wt: &[f64], b: &[f64]| {
            let (mut out, mut pool, mut arg) = (vec![0.0; n * oc * oh * ow], vec![0.0; pool_len], vec![0u32; pool_len]);
            conv_pool_forward(&mut out, &mut pool, &mut arg, x, wt, b, n, c, h, w, oc, k);
            (pool, arg)
        };
        let loss = |x: &[f64], wt: &[f64], b: &[f64]| dot(&forward(x, wt, b).0, &r);
        let (_, arg) = forward(&x, &wt, &b);
        assert!(arg.contains(&NO_ARG) || n * oc < 4, "some window is cut by the ReLU");
        let mut scratch = vec![0.0; n * oc * oh * ow];
        let mut dx = vec![0.0; x.len()];
        conv_pool_backward_input(&mut dx, &mut scratch, &r, &arg, &wt, n, c, h, w, oc, k);
        let (mut dw, mut db) = (vec![0.0; wt.len()], vec![0.0; oc]);
        conv_pool_backward_weight(&mut dw, &mut db, &mut scratch, &r, &arg, &x, n, c, h, w, oc, k);
        let shape = format!("n{n} c{c} {h}x{w} oc{oc} k{k}");
        check(&format!("conv_pool dinp {shape}"), &x, &dx, &|v| loss(v, &wt, &b));
        check(&format!("conv_pool dweight {shape}"), &wt, &dw, &|v| loss(&x, v, &b));
        check(&format!("conv_pool dbias {shape}"), &b, &db, &|v| loss(&x, &wt, v));
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(25);
    for n in [1usize, 4, 7] {
        let logits: Vec<f64> = rand64(&mut rng, n * 10).iter().map(|v| v * 3.0).collect();
        let labels: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
        let mut d = vec![0.0; n * 10];
        let (sum, _) = cross_entropy(&mut d, &logits, &labels, n);
        assert!(sum > 0.0);
        let loss = |l: &[f64]| {
            let mut scratch = vec![0.0; n * 10];
            cross_entropy(&mut scratch, l, &labels, n).0 / n as f64
        };
        check(&format!("cross_entropy dlogits n{n} (mean loss)"), &logits, &d, &loss);
    }
}

#[test]
fn whole_network_backward_matches_finite_differences() {
    // The composed backward, wired as the engine runs it, against finite differences of the
    // mean loss in f64, on entries of every parameter tensor: this catches wiring mistakes (a
    // wrong offset, a missing mask) that the per-layer checks cannot. LeNet, and a network of
    // odd widths (the code that trains the wider variant).
    use tabcnn::model::*;
    for arch in [Arch::LENET, Arch { c1: 3, c2: 5, f1: 7, f2: 9 }] {
        network_backward_matches_finite_differences(arch);
    }
}

fn network_backward_matches_finite_differences(arch: tabcnn::model::Arch) {
    use tabcnn::model::*;
    let l = Layout::new(arch);
    let p: Vec<f64> = init_params(&l, 3).iter().map(|&v| v as f64).collect();
    let mut rng = Rng::new(26);
    let n = 3;
    let mut a = Acts::<f64>::new(n, arch);
    for v in a.x.iter_mut() {
        *v = rng.next_f64() * 2.0 - 1.0;
    }
    for y in a.y.iter_mut() {
        *y = rng.below(10) as u32;
    }
    let loss_at = |p: &[f64]| -> f64 {
        let mut a = a.clone();
        forward(&mut a, p, &l);
        let mut d = vec![0.0f64; n * 10];
        cross_entropy(&mut d, &a.logits, &a.y, n).0 / n as f64
    };
    let mut g = vec![0.0f64; l.total];
    let mut a2 = a.clone();
    forward(&mut a2, &p, &l);
    let (logits, labels) = (a2.logits.clone(), a2.y.clone());
    cross_entropy(&mut a2.dlogits, &logits, &labels, n);
    backward(&mut g, &mut a2, &p, &l);
    for s in &l.specs {
        // 7919 is prime: distinct entries spread over the tensor.
        let idx: Vec<usize> = (0..12.min(s.len())).map(|j| s.offset + (j * 7919) % s.len()).collect();
        let analytic: Vec<f64> = idx.iter().map(|&i| g[i]).collect();
        let x: Vec<f64> = idx.iter().map(|&i| p[i]).collect();
        // Twelve ReLU/max kinks deep, round-off in the numeric derivative reaches ~1e-6.
        check_tol(
            &format!("{} backward {} ({} entries)", arch.name(), s.name, idx.len()),
            &x,
            &analytic,
            &|v| {
                let mut pp = p.clone();
                for (k, &i) in idx.iter().enumerate() {
                    pp[i] = v[k];
                }
                loss_at(&pp)
            },
            1e-4,
        );
    }
}
