//! A pass over one batch of N: the activation buffers at named offsets, and the dispatches of
//! the forward (and, for training, the backward), built layer by layer in the order and with
//! the names and arguments of `cpu::forward` and `cpu::backward`: outputs, then inputs, then
//! sizes. A training step is this pass's dispatches and the SGD update in one compute pass.

use super::kernels::*;
use super::{EngineError, Gpu};
use crate::model::*;

/// Named offsets (in floats, 64-aligned) of the activations of a batch of N in `acts`, and of
/// the labels and argmaxes in `ints`. Gradient tensors exist only when `backward` is set.
/// (LeNet: C1 = 6, C2 = 16, F1 = 120, F2 = 84.)
#[derive(Clone, Copy, Debug, Default)]
pub struct ActLayout {
    pub n: usize,
    pub x: usize,       // [N,3,32,32]
    pub h1: usize,      // [N,C1,28,28] relu(conv1)
    pub p1: usize,      // [N,C1,14,14]
    pub h2: usize,      // [N,C2,10,10] relu(conv2)
    pub p2: usize,      // [N,C2,5,5] = [N,C2*25]
    pub a1: usize,      // [N,F1] relu(fc1)
    pub a2: usize,      // [N,F2] relu(fc2)
    pub logits: usize,  // [N,10]
    pub dlogits: usize, // [N,10]
    pub da2: usize,     // [N,F2]
    pub da1: usize,     // [N,F1]
    pub dp2: usize,     // [N,C2*25]
    pub dp1: usize,     // [N,C1,14,14]
    pub dx: usize,      // [N,3,32,32] the input's gradient (the looks pass only)
    pub acts_len: usize,
    pub y: usize,    // ints: [N] labels
    pub arg1: usize, // ints: [N,C1,14,14] argmax in the plane of h1, or NO_ARG
    pub arg2: usize, // ints: [N,C2,5,5]
    pub ints_len: usize,
}

impl ActLayout {
    pub fn new(n: usize, backward: bool, arch: Arch) -> ActLayout {
        let Arch { c1, c2, f1, f2 } = arch;
        let fc1_in = arch.fc1_in();
        let mut at = 0;
        let mut take = |len: usize| {
            let o = at;
            at = align_up(at + n * len);
            o
        };
        let mut l = ActLayout { n, ..Default::default() };
        l.x = take(IMG_LEN);
        l.h1 = take(c1 * H1 * H1);
        l.p1 = take(c1 * P1 * P1);
        l.h2 = take(c2 * H2 * H2);
        l.p2 = take(fc1_in);
        l.a1 = take(f1);
        l.a2 = take(f2);
        l.logits = take(CLASSES);
        if backward {
            l.dlogits = take(CLASSES);
            l.da2 = take(f2);
            l.da1 = take(f1);
            l.dp2 = take(fc1_in);
            l.dp1 = take(c1 * P1 * P1);
        }
        l.acts_len = at;
        let mut at = 0;
        let mut take = |len: usize| {
            let o = at;
            at = align_up(at + n * len);
            o
        };
        l.y = take(1);
        l.arg1 = take(c1 * P1 * P1);
        l.arg2 = take(fc1_in);
        l.ints_len = at;
        l
    }

    /// The same with the input's gradient dx after the rest (the looks pass).
    pub fn with_input_grad(mut self) -> ActLayout {
        self.dx = self.acts_len;
        self.acts_len = align_up(self.dx + self.n * IMG_LEN);
        self
    }
}

/// One recorded dispatch: a kernel, its bindings, and how it is launched.
pub struct Dispatch {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub launch: Launch,
}

/// A dataset on the GPU: images as u8 records packed in u32 words, split over at most two
/// buffers (each within the 128 MiB binding limit), labels as u32, and the order to read them.
pub struct DataBufs {
    pub images: Vec<wgpu::Buffer>,
    pub labels: wgpu::Buffer,
    pub index: wgpu::Buffer,
    pub count: usize,
    pub chunk_records: usize,
}

/// The buffers every pass shares.
pub struct Shared<'a> {
    pub layout: &'a Layout,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub metrics: &'a wgpu::Buffer,
    pub preds: &'a wgpu::Buffer,
}

/// A forward (and, for training, backward) pass over a batch of N: its buffers and dispatches.
pub struct Pass {
    pub layout: ActLayout,
    pub acts: wgpu::Buffer,
    _ints: wgpu::Buffer,
    _uniforms: Vec<wgpu::Buffer>,
    /// The gather's uniform and its contents (augmentation changes them each epoch).
    pub gather: (wgpu::Buffer, GatherParams),
    pub forward: Vec<Dispatch>,
    /// Loss (training) or accumulation (evaluation) after the forward.
    pub head: Dispatch,
    pub backward: Vec<Dispatch>,
}

/// Makes the dispatches of one pass: each layer method takes the layer's tensors (offsets in
/// acts / ints, parameter indices in the Layout) in the order of its `cpu::` function.
struct Builder<'a> {
    gpu: &'a Gpu,
    name: &'a str,
    sh: &'a Shared<'a>,
    acts: &'a wgpu::Buffer,
    ints: &'a wgpu::Buffer,
    uniforms: Vec<wgpu::Buffer>,
}

fn u(v: usize) -> u32 {
    v as u32
}

impl Builder<'_> {
    /// Offset of parameter tensor `i` in params / grads.
    fn off(&self, i: usize) -> u32 {
        self.sh.layout.specs[i].offset as u32
    }

    fn dispatch<T: bytemuck::Pod>(&mut self, layer: &str, id: KernelId, params: &T, bufs: &[&wgpu::Buffer], launch: Launch) -> Dispatch {
        let label = format!("{} {layer} {}", self.name, id.name());
        let uni = self.gpu.uniform(&format!("{label} params"), params);
        let mut all = vec![&uni];
        all.extend_from_slice(bufs);
        let k = &self.gpu.kernels;
        let bind = self.gpu.bind(&label, k.bgl(id), &all);
        let pipeline = k.pipeline(&self.gpu.device, id, &launch.constants, &format!("{} {layer}", self.name));
        self.uniforms.push(uni);
        Dispatch { label, pipeline, bind, launch }
    }

    /// cpu::conv_pool_forward(out, pool, arg, inp, weight, bias, n, c, h, w, oc, k)
    fn conv_pool_forward(&mut self, layer: &str, out: usize, pool: usize, arg: usize, inp: usize, weight: usize, bias: usize, s: ConvShape) -> Dispatch {
        let p = ConvParams { n: s.n, inp: u(inp), out: u(out), pool: u(pool), arg: u(arg), weight: self.off(weight), bias: self.off(bias), ..Default::default() };
        let (params, acts, ints, grads) = (self.sh.params, self.acts, self.ints, self.sh.grads);
        self.dispatch(layer, KernelId::ConvPoolForward, &p, &[params, acts, ints, grads], Launch::conv_pool_forward(&s))
    }

    /// cpu::conv_pool_backward_weight(dweight, dbias, _, dpool, arg, inp, n, c, h, w, oc, k)
    fn conv_pool_backward_weight(&mut self, layer: &str, dweight: usize, dbias: usize, dpool: usize, arg: usize, inp: usize, s: ConvShape) -> Dispatch {
        let p = ConvParams { n: s.n, inp: u(inp), dpool: u(dpool), arg: u(arg), weight: self.off(dweight), bias: self.off(dbias), ..Default::default() };
        let (params, acts, ints, grads) = (self.sh.params, self.acts, self.ints, self.sh.grads);
        self.dispatch(layer, KernelId::ConvPoolBackwardWeight, &p, &[params, acts, ints, grads], Launch::conv_pool_backward_weight(&s))
    }

    /// cpu::conv_pool_backward_input(dinp, _, dpool, arg, weight, n, c, h, w, oc, k)
    fn conv_pool_backward_input(&mut self, layer: &str, dinp: usize, dpool: usize, arg: usize, weight: usize, s: ConvShape) -> Dispatch {
        let p = ConvParams { n: s.n, dinp: u(dinp), dpool: u(dpool), arg: u(arg), weight: self.off(weight), ..Default::default() };
        let (params, acts, ints, grads) = (self.sh.params, self.acts, self.ints, self.sh.grads);
        self.dispatch(layer, KernelId::ConvPoolBackwardInput, &p, &[params, acts, ints, grads], Launch::conv_pool_backward_input(&s))
    }

    /// cpu::linear_forward(out, inp, weight, bias, n, in_f, out_f, relu)
    fn linear_forward(&mut self, layer: &str, out: usize, inp: usize, weight: usize, bias: usize, n: usize, in_f: usize, out_f: usize, relu: bool) -> Dispatch {
        let p = LinearParams {
            n: u(n),
            in_f: u(in_f),
            out_f: u(out_f),
            relu: relu as u32,
            inp: u(inp),
            out: u(out),
            weight: self.off(weight),
            bias: self.off(bias),
            ..Default::default()
        };
        let (params, acts, grads) = (self.sh.params, self.acts, self.sh.grads);
        self.dispatch(layer, KernelId::LinearForward, &p, &[params, acts, grads], Launch::linear_forward(&p))
    }

    /// cpu::linear_backward(dinp, dweight, dbias, dout, inp, weight, n, in_f, out_f, relu)
    fn linear_backward(&mut self, layer: &str, dinp: usize, weight: usize, bias: usize, dout: usize, inp: usize, n: usize, in_f: usize, out_f: usize, relu: bool) -> Dispatch {
        let p = LinearParams {
            n: u(n),
            in_f: u(in_f),
            out_f: u(out_f),
            inp_relu: relu as u32,
            inp: u(inp),
            dinp: u(dinp),
            dout: u(dout),
            weight: self.off(weight),
            bias: self.off(bias),
            ..Default::default()
        }
        .with_dw_groups();
        let (params, acts, grads) = (self.sh.params, self.acts, self.sh.grads);
        self.dispatch(layer, KernelId::LinearBackward, &p, &[params, acts, grads], Launch::linear_backward(&p))
    }
}

/// The sizes of a conv layer at batch n.
fn conv(n: usize, c: usize, h: usize, oc: usize) -> ConvShape {
    ConvShape { n: u(n), c: u(c), h: u(h), w: u(h), oc: u(oc), k: u(K) }
}

/// What a pass is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward, loss, backward (the training step).
    Train,
    /// Forward and accumulation into the confusion matrix (evaluation, inspection).
    Eval,
    /// Forward and backward from a gradient of the logits the caller writes, down to the
    /// input's gradient dx (where the network looks). Its caller writes x, and binds `sh.grads`
    /// to a buffer of its own so training's gradients stay as they are.
    Looks,
}

/// The pass of a batch of `n` over `data`: training (forward, loss, backward), evaluation
/// (forward, accumulation) or looks (forward, backward to the input).
pub fn build_pass(gpu: &Gpu, name: &str, n: usize, mode: Mode, data: &DataBufs, sh: &Shared) -> Result<Pass, EngineError> {
    let arch = sh.layout.arch;
    let Arch { c1, c2, f1, f2 } = arch;
    let fc1_in = arch.fc1_in();
    let train = mode == Mode::Train;
    let l = ActLayout::new(n, mode != Mode::Eval, arch);
    let l = if mode == Mode::Looks { l.with_input_grad() } else { l };
    let max_bind = gpu.device.limits().max_storage_buffer_binding_size as usize;
    if l.acts_len * 4 > max_bind {
        return Err(EngineError::limits(format!(
            "batch {n} needs {} MiB of activations, over the {} MiB binding limit: use a smaller batch",
            (l.acts_len * 4) >> 20,
            max_bind >> 20
        )));
    }
    let acts = gpu.storage(&format!("{name} acts (batch {n})"), (l.acts_len * 4) as u64);
    let ints = gpu.storage(&format!("{name} ints (labels, argmax; batch {n})"), (l.ints_len * 4) as u64);
    let mut b = Builder { gpu, name, sh, acts: &acts, ints: &ints, uniforms: Vec::new() };

    let g = GatherParams { n: u(n), mode: if train { 0 } else { 1 }, count: u(data.count), chunk_records: u(data.chunk_records), x: u(l.x), y: u(l.y), aug: 0, key: 0 };
    let img1 = data.images.get(1).unwrap_or(&data.images[0]);
    let gather_launch = Launch::flat_work(n * IMG_LEN / 4, 0, (n * IMG_LEN * 5) as u64);
    let gather = b.dispatch("batch", KernelId::Gather, &g, &[&data.images[0], img1, &data.labels, &data.index, sh.metrics, &acts, &ints], gather_launch);
    let gather_uniform = (b.uniforms.last().unwrap().clone(), g);

    // as cpu::forward
    let forward = vec![
        gather,
        b.conv_pool_forward("conv1", l.h1, l.p1, l.arg1, l.x, CONV1_W, CONV1_B, conv(n, C1_IN, IMG, c1)),
        b.conv_pool_forward("conv2", l.h2, l.p2, l.arg2, l.p1, CONV2_W, CONV2_B, conv(n, c1, P1, c2)),
        b.linear_forward("fc1", l.a1, l.p2, FC1_W, FC1_B, n, fc1_in, f1, true),
        b.linear_forward("fc2", l.a2, l.a1, FC2_W, FC2_B, n, f1, f2, true),
        b.linear_forward("fc3", l.logits, l.a2, FC3_W, FC3_B, n, f2, CLASSES, false),
    ];
    let ce = CeParams { n: u(n), count: u(data.count), logits: u(l.logits), dlogits: u(l.dlogits), y: u(l.y), smoothing: 0.0, _pad: [0; 2] };
    let head_kernel = if train { KernelId::CrossEntropy } else { KernelId::EvalAccumulate };
    let head_launch = Launch::flat_work(WG as usize, (n * CLASSES) as u64, (n * CLASSES * 8) as u64);
    let head = b.dispatch("logits", head_kernel, &ce, &[&acts, &ints, sh.metrics, sh.preds], head_launch);
    // as cpu::backward
    let mut backward = Vec::new();
    if mode != Mode::Eval {
        backward = vec![
            b.linear_backward("fc3", l.da2, FC3_W, FC3_B, l.dlogits, l.a2, n, f2, CLASSES, true),
            b.linear_backward("fc2", l.da1, FC2_W, FC2_B, l.da2, l.a1, n, f1, f2, true),
            b.linear_backward("fc1", l.dp2, FC1_W, FC1_B, l.da1, l.p2, n, fc1_in, f1, false),
            b.conv_pool_backward_weight("conv2", CONV2_W, CONV2_B, l.dp2, l.arg2, l.p1, conv(n, c1, P1, c2)),
            b.conv_pool_backward_input("conv2", l.dp1, l.dp2, l.arg2, CONV2_W, conv(n, c1, P1, c2)),
            b.conv_pool_backward_weight("conv1", CONV1_W, CONV1_B, l.dp1, l.arg1, l.x, conv(n, C1_IN, IMG, c1)),
        ];
    }
    if mode == Mode::Looks {
        // as cpu::looks: the input's gradient, which training does not need
        backward.push(b.conv_pool_backward_input("conv1", l.dx, l.dp1, l.arg1, CONV1_W, conv(n, C1_IN, IMG, c1)));
    }
    let uniforms = b.uniforms;
    Ok(Pass { layout: l, acts, _ints: ints, _uniforms: uniforms, gather: gather_uniform, forward, head, backward })
}

/// Record dispatches into a compute pass.
pub fn record(pass: &mut wgpu::ComputePass, list: &[Dispatch]) {
    for d in list {
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind, &[]);
        let (x, y, z) = d.launch.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Where commands go: a wgpu command encoder (to run them), or a `Tally` (to count what the
/// same code encodes: a training step's shape is read off the step's own encoding, so a
/// second pass or a copy added to it shows in `bench --shape` and fails its test).
pub trait Recorder {
    /// One compute pass holding the lists of dispatches, in order.
    fn compute_pass(&mut self, label: &str, lists: &[&[Dispatch]]);
    /// A buffer-to-buffer copy of `size` bytes.
    fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, size: u64);
}

impl Recorder for wgpu::CommandEncoder {
    fn compute_pass(&mut self, label: &str, lists: &[&[Dispatch]]) {
        let mut pass = self.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        for list in lists {
            record(&mut pass, list);
        }
    }
    fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, size: u64) {
        self.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }
}

/// What was recorded, counted instead of run.
#[derive(Default)]
pub struct Tally {
    pub passes: usize,
    pub copies: usize,
    /// Each dispatch's label and launch, in order.
    pub kernels: Vec<(String, Launch)>,
}

impl Recorder for Tally {
    fn compute_pass(&mut self, _: &str, lists: &[&[Dispatch]]) {
        self.passes += 1;
        self.kernels.extend(lists.iter().flat_map(|l| l.iter()).map(|d| (d.label.clone(), d.launch.clone())));
    }
    fn copy(&mut self, _: &wgpu::Buffer, _: u64, _: &wgpu::Buffer, _: u64, _: u64) {
        self.copies += 1;
    }
}

/// Encode the lists of dispatches in order into one compute pass.
pub fn encode(enc: &mut impl Recorder, label: &str, lists: &[&[Dispatch]]) {
    enc.compute_pass(label, lists);
}

/// What one training step launches: its dispatches in order (label and launch), the compute
/// passes and the buffer copies it encodes.
#[derive(Clone, Debug)]
pub struct StepShape {
    pub kernels: Vec<(String, Launch)>,
    pub passes: usize,
    pub copies: usize,
}

impl StepShape {
    pub fn macs(&self) -> u64 {
        self.kernels.iter().map(|k| k.1.macs).sum()
    }
}
