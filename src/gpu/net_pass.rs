//! A pass of any network (`net::Plan`) over a batch of N on the GPU: where every step's
//! output and gradient lie in `acts`, the labels, argmaxes and step counter in `ints`, batch
//! norm's statistics and the reductions' partials in `scratch`; and the dispatches, made by
//! the same loop over the layers as `cpu::reference::net` runs (the backward the loop
//! reversed, each layer's input gradient written into its source's, or added where the source
//! has one already). The logits' gradient is the output step's gradient: no copy.

use super::kernels::*;
use super::net_kernels::*;
use super::pass::{DataBufs, Dispatch};
use super::{EngineError, Gpu};
use crate::cpu::reference::conv::ConvDims;
use crate::cpu::reference::elementwise::mix;
use crate::model::{align_up, CLASSES, IMG_LEN};
use crate::net::plan::Plan;
use crate::net::{Layer, Pool, Shape};

/// A batch norm's statistics in scratch: the batch's mean and variance, the gradient totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NormSlots {
    pub mean: u32,
    pub var: u32,
    pub dgamma: u32,
    pub dbeta: u32,
}

/// Offsets (in floats or words, 64-aligned) of a pass of N.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetLayout {
    pub n: usize,
    pub x: u32,        // acts: [N,3,32,32]
    pub out: Vec<u32>, // acts: step i's output [N, output_len(i)]
    /// acts: step i's gradient (training); the output step's is the logits' gradient.
    pub dout: Vec<u32>,
    pub dlogits: u32, // acts: [N,10]
    pub acts_len: usize,
    pub y: u32,        // ints: [N]
    pub arg: Vec<u32>, // ints: a max pool's argmax [N, output_len]
    pub step_word: u32,
    pub ints_len: usize,
    pub norm: Vec<NormSlots>, // scratch, per batch-norm step
    pub partial: u32,         // scratch: the reductions' partials
    pub scratch_len: usize,
}

fn chw(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Maps { c, h, w } => (c, h, w),
        Shape::Flat(f) => (f, 1, 1),
    }
}

/// A convolution's or linear layer's sizes (a linear layer is a 1x1 convolution of a 1x1 map).
fn dims(plan: &Plan, i: usize, n: usize) -> Option<ConvDims> {
    let (c, h, w) = chw(plan.steps[i].input);
    match plan.steps[i].layer {
        Layer::Conv { out, k, stride, pad, .. } => Some(ConvDims { n, c, h, w, oc: out, k, s: stride, p: pad }),
        Layer::Linear { out, .. } => Some(ConvDims { n, c: c * h * w, h: 1, w: 1, oc: out, k: 1, s: 1, p: 0 }),
        _ => None,
    }
}

impl NetLayout {
    /// The layout of a batch of `n` (gradients and batch-norm slots when `train`).
    pub fn new(plan: &Plan, n: usize, train: bool) -> NetLayout {
        let steps = plan.steps.len();
        let mut at = 0usize;
        let mut take = |len: usize| {
            let o = at;
            at = align_up(at + len);
            o as u32
        };
        let mut l = NetLayout { n, x: take(n * IMG_LEN), ..Default::default() };
        l.out = (0..steps).map(|i| take(n * plan.output_len(i))).collect();
        l.dlogits = take(n * CLASSES);
        if train {
            l.dout = (0..steps).map(|i| if i == plan.output { l.dlogits } else { take(n * plan.output_len(i)) }).collect();
        }
        l.acts_len = at;
        let mut at = 0usize;
        let mut take = |len: usize| {
            let o = at;
            at = align_up(at + len);
            o as u32
        };
        l.y = take(n);
        l.step_word = take(1);
        l.arg = (0..steps).map(|i| if matches!(plan.steps[i].layer, Layer::Pool { kind: Pool::Max, .. }) { take(n * plan.output_len(i)) } else { 0 }).collect();
        l.ints_len = at;
        let mut at = 0usize;
        let mut take = |len: usize| {
            let o = at;
            at = align_up(at + len);
            o as u32
        };
        let mut partial = 0;
        for i in 0..steps {
            if let Layer::BatchNorm { .. } = plan.steps[i].layer {
                let (c, h, w) = chw(plan.steps[i].input);
                l.norm.push(NormSlots { mean: take(c), var: take(c), dgamma: take(c), dbeta: take(c) });
                partial = partial.max(3 * c * norm_chunks(n * h * w) as usize);
            } else {
                l.norm.push(NormSlots::default());
            }
            if let (Some(d), true) = (dims(plan, i, n), train) {
                partial = partial.max(weight_partial_len(d));
            }
        }
        l.partial = take(partial);
        l.scratch_len = at;
        l
    }

    /// Bytes of the largest buffer of the pass (each must fit one binding).
    pub fn largest_bytes(&self) -> u64 {
        4 * self.acts_len.max(self.ints_len).max(self.scratch_len) as u64
    }
}

/// The widest grid dimension any dispatch of a pass of `n` asks for: the weight gradient's
/// column tiles (the other grids fold into y or z).
fn widest_grid(plan: &Plan, n: usize) -> u64 {
    (0..plan.steps.len()).filter_map(|i| dims(plan, i, n)).map(|d| ((d.c * d.k * d.k + 1) as u64).div_ceil(GEMM_TN as u64)).max().unwrap_or(0)
}

/// The buffers a pass shares with the engine.
pub struct NetShared<'a> {
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub buffers: &'a wgpu::Buffer,
    pub metrics: &'a wgpu::Buffer,
    pub preds: &'a wgpu::Buffer,
    /// The dropout masks' run seed (the CPU engine's).
    pub seed: u32,
    /// Label smoothing of the loss.
    pub smoothing: f32,
}

/// A pass's buffers and dispatches.
pub struct NetPass {
    pub layout: NetLayout,
    pub acts: wgpu::Buffer,
    pub ints: wgpu::Buffer,
    _scratch: wgpu::Buffer,
    _uniforms: Vec<wgpu::Buffer>,
    /// The gather's uniform and contents (augmentation changes them each epoch).
    pub gather: (wgpu::Buffer, GatherParams),
    pub forward: Vec<Dispatch>,
    /// The loss (training) or the accumulation of predictions (evaluation).
    pub head: Dispatch,
    pub backward: Vec<Dispatch>,
}

/// The pass of `plan` over a batch of `n` of `data`: training (gather, forward with the
/// batch's statistics and dropout, loss, backward) or evaluation (gather, forward as
/// `net.eval()`, predictions). Refused with the largest batch that fits when a buffer would
/// pass the device's binding limit.
pub fn build_net_pass(gpu: &Gpu, name: &str, plan: &Plan, n: usize, train: bool, data: &DataBufs, sh: &NetShared) -> Result<NetPass, EngineError> {
    let l = NetLayout::new(plan, n, train);
    let limits = gpu.device.limits();
    let max_bind = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let max_groups = limits.max_compute_workgroups_per_dimension as u64;
    let fits = |n: usize| NetLayout::new(plan, n, train).largest_bytes() <= max_bind && widest_grid(plan, n) <= max_groups;
    if !fits(n) {
        // The buffers grow with the batch, the partials' chunks too: the largest batch that
        // fits is searched, not extrapolated.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        let why = if l.largest_bytes() > max_bind {
            format!("a {} MiB buffer on the GPU, more than the {} MiB one binding may hold here", l.largest_bytes() >> 20, max_bind >> 20)
        } else {
            format!("a grid of {} workgroups, more than the {max_groups} a dimension may have here", widest_grid(plan, n))
        };
        let advice = if lo == 0 { "no batch fits: the network is too large for this GPU".to_string() } else { format!("batch {lo} fits") };
        return Err(EngineError::limits(format!("batch {n} of this network needs {why}: {advice}")));
    }
    let acts = gpu.storage(&format!("{name} acts (batch {n}: every layer's output and gradient)"), (l.acts_len * 4) as u64);
    let ints = gpu.storage(&format!("{name} ints (labels, argmax, step; batch {n})"), (l.ints_len * 4) as u64);
    let scratch = gpu.storage(&format!("{name} scratch (batch norm statistics, partial sums)"), (l.scratch_len * 4) as u64);
    let mut b = NetBuilder::new(gpu, NetBufs { acts: &acts, ints: &ints, params: sh.params, grads: sh.grads, scratch: &scratch, buffers: sh.buffers });
    let u = |v: usize| v as u32;
    let g = GatherParams { n: u(n), mode: if train { 0 } else { 1 }, count: u(data.count), chunk_records: u(data.chunk_records), x: l.x, y: l.y, aug: 0, key: 0 };
    let img1 = data.images.get(1).unwrap_or(&data.images[0]);
    let gather = b.dispatch_with(
        &format!("{name} batch"),
        KernelId::Gather,
        &g,
        &[&data.images[0], img1, &data.labels, &data.index, sh.metrics, &acts, &ints],
        Launch::flat_work(n * IMG_LEN / 4, 0, (n * IMG_LEN * 5) as u64),
    );
    let gather_uniform = (b.uniforms.last().expect("the gather's uniform").clone(), g);
    let mut forward = vec![gather];
    for &i in &plan.order {
        forward.extend(layer_forward(&mut b, name, plan, &l, sh, train, i));
    }
    let logits = l.out[plan.output];
    let ce = CeParams { n: u(n), count: u(data.count), logits, dlogits: l.dlogits, y: l.y, smoothing: sh.smoothing, _pad: [0; 2] };
    let head_kernel = if train { KernelId::CrossEntropy } else { KernelId::EvalAccumulate };
    let head = b.dispatch_with(
        &format!("{name} logits"),
        head_kernel,
        &ce,
        &[&acts, &ints, sh.metrics, sh.preds],
        Launch::flat_work(WG as usize, (n * CLASSES) as u64, (n * CLASSES * 8) as u64),
    );
    let mut backward = Vec::new();
    if train {
        let mut written = vec![false; plan.steps.len()];
        written[plan.output] = true;
        for &i in plan.order.iter().rev() {
            backward.extend(layer_backward(&mut b, name, plan, &l, &mut written, sh.seed, i));
        }
    }
    let uniforms = b.uniforms;
    Ok(NetPass { layout: l, acts, ints, _scratch: scratch, _uniforms: uniforms, gather: gather_uniform, forward, head, backward })
}

/// Dropout's scale of a kept value, 1 / (1 - q), rounded as the CPU engine rounds it.
fn keep(q: f32) -> f32 {
    if q < 1.0 {
        1.0 / (1.0 - q)
    } else {
        0.0
    }
}

/// The label of step i's dispatches: the pass, the layer's position and text.
fn label(name: &str, plan: &Plan, i: usize) -> String {
    let p = &plan.steps[i].place;
    format!("{name} layer {} {}", p.position, p.text)
}

/// Step i's batch norm params (the tensors' offsets; sizes of the pass).
fn norm_params(plan: &Plan, l: &NetLayout, i: usize) -> NormParams {
    let (c, h, w) = chw(plan.steps[i].input);
    let s = &plan.slots[i];
    let Layer::BatchNorm { momentum, eps, .. } = plan.steps[i].layer else { unreachable!("a batch norm") };
    let at = |r: &Option<std::ops::Range<usize>>| r.as_ref().expect("a batch norm's tensors").start as u32;
    let slots = l.norm[i];
    NormParams {
        n: l.n as u32,
        c: c as u32,
        hw: (h * w) as u32,
        chunks: norm_chunks(l.n * h * w),
        inp: plan.src[i].map_or(l.x, |j| l.out[j]),
        out: l.out[i],
        gamma: at(&s.gamma),
        beta: at(&s.beta),
        running_mean: at(&s.running_mean),
        running_var: at(&s.running_var),
        mean: slots.mean,
        var: slots.var,
        dgamma: slots.dgamma,
        dbeta: slots.dbeta,
        partial: l.partial,
        eps,
        momentum,
        ..Default::default()
    }
}

/// Step i's forward dispatches.
fn layer_forward(b: &mut NetBuilder, name: &str, plan: &Plan, l: &NetLayout, sh: &NetShared, train: bool, i: usize) -> Vec<Dispatch> {
    let at = label(name, plan, i);
    let n = l.n;
    let (inp, out) = (plan.src[i].map_or(l.x, |j| l.out[j]), l.out[i]);
    let s = &plan.slots[i];
    let off = |r: &Option<std::ops::Range<usize>>| r.as_ref().map_or(NONE, |r| r.start as u32);
    let len = (n * plan.output_len(i)) as u32;
    let elt = EltParams { len, inp, out, step_word: NONE, ..Default::default() };
    let (c, h, w) = chw(plan.steps[i].input);
    let (_, oh, ow) = chw(plan.steps[i].output);
    let pool = PoolParams { n: n as u32, c: c as u32, h: h as u32, w: w as u32, oh: oh as u32, ow: ow as u32, inp, out, arg: l.arg[i], ..Default::default() };
    match plan.steps[i].layer {
        Layer::Conv { .. } | Layer::Linear { .. } => vec![b.conv_forward(&at, out, inp, off(&s.weight), off(&s.bias), dims(plan, i, n).expect("weighted"))],
        Layer::BatchNorm { .. } if train => b.batchnorm_forward(&at, norm_params(plan, l, i)).into(),
        Layer::BatchNorm { .. } => vec![b.batchnorm_forward_eval(&at, norm_params(plan, l, i))],
        Layer::Act(a) => vec![b.elementwise(&at, EltParams { op: OP_ACT, act: act_code(a), ..elt })],
        Layer::Pool { kind, k, stride } => {
            let id = if kind == Pool::Max { KernelId::MaxForward } else { KernelId::AvgForward };
            vec![b.pool_forward(&at, id, PoolParams { k: k as u32, s: stride as u32, ..pool })]
        }
        Layer::Gap => vec![b.pool_forward(&at, KernelId::GapForward, pool)],
        Layer::Dropout(q) if train => {
            vec![b.elementwise(&at, EltParams { op: OP_DROPOUT, q, keep: keep(q), seed: sh.seed, step_word: l.step_word, layer: mix(0x9e37_79b9 ^ i as u32), ..elt })]
        }
        Layer::Flatten | Layer::Dropout(_) => vec![b.elementwise(&at, EltParams { op: OP_COPY, ..elt })],
        Layer::Scale(q) => vec![b.elementwise(&at, EltParams { op: OP_SCALE, q, ..elt })],
        Layer::Res(_) => vec![b.elementwise(&at, EltParams { op: OP_ADD, other: l.out[plan.last[i]], ..elt })],
    }
}

/// Step i's backward dispatches once its gradient is whole: its parameters' gradients, and its
/// input's into its source's (added where `written` says the source has one).
fn layer_backward(b: &mut NetBuilder, name: &str, plan: &Plan, l: &NetLayout, written: &mut [bool], seed: u32, i: usize) -> Vec<Dispatch> {
    let at = label(name, plan, i);
    let n = l.n;
    let inp = plan.src[i].map_or(l.x, |j| l.out[j]);
    let dout = l.dout[i];
    let s = &plan.slots[i];
    let off = |r: &Option<std::ops::Range<usize>>| r.as_ref().map_or(NONE, |r| r.start as u32);
    let mut list = Vec::new();
    let in_len = (n * plan.input_len(i)) as u32;
    // The gradient into `target` (a step's), written or added.
    let mut send = |list: &mut Vec<Dispatch>, b: &mut NetBuilder, target: usize, from: u32| {
        let e = EltParams {
            len: (n * plan.output_len(target)) as u32,
            op: OP_COPY,
            inp: from,
            out: l.dout[target],
            accumulate: written[target] as u32,
            step_word: NONE,
            ..Default::default()
        };
        list.push(b.elementwise(&at, e));
        written[target] = true;
    };
    if let Layer::Res(_) = plan.steps[i].layer {
        send(&mut list, b, plan.last[i], dout);
    }
    if let Some(d) = dims(plan, i, n) {
        list.extend(b.conv_backward_weight(&at, off(&s.weight), off(&s.bias), dout, inp, d, l.partial));
    }
    let Some(src) = plan.src[i] else {
        if let Layer::BatchNorm { .. } = plan.steps[i].layer {
            // dgamma and dbeta: the image's own gradient is not needed
            let np = NormParams { dout, ..norm_params(plan, l, i) };
            let [partials, combine, _] = b.batchnorm_backward(&at, np);
            list.extend([partials, combine]);
        }
        return list;
    };
    let (dinp, accumulate) = (l.dout[src], written[src] as u32);
    let elt = EltParams { len: in_len, inp: dout, out: dinp, accumulate, step_word: NONE, ..Default::default() };
    let (c, h, w) = chw(plan.steps[i].input);
    let (_, oh, ow) = chw(plan.steps[i].output);
    let pool = PoolParams { n: n as u32, c: c as u32, h: h as u32, w: w as u32, oh: oh as u32, ow: ow as u32, inp, dout, dinp, arg: l.arg[i], accumulate, ..Default::default() };
    match plan.steps[i].layer {
        Layer::Conv { .. } | Layer::Linear { .. } => list.push(b.conv_backward_input(&at, dinp, dout, off(&s.weight), dims(plan, i, n).expect("weighted"), accumulate == 1)),
        Layer::BatchNorm { .. } => list.extend(b.batchnorm_backward(&at, NormParams { dout, dinp, accumulate, ..norm_params(plan, l, i) })),
        Layer::Act(a) => list.push(b.elementwise(&at, EltParams { op: OP_ACT_BACKWARD, act: act_code(a), inp, other: dout, ..elt })),
        Layer::Pool { kind, k, stride } => {
            let id = if kind == Pool::Max { KernelId::MaxBackward } else { KernelId::AvgBackward };
            list.push(b.pool_backward(&at, id, PoolParams { k: k as u32, s: stride as u32, ..pool }));
        }
        Layer::Gap => list.push(b.pool_backward(&at, KernelId::GapBackward, pool)),
        Layer::Dropout(q) => list.push(b.elementwise(&at, EltParams { op: OP_DROPOUT, q, keep: keep(q), seed, step_word: l.step_word, layer: mix(0x9e37_79b9 ^ i as u32), ..elt })),
        Layer::Scale(q) => list.push(b.elementwise(&at, EltParams { op: OP_SCALE, q, ..elt })),
        Layer::Flatten | Layer::Res(_) => list.push(b.elementwise(&at, EltParams { op: OP_COPY, ..elt })),
    }
    written[src] = true;
    list
}
