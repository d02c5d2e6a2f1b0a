//! The reference forward and backward of any network (`net::Plan`): one loop over the layers
//! in the plan's order, each layer's reference forward (`conv`, `norm`, `pool`, `elementwise`,
//! the linear layer of `super`), and the backward as the same loop reversed, each layer's input
//! gradient added into its source's (a residual block's input feeds its body and its sum).
//! Every tensor is its own vector: the oracle of the engines, kept plain on purpose.

use super::conv::{conv_backward_input, conv_backward_weight, conv_forward, ConvDims};
use super::elementwise::*;
use super::norm::*;
use super::pool::*;
use super::{linear_backward_input, linear_backward_weight, Real};
use crate::model::{CLASSES, IMG_LEN};
use crate::net::plan::Plan;
use crate::net::{Layer, Pool, Shape};

/// PyTorch's `net.train()` (batch statistics, running ones moved, dropout on) or `net.eval()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// One batch of N through a network: every step's output and its gradient, and what the
/// backward needs kept (max pools' argmax, batch norms' batch statistics).
#[derive(Clone, Debug)]
pub struct NetActs<T> {
    pub n: usize,
    pub x: Vec<T>,   // [N,3,32,32]
    pub y: Vec<u32>, // [N]
    /// out[i]: step i's output [N, output_len(i)]; the logits are out[plan.output] [N,10].
    pub out: Vec<Vec<T>>,
    /// dout[i]: the loss's gradient with respect to out[i].
    pub dout: Vec<Vec<T>>,
    pub dlogits: Vec<T>, // [N,10]
    pub dx: Vec<T>,      // [N,3,32,32]: the image's gradient (saliency)
    /// A max pool's argmax [N, output_len] (in its input's plane); empty for other layers.
    pub arg: Vec<Vec<u32>>,
    /// A batch norm's batch mean and biased variance [C] from the last training forward.
    pub mean: Vec<Vec<T>>,
    pub var: Vec<Vec<T>>,
    /// The dropout masks' seed for this batch (each layer mixes in its step).
    pub dropout_seed: u32,
}

impl<T: Real> NetActs<T> {
    pub fn new(n: usize, plan: &Plan) -> NetActs<T> {
        let each = |f: &dyn Fn(usize) -> usize| (0..plan.steps.len()).map(|i| vec![T::ZERO; f(i)]).collect::<Vec<_>>();
        let norm = |i: usize| if matches!(plan.steps[i].layer, Layer::BatchNorm { .. }) { plan.steps[i].input.channels() } else { 0 };
        let max = |i: usize| matches!(plan.steps[i].layer, Layer::Pool { kind: Pool::Max, .. });
        NetActs {
            n,
            x: vec![T::ZERO; n * IMG_LEN],
            y: vec![0; n],
            out: each(&|i| n * plan.output_len(i)),
            dout: each(&|i| n * plan.output_len(i)),
            dlogits: vec![T::ZERO; n * CLASSES],
            dx: vec![T::ZERO; n * IMG_LEN],
            arg: (0..plan.steps.len()).map(|i| vec![0; if max(i) { n * plan.output_len(i) } else { 0 }]).collect(),
            mean: each(&norm),
            var: each(&norm),
            dropout_seed: 0,
        }
    }

    /// The logits [N,10] of the last forward.
    pub fn logits<'a>(&'a self, plan: &Plan) -> &'a [T] {
        &self.out[plan.output]
    }

    /// Step i's input [N, input_len(i)]: the image or its source's output.
    fn input(&self, plan: &Plan, i: usize) -> &[T] {
        plan.src[i].map_or(&self.x[..], |s| &self.out[s][..])
    }
}

/// (C, H, W) of maps, (F, 1, 1) of features: batch norm and the pools see a plane of H*W.
fn chw(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Maps { c, h, w } => (c, h, w),
        Shape::Flat(f) => (f, 1, 1),
    }
}

/// The seed of step i's dropout mask in a batch whose masks `seed` draws.
pub fn dropout_seed(seed: u32, i: usize) -> u32 {
    mix(seed ^ mix(0x9e37_79b9 ^ i as u32))
}

/// The whole forward of the batch in `a.x` with parameters `p` and buffers `buffers`
/// (`Params`' packing): fills every step's output up to the logits. In training the batch
/// norms' running statistics in `buffers` move as PyTorch's do.
pub fn net_forward<T: Real>(a: &mut NetActs<T>, p: &[T], buffers: &mut [T], plan: &Plan, mode: Mode) {
    for &i in &plan.order {
        let mut out = std::mem::take(&mut a.out[i]);
        layer_forward(&mut out, a, p, buffers, plan, mode, i);
        a.out[i] = out;
    }
}

/// Step i's forward into `out` [N, output_len(i)].
#[allow(clippy::too_many_arguments)]
fn layer_forward<T: Real>(out: &mut [T], a: &mut NetActs<T>, p: &[T], buffers: &mut [T], plan: &Plan, mode: Mode, i: usize) {
    let n = a.n;
    let step = &plan.steps[i];
    let s = &plan.slots[i];
    let t = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &p[r]);
    let (c, h, w) = chw(step.input);
    let inp = a.input(plan, i);
    match step.layer {
        Layer::Conv { out: oc, k, stride, pad, .. } => conv_forward(out, inp, t(&s.weight).unwrap(), t(&s.bias), ConvDims { n, c, h, w, oc, k, s: stride, p: pad }),
        Layer::Linear { out: of, .. } => {
            let zero = vec![T::ZERO; of];
            super::linear_forward(out, inp, t(&s.weight).unwrap(), t(&s.bias).unwrap_or(&zero), n, c, of, false);
        }
        Layer::BatchNorm { momentum, eps, .. } => {
            let (gamma, beta) = (t(&s.gamma).unwrap(), t(&s.beta).unwrap());
            let eps = T::from_f64(eps as f64);
            let (rm, rv) = (s.running_mean.clone().unwrap(), s.running_var.clone().unwrap());
            if mode == Mode::Train {
                let (mut mean, mut var) = (std::mem::take(&mut a.mean[i]), std::mem::take(&mut a.var[i]));
                batchnorm_forward(out, &mut mean, &mut var, a.input(plan, i), gamma, beta, n, c, h * w, eps);
                let (lo, hi) = buffers.split_at_mut(rv.start);
                batchnorm_running(&mut lo[rm], &mut hi[..rv.len()], &mean, &var, n, c, h * w, T::from_f64(momentum as f64));
                (a.mean[i], a.var[i]) = (mean, var);
            } else {
                batchnorm_forward_eval(out, inp, gamma, beta, &buffers[rm], &buffers[rv], n, c, h * w, eps);
            }
        }
        Layer::Act(f) => act_forward(out, inp, f),
        Layer::Pool { kind: Pool::Max, k, stride } => {
            let mut arg = std::mem::take(&mut a.arg[i]);
            maxpool2d_forward(out, &mut arg, a.input(plan, i), n, c, h, w, k, stride);
            a.arg[i] = arg;
        }
        Layer::Pool { kind: Pool::Avg, k, stride } => avgpool2d_forward(out, inp, n, c, h, w, k, stride),
        Layer::Gap => gap_forward(out, inp, n, c, h * w),
        Layer::Flatten => out.copy_from_slice(inp),
        Layer::Dropout(q) if mode == Mode::Train => dropout_forward(out, inp, q, dropout_seed(a.dropout_seed, i)),
        Layer::Dropout(_) => out.copy_from_slice(inp),
        Layer::Scale(f) => scale_forward(out, inp, f),
        Layer::Res(_) => residual_forward(out, inp, &a.out[plan.last[i]]),
    }
}

/// The whole backward from `a.dlogits` after `net_forward` in the same mode: every parameter's
/// gradient into `g` (packed as the parameters; padding 0), every step's output gradient into
/// `a.dout` and the image's into `a.dx`.
pub fn net_backward<T: Real>(g: &mut [T], a: &mut NetActs<T>, p: &[T], buffers: &[T], plan: &Plan, mode: Mode) {
    g.fill(T::ZERO);
    for d in &mut a.dout {
        d.fill(T::ZERO);
    }
    a.dx.fill(T::ZERO);
    a.dout[plan.output].copy_from_slice(&a.dlogits);
    for &i in plan.order.iter().rev() {
        let dout = std::mem::take(&mut a.dout[i]);
        if matches!(plan.steps[i].layer, Layer::Res(_)) {
            // The sum's gradient goes unchanged to the body's last layer and to the block's input.
            add(&mut a.dout[plan.last[i]], &dout);
        }
        let mut dinp = vec![T::ZERO; a.n * plan.input_len(i)];
        layer_backward(&mut dinp, g, &dout, a, p, buffers, plan, mode, i);
        match plan.src[i] {
            Some(s) => add(&mut a.dout[s], &dinp),
            None => add(&mut a.dx, &dinp),
        }
        a.dout[i] = dout;
    }
}

fn add<T: Real>(into: &mut [T], d: &[T]) {
    for (v, &x) in into.iter_mut().zip(d) {
        *v += x;
    }
}

/// Step i's backward: its input's gradient into `dinp` [N, input_len(i)] from its output's
/// `dout`, its parameters' gradients into `g`.
#[allow(clippy::too_many_arguments)]
fn layer_backward<T: Real>(dinp: &mut [T], g: &mut [T], dout: &[T], a: &NetActs<T>, p: &[T], buffers: &[T], plan: &Plan, mode: Mode, i: usize) {
    let n = a.n;
    let step = &plan.steps[i];
    let s = &plan.slots[i];
    let (c, h, w) = chw(step.input);
    let inp = a.input(plan, i);
    let range = |r: &Option<std::ops::Range<usize>>| r.clone().expect("the plan gives this layer's tensors");
    match step.layer {
        Layer::Conv { out: oc, k, stride, pad, .. } => {
            let d = ConvDims { n, c, h, w, oc, k, s: stride, p: pad };
            let wr = range(&s.weight);
            conv_backward_input(dinp, dout, &p[wr.clone()], d);
            let (gw, gb) = split(g, wr, s.bias.clone());
            conv_backward_weight(gw, gb, dout, inp, d);
        }
        Layer::Linear { out: of, .. } => {
            let wr = range(&s.weight);
            linear_backward_input(dinp, dout, &p[wr.clone()], inp, n, c, of, false);
            let mut scratch = vec![T::ZERO; of];
            let (gw, gb) = split(g, wr, s.bias.clone());
            linear_backward_weight(gw, gb.unwrap_or(&mut scratch), dout, inp, n, c, of);
        }
        Layer::BatchNorm { eps, .. } => {
            let (gr, br) = (range(&s.gamma), range(&s.beta));
            let gamma = &p[gr.clone()];
            let eps = T::from_f64(eps as f64);
            let (dgamma, dbeta) = split(g, gr, Some(br));
            let dbeta = dbeta.unwrap();
            if mode == Mode::Train {
                batchnorm_backward(dinp, dgamma, dbeta, dout, inp, &a.mean[i], &a.var[i], gamma, n, c, h * w, eps);
            } else {
                let (rm, rv) = (range(&s.running_mean), range(&s.running_var));
                batchnorm_backward_eval(dinp, dgamma, dbeta, dout, inp, gamma, &buffers[rm], &buffers[rv], n, c, h * w, eps);
            }
        }
        Layer::Act(f) => act_backward(dinp, dout, inp, f),
        Layer::Pool { kind: Pool::Max, k, stride } => maxpool2d_backward(dinp, dout, &a.arg[i], n, c, h, w, k, stride),
        Layer::Pool { kind: Pool::Avg, k, stride } => avgpool2d_backward(dinp, dout, n, c, h, w, k, stride),
        Layer::Gap => gap_backward(dinp, dout, n, c, h * w),
        Layer::Dropout(q) if mode == Mode::Train => dropout_backward(dinp, dout, q, dropout_seed(a.dropout_seed, i)),
        Layer::Scale(f) => scale_forward(dinp, dout, f),
        Layer::Flatten | Layer::Dropout(_) | Layer::Res(_) => dinp.copy_from_slice(dout),
    }
}

/// Mutable views of a layer's two gradient tensors in the packed vector (`first` before
/// `second`, as Params packs a layer's tensors).
fn split<T>(g: &mut [T], first: std::ops::Range<usize>, second: Option<std::ops::Range<usize>>) -> (&mut [T], Option<&mut [T]>) {
    match second {
        None => (&mut g[first], None),
        Some(second) => {
            assert!(first.end <= second.start, "a layer's tensors are packed in order");
            let (lo, hi) = g.split_at_mut(second.start);
            (&mut lo[first], Some(&mut hi[..second.len()]))
        }
    }
}
