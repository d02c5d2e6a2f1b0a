//! The CPU engine's layers for any network (cpu/layers/conv.rs, cpu/layers/norm.rs,
//! cpu/net_lanes.rs) against the plain-loop reference (cpu/reference): the fast convolution of
//! every kernel, stride and padding on odd shapes with its outputs poisoned first, then whole
//! forward and backward passes of networks with batch norm, residual blocks, every activation,
//! both pools and dropout, split into 1, 2 and 3 lanes (the batch norm's statistics span the
//! lanes). Every check prints its tolerance and max relative error.

use tabcnn::cpu::engine::Threads;
use tabcnn::cpu::layers::conv as fast;
use tabcnn::cpu::net_lanes::NetLanes;
use tabcnn::cpu::reference::conv::{self as slow, ConvDims};
use tabcnn::cpu::reference::cross_entropy;
use tabcnn::cpu::reference::net::{net_backward, net_forward, Mode, NetActs};
use tabcnn::model::{Rng, CLASSES, IMG_LEN};
use tabcnn::net::plan::Plan;
use tabcnn::net::text::parse;

mod common;
use common::{compare, nan, randn, TOL};

#[test]
fn convolutions_of_every_kernel_stride_and_padding_match_the_reference() {
    let mut rng = Rng::new(21);
    // n, c, h, w, oc: odd sizes, a non-square image, one image and one channel.
    for (n, c, h, w, oc) in [(2, 3, 9, 7, 5), (1, 1, 6, 6, 1), (3, 4, 11, 13, 6)] {
        for k in [1, 2, 3, 5] {
            for s in [1, 2, 3] {
                for p in [0, 1, 2] {
                    if p >= k || h + 2 * p < k || w + 2 * p < k {
                        continue;
                    }
                    let d = ConvDims { n, c, h, w, oc, k, s, p };
                    let (oh, ow) = (d.oh(), d.ow());
                    let (inp, weight, bias, dout) =
                        (randn(&mut rng, n * c * h * w, 1.0), randn(&mut rng, oc * c * k * k, 0.5), randn(&mut rng, oc, 0.5), randn(&mut rng, n * oc * oh * ow, 1.0));
                    let name = format!("conv n{n} c{c} {h}x{w} oc{oc} k{k} s{s} p{p}");
                    let cols = || nan(c * k * k * oh * ow);
                    let (mut want, mut got) = (vec![0.0; n * oc * oh * ow], nan(n * oc * oh * ow));
                    slow::conv_forward(&mut want, &inp, &weight, Some(&bias), d);
                    fast::conv_forward(&mut got, &mut cols(), &inp, &weight, Some(&bias), d);
                    compare(&format!("{name} out"), &got, &want, TOL);
                    let (mut want, mut got) = (vec![0.0; inp.len()], nan(inp.len()));
                    slow::conv_backward_input(&mut want, &dout, &weight, d);
                    fast::conv_backward_input(&mut got, &mut cols(), &dout, &weight, d);
                    compare(&format!("{name} dinp"), &got, &want, TOL);
                    let (mut want_w, mut want_b, mut got_w, mut got_b) = (vec![0.0; weight.len()], vec![0.0; oc], nan(weight.len()), nan(oc));
                    slow::conv_backward_weight(&mut want_w, Some(&mut want_b), &dout, &inp, d);
                    fast::conv_backward_weight(&mut got_w, Some(&mut got_b), &mut cols(), &dout, &inp, d);
                    compare(&format!("{name} dweight"), &got_w, &want_w, TOL);
                    compare(&format!("{name} dbias"), &got_b, &want_b, TOL);
                }
            }
        }
    }
}

/// Networks with every layer type: batch norm on maps and on features (with and without its
/// scale), residual blocks (nested), GELU, tanh, sigmoid, both pools (overlapping), the global
/// pool, dropout, scale, convolutions of stride 2 and padding, bias-free layers. A layer before
/// a batch norm has no bias here: the norm takes the mean out, so that bias's gradient is 0 and
/// f32's rounding noise in it has no scale to be measured against.
const NETS: [&str; 4] = [
    "conv(6,3,pad=1,bias=0) bn relu maxpool(2) conv(8,3,stride=2,pad=1,bias=0) bn(scale=0) gelu flatten linear(12,bias=0) bn tanh linear(10)",
    "conv(5,5,stride=2,pad=2) relu res(conv(5,3,pad=1,bias=0) bn relu res(conv(5,1,bias=0) bn sigmoid)) avgpool(3,stride=2) gap flatten dropout(0.25) linear(10,bias=0) scale(0.5)",
    "conv(4,2) gelu avgpool(3) conv(7,3,pad=1,bias=0) bn(momentum=0.5,eps=0.01) relu maxpool(3,stride=2) flatten linear(10)",
    "lenet",
];

/// The reference's training forward and backward of `text` on batch `n`, against the lanes'
/// split `parts` ways: logits, the loss, every parameter's gradient, the running statistics.
fn check_net(text: &str, n: usize, parts: usize) {
    let plan = Plan::new(&parse(text).unwrap()).unwrap();
    let p = plan.params.init(3);
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, n * IMG_LEN, 1.0);
    let y: Vec<u32> = (0..n as u32).map(|b| (b * 3 + 1) % CLASSES as u32).collect();
    let seed = 77;
    // The reference in f64: the exact values the f32 lanes round towards.
    let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let mut want = NetActs::<f64>::new(n, &plan);
    (want.x, want.y, want.dropout_seed) = (wide(&x), y.clone(), seed);
    let mut want_buffers = wide(&plan.params.init_buffers());
    let p64 = wide(&p);
    net_forward(&mut want, &p64, &mut want_buffers, &plan, Mode::Train);
    let logits = want.logits(&plan).to_vec();
    let (want_loss, want_correct) = cross_entropy(&mut want.dlogits, &logits, &want.y, n);
    let mut want_g = vec![0.0; plan.params.total];
    net_backward(&mut want_g, &mut want, &p64, &want_buffers, &plan, Mode::Train);
    let (logits, want_g, want_buffers, want_loss) = (narrow(&logits), narrow(&want_g), narrow(&want_buffers), want_loss as f32);

    let mut lanes = NetLanes::new(plan.clone(), n, parts, true);
    lanes.poison();
    for l in &mut lanes.lanes {
        l.x.copy_from_slice(&x[l.lo * IMG_LEN..][..l.n * IMG_LEN]);
        l.y.copy_from_slice(&y[l.lo..][..l.n]);
    }
    let threads = Threads::new(parts.min(3));
    let mut buffers = plan.params.init_buffers();
    lanes.forward(&threads, &p, &mut buffers, Mode::Train, seed);
    let got_logits: Vec<f32> = lanes.lanes.iter().flat_map(|l| l.logits(&plan).to_vec()).collect();
    let (loss, correct) = lanes.loss(0.0);
    lanes.backward(&threads, &p, seed);
    let name = format!("{text} (batch {n}, {parts} lanes)");
    // Each layer holds to TOL on its own (the layer tests); to first order the relative errors
    // of the layers a value passes through add up, so a whole network of L layers holds to
    // L * TOL (batch norm's backward subtracts the batch's mean and projection: its cancellation
    // is why the sum is needed, not TOL alone).
    let tol = plan.steps.len() as f64 * TOL;
    compare(&format!("{name}: logits"), &got_logits, &logits, tol);
    compare(&format!("{name}: loss"), &[loss], &[want_loss], tol);
    assert_eq!(correct, want_correct, "{name}: correct predictions");
    // Tensor by tensor: a layer's gradients are measured against their own scale.
    for t in &plan.params.params {
        compare(&format!("{name}: gradient of {}", t.name), &lanes.grads[t.range()], &want_g[t.range()], tol);
    }
    compare(&format!("{name}: running statistics"), &buffers, &want_buffers, tol);
}

#[test]
fn whole_networks_on_lanes_match_the_reference() {
    for text in NETS {
        for parts in [1, 2, 3] {
            check_net(text, 12, parts);
        }
    }
}

#[test]
fn evaluation_on_lanes_uses_the_running_statistics() {
    let plan = Plan::new(&parse(NETS[0]).unwrap()).unwrap();
    let p = plan.params.init(8);
    let mut rng = Rng::new(9);
    let buffers: Vec<f32> = plan.params.init_buffers().iter().map(|b| b + rng.uniform(0.0, 0.5)).collect();
    let x = randn(&mut rng, 4 * IMG_LEN, 1.0);
    let mut want = NetActs::<f32>::new(4, &plan);
    want.x = x.clone();
    net_forward(&mut want, &p, &mut buffers.clone(), &plan, Mode::Eval);
    // (Evaluation's batch norm is an affine map per channel: f32 against f32 is well
    // conditioned.)
    let mut lanes = NetLanes::new(plan.clone(), 4, 3, false);
    lanes.poison();
    for l in &mut lanes.lanes {
        l.x.copy_from_slice(&x[l.lo * IMG_LEN..][..l.n * IMG_LEN]);
    }
    let mut got_buffers = buffers.clone();
    lanes.forward(&Threads::new(2), &p, &mut got_buffers, Mode::Eval, 0);
    let got: Vec<f32> = lanes.lanes.iter().flat_map(|l| l.logits(&plan).to_vec()).collect();
    compare("evaluation logits (batch 4, 3 lanes)", &got, want.logits(&plan), TOL);
    assert_eq!(got_buffers, buffers, "evaluation leaves the running statistics");
}

fn sample() -> tabcnn::data::Cifar {
    tabcnn::data::load_path(&tabcnn::data::sample_dir()).expect("the bundled sample loads")
}

/// A residual network with batch norm (maps and features), dropout and a bias-free layer.
const RESIDUAL: &str = "conv(8,3,pad=1,bias=0) bn relu maxpool(2) res(conv(8,3,pad=1,bias=0) bn gelu) avgpool(2) flatten linear(12,bias=0) bn dropout(0.2) linear(10)";

/// The engine's SGD steps against the reference's own step in f64 (forward in training mode,
/// the mean cross-entropy, backward, PyTorch's SGD on the trained tensors) from the same
/// weights, over a few steps: the weights, momentum and running statistics after each.
#[test]
fn training_steps_match_the_reference_step() {
    steps_against_the_reference(false, 0.0, [1.0; 3]);
    // Nesterov momentum, p -= lr (g' + mu v), label smoothing 0.2, and parameter groups: the
    // biases at 4x the learning rate and 1/4 the weight decay, batch norm's at 2x and 1/2.
    steps_against_the_reference(true, 0.2, [1.0, 4.0, 2.0]);
    // AdamW: decoupled weight decay, the Adam step with its bias correction.
    steps_against_the_reference_with(false, 0.0, [1.0, 2.0, 1.0], true);
}

fn steps_against_the_reference(nesterov: bool, smoothing: f32, lr_groups: [f32; 3]) {
    steps_against_the_reference_with(nesterov, smoothing, lr_groups, false)
}

fn steps_against_the_reference_with(nesterov: bool, smoothing: f32, lr_groups: [f32; 3], adamw: bool) {
    let optimizer = if adamw { tabcnn::recipe::Optimizer::AdamW } else { tabcnn::recipe::Optimizer::Sgd };
    use tabcnn::cpu::net_engine::NetEngine;
    use tabcnn::cpu::reference::{cross_entropy_smoothed_part, gather};
    let d = sample();
    let plan = Plan::new(&parse(RESIDUAL).unwrap()).unwrap();
    let hyper =
        tabcnn::recipe::Hyper { batch: 6, lr: 0.05, momentum: 0.9, weight_decay: 5e-4, seed: 2, nesterov, label_smoothing: smoothing, lr_groups, optimizer, ..Default::default() };
    let (p0, b0) = (plan.params.init(2), plan.params.init_buffers());
    let mut engine = NetEngine::new(plan.clone(), &p0, &b0, &hyper, &d.train, &d.test, 2).unwrap();
    let order: Vec<u32> = (0..d.train.len() as u32).rev().collect();
    engine.begin_epoch(&order, 0);
    // With the groups, a warm-up schedule over the 3 steps: the learning rate times 0.2, 1, 0.55.
    let schedule = if nesterov { tabcnn::recipe::Schedule::Warmup { warm: 0.5, start: 0.2, end: 0.1 } } else { tabcnn::recipe::Schedule::Constant };
    engine.set_step_schedule(schedule, 3);
    let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (mut p, mut m, mut b) = (wide(&p0), vec![0.0f64; p0.len()], wide(&b0));
    let mut v = vec![0.0f64; p0.len()];
    let trained: Vec<(std::ops::Range<usize>, f64)> = plan.params.params.iter().filter(|t| t.trained).map(|t| (t.range(), lr_groups[t.role.group()] as f64)).collect();
    let tol = plan.steps.len() as f64 * TOL;
    let mut a = NetActs::<f64>::new(6, &plan);
    // (Adam's step is the gradient over its own size: each weight moves by about the learning
    // rate whatever its gradient, so f32's last bits in a small gradient become a share of the
    // learning rate in the weight, and the next step's gradients carry it: one step.)
    for step in 0..if adamw { 1 } else { 3 } {
        engine.train_steps(1);
        let (mut x, mut y) = (vec![0.0f32; 6 * IMG_LEN], vec![0u32; 6]);
        gather(&mut x, &mut y, &d.train.images, &d.train.labels, &order, step * 6, 6);
        (a.x, a.y) = (wide(&x), y);
        // The engine's dropout masks are its own draw: the reference takes the same seed.
        a.dropout_seed = engine.dropout_seed_of(step as u64);
        net_forward(&mut a, &p, &mut b, &plan, Mode::Train);
        let logits = a.logits(&plan).to_vec();
        cross_entropy_smoothed_part(&mut a.dlogits, &logits, &a.y, 6, 6, smoothing);
        let mut g = vec![0.0; p.len()];
        net_backward(&mut g, &mut a, &p, &b, &plan, Mode::Train);
        let lr = 0.05 * schedule.step_factor(step as u64, 3) as f64;
        for (r, mult) in &trained {
            for k in r.clone() {
                if adamw {
                    // PyTorch's AdamW: p -= lr wd p, then the bias-corrected Adam step.
                    let t = step as i32 + 1;
                    p[k] -= lr * mult * (5e-4 / mult) * p[k];
                    m[k] = 0.9 * m[k] + 0.1 * g[k];
                    v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k];
                    p[k] -= lr * mult * (m[k] / (1.0 - 0.9f64.powi(t))) / ((v[k] / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
                    continue;
                }
                let gk = g[k] + 5e-4 / mult * p[k];
                m[k] = 0.9 * m[k] + gk;
                p[k] -= lr * mult * if nesterov { gk + 0.9 * m[k] } else { m[k] };
            }
        }
        let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let got = engine.read_params();
        for t in &plan.params.params {
            compare(&format!("(nesterov {nesterov}, smoothing {smoothing}) step {}: {}", step + 1, t.name), &got[t.range()], &narrow(&p[t.range()]), tol);
        }
        compare(&format!("step {}: momentum", step + 1), &engine.read_momentum(), &narrow(&m), tol);
        compare(&format!("step {}: running statistics", step + 1), &engine.read_buffers(), &narrow(&b), tol);
    }
}

/// One seed, one thread count: the same weights bit for bit, twice.
#[test]
fn the_same_seed_gives_the_same_weights_twice() {
    use tabcnn::cpu::net_engine::NetEngine;
    let d = sample();
    let plan = Plan::new(&parse(RESIDUAL).unwrap()).unwrap();
    let hyper = tabcnn::recipe::Hyper { batch: 10, lr: 0.05, seed: 5, ..Default::default() };
    let run = || {
        let mut e = NetEngine::new(plan.clone(), &plan.params.init(5), &plan.params.init_buffers(), &hyper, &d.train, &d.test, 2).unwrap();
        e.train_steps(6);
        (e.read_params(), e.read_buffers())
    };
    let (a, b) = (run(), run());
    assert!(a == b, "two runs of one seed differ");
    assert_ne!(a.0, plan.params.init(5), "the weights moved");
}

/// A small residual network with batch norm learns on the sample, and an engine past its
/// memory is refused with the batch that fits.
#[test]
fn a_residual_network_with_batch_norm_learns() {
    let d = sample();
    let text = "conv(16,3,pad=1,bias=0) bn relu maxpool(2) res(conv(16,3,pad=1,bias=0) bn relu) maxpool(2) conv(32,3,pad=1,bias=0) bn relu gap flatten linear(10)";
    let hyper = tabcnn::recipe::Hyper { batch: 32, lr: 0.05, epochs: 4, layers: Some(text.into()), ..Default::default() };
    let plan = Plan::new(&parse(text).unwrap()).unwrap();
    let e = tabcnn::cpu::net_engine::NetEngine::new(plan.clone(), &plan.params.init(0), &plan.params.init_buffers(), &hyper, &d.train, &d.test, 2).unwrap();
    let mut engine = tabcnn::train::Engine::Net(e);
    let report = pollster::block_on(tabcnn::train::train_until(&mut engine, &hyper, 50, |_| {}, || false)).unwrap();
    let r = pollster::block_on(engine.evaluate()).unwrap();
    println!("{} steps, losses {:?}", report.steps, report.losses);
    common::assert_learned(text, r.accuracy(), &d.test.labels);
    let wide = Plan::new(&parse("conv(512,3,pad=1) relu conv(512,3,pad=1) flatten linear(10)").unwrap()).unwrap();
    let big = tabcnn::recipe::Hyper { batch: 256, ..Default::default() };
    let e = tabcnn::cpu::net_engine::NetEngine::new(wide.clone(), &vec![0.0; wide.params.total], &[], &big, &d.train, &d.test, 2).err().expect("refused");
    println!("{e}");
    assert!(e.to_string().contains("more than the 1536 MiB it may use: batch ") && e.to_string().contains(" fits"), "{e}");
}

/// A run whose values overflow stops at the step it happened, though a ReLU and the pools
/// would hide the NaN from the loss: the gradient and the running statistics are checked.
#[test]
fn a_run_that_overflows_is_caught_at_its_step() {
    let d = sample();
    let text = "conv(8,3) scale(1e30) scale(1e30) bn relu gap flatten linear(10)";
    let hyper = tabcnn::recipe::Hyper { batch: 8, lr: 0.01, epochs: 1, layers: Some(text.into()), ..Default::default() };
    let plan = Plan::new(&parse(text).unwrap()).unwrap();
    let e = tabcnn::cpu::net_engine::NetEngine::new(plan.clone(), &plan.params.init(0), &plan.params.init_buffers(), &hyper, &d.train, &d.test, 2).unwrap();
    let mut engine = tabcnn::train::Engine::Net(e);
    let r = pollster::block_on(tabcnn::train::train_until(&mut engine, &hyper, 5, |_| {}, || false));
    println!("{r:?}");
    assert!(matches!(r, Err(tabcnn::train::TrainError::Diverged { step: 0, .. })), "{r:?}");
}
