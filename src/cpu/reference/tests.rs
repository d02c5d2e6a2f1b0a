//! The reference layers of any network checked against what they mean: each forward against a
//! hand computation or LeNet's own reference layers, each backward against f64 central
//! differences of the forward, inside small networks of odd shapes (every stride and padding a
//! convolution may have, overlapping pools, batch norm in both modes, residual blocks).

use super::conv::*;
use super::elementwise::*;
use super::net::*;
use super::norm::*;
use super::pool::*;
use super::{backward, conv2d_forward, cross_entropy, forward, Acts};
use crate::model::{init_params, Arch, Layout, Rng, CLASSES, IMG_LEN};
use crate::net::plan::Plan;
use crate::net::text::parse;
use crate::net::{Act, Layer};

fn random(len: usize, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_f64() * 2.0 - 1.0).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn conv_of_stride_1_without_padding_is_lenets_conv() {
    let d = ConvDims { n: 2, c: 3, h: 9, w: 7, oc: 4, k: 3, s: 1, p: 0 };
    let (inp, weight, bias) = (random(2 * 3 * 63, 1), random(4 * 27, 2), random(4, 3));
    let mut ours = vec![f64::NAN; 2 * 4 * 7 * 5];
    let mut lenets = ours.clone();
    conv_forward(&mut ours, &inp, &weight, Some(&bias), d);
    conv2d_forward(&mut lenets, &inp, &weight, &bias, 2, 3, 9, 7, 4, 3, false);
    // Both sum the same 27 products of terms below 1 in another order: |error| < 27 * 28 * eps.
    let tol = 27.0 * 28.0 * f64::EPSILON;
    println!("conv vs LeNet's conv: max diff {:.2e}, tolerance {tol:.2e}", max_diff(&ours, &lenets));
    assert!(max_diff(&ours, &lenets) <= tol);
}

#[test]
fn conv_padding_reads_zeros_and_stride_skips() {
    // One 3x3 input 1..9, a 3x3 kernel of ones, stride 2, padding 1: outputs at (0,0), (0,2),
    // (2,0), (2,2) of the padded sums, each a 2x2 corner of the input.
    let inp: Vec<f64> = (1..=9).map(f64::from).collect();
    let mut out = vec![f64::NAN; 4];
    conv_forward(&mut out, &inp, &[1.0; 9], None, ConvDims { n: 1, c: 1, h: 3, w: 3, oc: 1, k: 3, s: 2, p: 1 });
    assert_eq!(out, [1.0 + 2.0 + 4.0 + 5.0, 2.0 + 3.0 + 5.0 + 6.0, 4.0 + 5.0 + 7.0 + 8.0, 5.0 + 6.0 + 8.0 + 9.0]);
}

#[test]
fn batch_norm_normalises_by_the_batch_and_moves_the_running_statistics() {
    let (n, c, hw) = (3, 2, 5);
    let inp: Vec<f64> = random(n * c * hw, 4).iter().map(|v| 3.0 * v + 2.0).collect();
    let (gamma, beta) = ([1.5, 0.5], [0.25, -1.0]);
    let (mut out, mut mean, mut var) = (vec![f64::NAN; inp.len()], [0.0; 2], [0.0; 2]);
    batchnorm_forward(&mut out, &mut mean, &mut var, &inp, &gamma, &beta, n, c, hw, 1e-5);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n).flat_map(|b| out[(b * c + ch) * hw..][..hw].to_vec()).collect();
        let m = vals.iter().sum::<f64>() / 15.0;
        let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 15.0;
        // Mean beta; variance gamma^2 var / (var + eps).
        assert!((m - beta[ch]).abs() < 1e-12, "{m}");
        assert!((v - gamma[ch] * gamma[ch] * var[ch] / (var[ch] + 1e-5)).abs() < 1e-12, "{v}");
    }
    let (mut rm, mut rv) = ([0.0; 2], [1.0; 2]);
    batchnorm_running(&mut rm, &mut rv, &mean, &var, n, c, hw, 0.1);
    assert!((rm[0] - 0.1 * mean[0]).abs() < 1e-15 && (rv[1] - (0.9 + 0.1 * var[1] * 15.0 / 14.0)).abs() < 1e-15);
    // Evaluation with the batch's own statistics as running ones gives the training output.
    let mut eval = vec![f64::NAN; inp.len()];
    batchnorm_forward_eval(&mut eval, &inp, &gamma, &beta, &mean, &var, n, c, hw, 1e-5);
    assert!(max_diff(&eval, &out) < 1e-12);
}

#[test]
fn activations_pools_and_dropout_give_their_values() {
    // GELU(1) = Phi(1) = 0.841344746068543; GELU(-1) = -(1 - Phi(1)).
    let x = [1.0f64, -1.0, 0.0, 2.0];
    let mut out = [f64::NAN; 4];
    act_forward(&mut out, &x, Act::Gelu);
    assert!((out[0] - 0.841_344_746_068_543).abs() < 1e-14 && (out[1] + 0.158_655_253_931_457).abs() < 1e-14 && out[2] == 0.0);
    act_forward(&mut out, &x, Act::Sigmoid);
    assert!((out[2] - 0.5).abs() < 1e-15 && (out[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
    let mut g32 = [f32::NAN; 1];
    act_forward(&mut g32, &[1.0f32], Act::Gelu);
    assert!((g32[0] - 0.841_344_7).abs() < 2e-7, "{}", g32[0]);
    // A 3x3 plane, 2x2 windows of stride 1 (overlapping): max and mean of each, and the
    // gradient of a shared maximum summed.
    let plane = [1.0f64, 5.0, 2.0, 3.0, 4.0, 9.0, 0.0, 8.0, 7.0];
    let (mut mx, mut arg, mut avg) = ([0.0; 4], [0u32; 4], [0.0; 4]);
    maxpool2d_forward(&mut mx, &mut arg, &plane, 1, 1, 3, 3, 2, 1);
    avgpool2d_forward(&mut avg, &plane, 1, 1, 3, 3, 2, 1);
    assert_eq!((mx, arg, avg), ([5.0, 9.0, 8.0, 9.0], [1, 5, 7, 5], [13.0 / 4.0, 5.0, 15.0 / 4.0, 7.0]));
    let mut d = [f64::NAN; 9];
    maxpool2d_backward(&mut d, &[1.0, 2.0, 3.0, 4.0], &arg, 1, 1, 3, 3, 2, 1);
    assert_eq!(d, [0.0, 1.0, 0.0, 0.0, 0.0, 6.0, 0.0, 3.0, 0.0]);
    // Dropout keeps about 1 - p, scaled by 1 / (1 - p), and its mask follows the seed alone.
    let ones = vec![1.0f64; 10_000];
    let mut dropped = vec![f64::NAN; 10_000];
    dropout_forward(&mut dropped, &ones, 0.25, 11);
    let kept = dropped.iter().filter(|&&v| v != 0.0).count();
    assert!(dropped.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-15));
    // 10,000 draws of p = 0.75: the count's standard deviation is 43; 5 of them is 217.
    assert!((7_283..=7_717).contains(&kept), "{kept} kept");
    let mut again = vec![0.0; 10_000];
    dropout_forward(&mut again, &ones, 0.25, 11);
    assert_eq!(dropped, again);
    dropout_forward(&mut again, &ones, 0.25, 12);
    assert_ne!(dropped, again);
}

/// The mean cross-entropy of a batch through `plan` (a forward in `mode` on copies of the
/// buffers, so the running statistics do not move between the finite differences).
fn loss(a: &mut NetActs<f64>, p: &[f64], buffers: &[f64], plan: &Plan, mode: Mode) -> f64 {
    net_forward(a, p, &mut buffers.to_vec(), plan, mode);
    let logits = a.out[plan.output].clone();
    let (sum, _) = cross_entropy(&mut a.dlogits, &logits, &a.y, a.n);
    sum / a.n as f64
}

/// Every parameter's and a sample of the image's gradients against central differences in f64.
fn check_gradients(text: &str, n: usize, mode: Mode) {
    let plan = Plan::new(&parse(text).unwrap()).unwrap();
    let p: Vec<f64> = plan.params.init(5).iter().map(|&v| v as f64).collect();
    // Running statistics away from their start, so evaluation's affine map is not the identity.
    let buffers: Vec<f64> = plan.params.init_buffers().iter().zip(random(plan.params.buffer_total, 6)).map(|(&b, r)| b as f64 + 0.5 * r.abs()).collect();
    let mut a = NetActs::<f64>::new(n, &plan);
    a.x = random(n * IMG_LEN, 7);
    a.y = (0..n as u32).map(|b| (b * 7 + 3) % CLASSES as u32).collect();
    a.dropout_seed = 99;
    let base = loss(&mut a, &p, &buffers, &plan, mode);
    assert!(base.is_finite());
    let mut g = vec![f64::NAN; p.len()];
    net_backward(&mut g, &mut a, &p, &buffers, &plan, mode);
    let dx = a.dx.clone();
    // h = 1e-6: the central difference's truncation error h^2 f''' / 6 is ~1e-13 for these
    // smooth functions of O(1) values; its rounding error eps |L| / h is ~1e-10. ReLU and max
    // pool have kinks, and a difference across one is wrong: h moves the values a window
    // compares by a few h, below the smallest gap between a window's two largest values in
    // these seeded cases (4e-5 in the residual network's pool at batch 3).
    let h = 1e-6;
    let tol = 1e-7;
    let mut worst: f64 = 0.0;
    let numeric = |a: &mut NetActs<f64>, p: &mut Vec<f64>, i: usize| {
        let v = p[i];
        p[i] = v + h;
        let up = loss(a, p, &buffers, &plan, mode);
        p[i] = v - h;
        let down = loss(a, p, &buffers, &plan, mode);
        p[i] = v;
        (up - down) / (2.0 * h)
    };
    let mut q = p.clone();
    for t in &plan.params.params {
        // Every element of small tensors, a spread of 40 of large ones.
        let step = (t.len() / 40).max(1);
        for i in t.range().step_by(step) {
            let fd = numeric(&mut a, &mut q, i);
            let err = (fd - g[i]).abs() / g[i].abs().max(1.0);
            worst = worst.max(err);
            assert!(err < tol, "{text} ({mode:?}): {}[{}] analytic {} numeric {fd}", t.name, i - t.offset, g[i]);
        }
    }
    for i in (0..n * IMG_LEN).step_by(97) {
        let v = a.x[i];
        a.x[i] = v + h;
        let up = loss(&mut a, &p, &buffers, &plan, mode);
        a.x[i] = v - h;
        let down = loss(&mut a, &p, &buffers, &plan, mode);
        a.x[i] = v;
        let fd = (up - down) / (2.0 * h);
        let err = (fd - dx[i]).abs() / dx[i].abs().max(1.0);
        worst = worst.max(err);
        assert!(err < tol, "{text} ({mode:?}): image[{i}] analytic {} numeric {fd}", dx[i]);
    }
    println!("{text} ({mode:?}, batch {n}): worst relative difference {worst:.2e}, tolerance {tol:.0e}");
}

#[test]
fn convolutions_of_every_stride_and_padding_have_their_gradients() {
    for k in [1, 2, 3, 5] {
        for s in [1, 2, 3] {
            for p in [0, 1, 2] {
                if p < k {
                    check_gradients(&format!("avgpool(3) conv(3,{k},stride={s},pad={p}) flatten linear(10)"), 2, Mode::Train);
                }
            }
        }
    }
    check_gradients("avgpool(4) conv(5,3,stride=2,pad=1,bias=0) tanh flatten linear(10,bias=0)", 3, Mode::Train);
}

#[test]
fn every_layer_type_has_its_gradients() {
    let nets = [
        "avgpool(4) conv(4,3,pad=1) bn relu maxpool(3,stride=2) flatten linear(6) bn(scale=0) gelu linear(10)",
        "maxpool(4) conv(4,3) bn(momentum=0.5,eps=0.001) sigmoid avgpool(2,stride=1) gap flatten linear(10) scale(0.125)",
        "avgpool(4) conv(4,3,pad=1) res(conv(4,3,pad=1) bn gelu res(conv(4,1) tanh)) maxpool(2) flatten dropout(0.3) linear(10)",
    ];
    for net in nets {
        check_gradients(net, 3, Mode::Train);
        check_gradients(net, 2, Mode::Eval);
    }
}

#[test]
fn the_text_of_lenet_runs_as_lenets_reference() {
    let (arch, n) = (Arch { c1: 3, c2: 5, f1: 7, f2: 6 }, 2);
    let plan = Plan::new(&parse("3-5-7-6").unwrap()).unwrap();
    let layout = Layout::new(arch);
    let p: Vec<f64> = init_params(&layout, 9).iter().map(|&v| v as f64).collect();
    assert_eq!(plan.params.init(9), init_params(&layout, 9));
    let mut lenet = Acts::<f64>::new(n, arch);
    lenet.x = random(n * IMG_LEN, 10);
    lenet.y = vec![1, 8];
    forward(&mut lenet, &p, &layout);
    let mut ours = NetActs::<f64>::new(n, &plan);
    ours.x = lenet.x.clone();
    ours.y = lenet.y.clone();
    net_forward(&mut ours, &p, &mut [], &plan, Mode::Train);
    let mut dl = vec![0.0; n * CLASSES];
    cross_entropy(&mut dl, &lenet.logits.clone(), &lenet.y, n);
    (lenet.dlogits, ours.dlogits) = (dl.clone(), dl);
    let (mut g1, mut g2) = (vec![0.0; layout.total], vec![f64::NAN; plan.params.total]);
    backward(&mut g1, &mut lenet, &p, &layout);
    net_backward(&mut g2, &mut ours, &p, &[], &plan, Mode::Train);
    // The same sums in other orders, in f64: a few hundred terms of O(1) are within 1e-12.
    let (dz, dg) = (max_diff(ours.logits(&plan), &lenet.logits), max_diff(&g1, &g2));
    println!("LeNet's text vs LeNet's reference: logits {dz:.2e}, gradients {dg:.2e}, tolerance 1e-12");
    assert!(dz < 1e-12 && dg < 1e-12);
}

#[test]
fn the_forward_is_the_same_twice_and_eval_mode_ignores_the_batch() {
    let plan = Plan::new(&parse("conv(4,3,stride=2) bn relu dropout(0.5) flatten linear(10)").unwrap()).unwrap();
    let p: Vec<f64> = plan.params.init(1).iter().map(|&v| v as f64).collect();
    let mut buffers: Vec<f64> = plan.params.init_buffers().iter().map(|&v| v as f64).collect();
    let mut a = NetActs::<f64>::new(4, &plan);
    a.x = random(4 * IMG_LEN, 2);
    net_forward(&mut a, &p, &mut buffers, &plan, Mode::Train);
    let first = a.logits(&plan).to_vec();
    // One training forward moved the running statistics from (0, 1).
    let rm = plan.slots[1].running_mean.clone().unwrap();
    assert!(buffers[rm].iter().all(|&m| m != 0.0));
    net_forward(&mut a, &p, &mut buffers.clone(), &plan, Mode::Train);
    assert_eq!(a.logits(&plan), &first[..]);
    // In evaluation an image's logits do not depend on the rest of its batch.
    net_forward(&mut a, &p, &mut buffers.clone(), &plan, Mode::Eval);
    let batch = a.logits(&plan)[..CLASSES].to_vec();
    let mut one = NetActs::<f64>::new(1, &plan);
    one.x = a.x[..IMG_LEN].to_vec();
    net_forward(&mut one, &p, &mut buffers, &plan, Mode::Eval);
    assert_eq!(one.logits(&plan), &batch[..]);
    assert!(matches!(plan.steps[3].layer, Layer::Dropout(_)));
}

#[test]
fn a_residual_block_adds_its_input_to_its_body() {
    // Outer block: x + (relu(x) + inner), inner block: relu(x) + 2 relu(x) = 3 relu(x); so the
    // outer block gives x + 3 relu(x) (its body ends with the inner block, not the scale in it).
    let plan = Plan::new(&parse("res(relu res(scale(2))) flatten linear(10)").unwrap()).unwrap();
    let mut a = NetActs::<f64>::new(1, &plan);
    a.x = random(IMG_LEN, 12);
    let p: Vec<f64> = plan.params.init(1).iter().map(|&v| v as f64).collect();
    net_forward(&mut a, &p, &mut [], &plan, Mode::Eval);
    let want: Vec<f64> = a.x.iter().map(|&x| x + 3.0 * x.max(0.0)).collect();
    assert_eq!(plan.steps[0].place.position, "1");
    assert_eq!(a.out[0], want);
}

#[test]
fn label_smoothing_is_pytorchs() {
    // logits z, label y, s = 0.2: loss = lse(z) - 0.8 z_y - 0.02 sum z; its gradient is
    // checked against central differences of that loss.
    let z = [0.5f64, -1.0, 2.0, 0.0, 0.25, -0.5, 1.5, -2.0, 0.75, 1.0];
    let (y, s) = (2u32, 0.2f32);
    let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
    // (s is an f32 setting: 0.2 rounded to f32, then widened)
    let sf = s as f64;
    let want = lse - (1.0 - sf) * z[2] - sf / 10.0 * z.iter().sum::<f64>();
    let mut d = [0.0f64; 10];
    let (loss, correct) = super::cross_entropy_smoothed_part(&mut d, &z, &[y], 1, 1, s);
    assert!((loss - want).abs() < 1e-14 && correct == 1, "{loss} vs {want}");
    for j in 0..10 {
        let mut zz = z;
        let h = 1e-6;
        zz[j] += h;
        let up = super::cross_entropy_smoothed_part(&mut [0.0; 10], &zz, &[y], 1, 1, s).0;
        zz[j] -= 2.0 * h;
        let down = super::cross_entropy_smoothed_part(&mut [0.0; 10], &zz, &[y], 1, 1, s).0;
        assert!(((up - down) / (2.0 * h) - d[j]).abs() < 1e-8, "dlogits[{j}]");
    }
    // s = 0 is the plain loss bit for bit.
    let (mut a, mut b) = ([0.0f32; 10], [0.0f32; 10]);
    let zf: Vec<f32> = z.iter().map(|&v| v as f32).collect();
    assert_eq!(super::cross_entropy_part(&mut a, &zf, &[y], 1, 4), super::cross_entropy_smoothed_part(&mut b, &zf, &[y], 1, 4, 0.0));
    assert_eq!(a, b);
}
