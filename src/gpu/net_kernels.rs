//! Any network's kernels (shaders/net_*.wgsl): the `#[repr(C)]` mirrors of their params, how
//! each is launched, and `NetBuilder`, which makes a layer's dispatches with the names and
//! argument order of its `cpu::reference` functions (outputs, then inputs, then sizes). Every
//! dispatch binds the same list: its uniform, acts, ints, params, grads, scratch, buffers.

use super::kernels::{KernelId, Launch};
use super::pass::Dispatch;
use super::Gpu;
use crate::cpu::reference::conv::ConvDims;
use crate::net::Act;
use bytemuck::{Pod, Zeroable};

/// The workgroup size of the 1-D net kernels (WG in net_norm, net_pool, net_elementwise).
pub const NET_WG: u32 = 256;
/// net_gemm.wgsl's tile: TM rows by TN columns.
pub const GEMM_TM: u32 = 64;
pub const GEMM_TN: u32 = 64;
/// An absent tensor (a layer without bias).
pub const NONE: u32 = u32::MAX;

/// Uniform of net_gemm.wgsl (its Params).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
pub struct GemmParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub oc: u32,
    pub k: u32,
    pub s: u32,
    pub p: u32,
    pub oh: u32,
    pub ow: u32,
    pub inp: u32,
    pub out: u32,
    pub dinp: u32,
    pub weight: u32,
    pub bias: u32,
    pub accumulate: u32,
    pub chunk: u32,
    pub partial: u32,
    pub dweight: u32,
    pub split: u32,
}

/// Uniform of net_norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
pub struct NormParams {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub chunks: u32,
    pub inp: u32,
    pub out: u32,
    pub dout: u32,
    pub dinp: u32,
    pub gamma: u32,
    pub beta: u32,
    pub running_mean: u32,
    pub running_var: u32,
    pub mean: u32,
    pub var: u32,
    pub dgamma: u32,
    pub dbeta: u32,
    pub partial: u32,
    pub eval: u32,
    pub accumulate: u32,
    pub train_update: u32,
    pub eps: f32,
    pub momentum: f32,
    pub _pad: [u32; 2],
}

/// Uniform of net_pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
pub struct PoolParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub k: u32,
    pub s: u32,
    pub oh: u32,
    pub ow: u32,
    pub inp: u32,
    pub out: u32,
    pub dout: u32,
    pub dinp: u32,
    pub arg: u32,
    pub accumulate: u32,
    pub _pad: [u32; 2],
}

/// Uniform of net_elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
pub struct EltParams {
    pub len: u32,
    pub op: u32,
    pub act: u32,
    pub inp: u32,
    pub other: u32,
    pub out: u32,
    pub accumulate: u32,
    pub seed: u32,
    pub q: f32,
    pub step_word: u32,
    pub layer: u32,
    /// dropout: 1 / (1 - q), rounded here as the CPU engine rounds it
    pub keep: f32,
}

/// Uniform of net_optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
pub struct NetSgdParams {
    pub len: u32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub step_word: u32,
    /// 1: Nesterov momentum
    pub nesterov: u32,
    /// The groups' learning-rate multipliers (weights, biases, batch norm)
    pub mult: [f32; 3],
    /// A warm-up schedule: its steps, first and last factors, the run's steps (0: none) and
    /// the step counter at the run's start
    pub warm: f32,
    pub start: f32,
    pub end: f32,
    pub total: f32,
    pub base: u32,
    pub _pad: [u32; 2],
}

/// net_elementwise.wgsl's OP values.
pub const OP_ACT: u32 = 0;
pub const OP_ACT_BACKWARD: u32 = 1;
pub const OP_DROPOUT: u32 = 2;
pub const OP_SCALE: u32 = 3;
pub const OP_ADD: u32 = 4;
pub const OP_COPY: u32 = 5;

/// net_elementwise.wgsl's ACT values.
pub fn act_code(a: Act) -> u32 {
    match a {
        Act::Relu => 0,
        Act::Gelu => 1,
        Act::Tanh => 2,
        Act::Sigmoid => 3,
    }
}

/// Chunks of a batch norm's per-channel reduction: about 4,096 values each, at most 256, so
/// a channel of a large batch spreads over many workgroups.
pub fn norm_chunks(m: usize) -> u32 {
    m.div_ceil(4096).clamp(1, 256) as u32
}

/// Chunks of a convolution's weight-gradient reduction over r = N*OH*OW: about 1,024 columns
/// each, at most 64 (the partials take Z x OC x (CKK+1) floats of scratch).
pub fn weight_split(r: usize) -> u32 {
    r.div_ceil(1024).clamp(1, 64) as u32
}

/// A 1-D grid of `threads` invocations in workgroups of NET_WG, folded into y past 32,768.
pub fn net_flat(threads: usize, macs: u64, bytes: u64) -> Launch {
    let g = (threads as u32).div_ceil(NET_WG).max(1);
    let (x, y) = if g <= 32768 { (g, 1) } else { (32768, g.div_ceil(32768)) };
    Launch { constants: vec![], groups: (x, y, 1), wg: NET_WG, macs, bytes }
}

/// The gemm's params of a convolution `d`.
fn gemm_params(d: ConvDims) -> GemmParams {
    let u = |v: usize| v as u32;
    GemmParams { n: u(d.n), c: u(d.c), h: u(d.h), w: u(d.w), oc: u(d.oc), k: u(d.k), s: u(d.s), p: u(d.p), oh: u(d.oh()), ow: u(d.ow()), bias: NONE, ..Default::default() }
}

/// The buffers every net dispatch binds, in binding order after the uniform.
pub struct NetBufs<'a> {
    pub acts: &'a wgpu::Buffer,
    pub ints: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub scratch: &'a wgpu::Buffer,
    pub buffers: &'a wgpu::Buffer,
}

/// Makes the dispatches of any network's layers; keeps their uniforms alive.
pub struct NetBuilder<'a> {
    pub gpu: &'a Gpu,
    pub bufs: NetBufs<'a>,
    pub uniforms: Vec<wgpu::Buffer>,
}

impl<'a> NetBuilder<'a> {
    pub fn new(gpu: &'a Gpu, bufs: NetBufs<'a>) -> NetBuilder<'a> {
        NetBuilder { gpu, bufs, uniforms: Vec::new() }
    }

    fn dispatch<T: Pod>(&mut self, layer: &str, id: KernelId, params: &T, launch: Launch) -> Dispatch {
        let b = &self.bufs;
        let bufs = [b.acts, b.ints, b.params, b.grads, b.scratch, b.buffers];
        let (d, uni) = make_dispatch(self.gpu, layer, id, params, &bufs, launch);
        self.uniforms.push(uni);
        d
    }

    /// A dispatch of any kernel with its own bindings (`bufs` after the uniform): the gather,
    /// the loss and the optimizer the net passes share with LeNet's.
    pub fn dispatch_with<T: Pod>(&mut self, layer: &str, id: KernelId, params: &T, bufs: &[&wgpu::Buffer], launch: Launch) -> Dispatch {
        let (d, uni) = make_dispatch(self.gpu, layer, id, params, bufs, launch);
        self.uniforms.push(uni);
        d
    }

    fn gemm(&mut self, layer: &str, mode: u32, g: GemmParams, rows: u32, cols: u32, z: u32, macs: u64) -> Dispatch {
        let tiles = cols.div_ceil(GEMM_TN);
        // Modes 0 and 1 fold column tiles past 32,768 into z (the shader reads x + z * nx).
        let groups = if mode == 2 || tiles <= 32768 { (tiles, rows.div_ceil(GEMM_TM), z) } else { (32768, rows.div_ceil(GEMM_TM), tiles.div_ceil(32768)) };
        let launch = Launch { constants: vec![("MODE", mode)], groups, wg: 256, macs, bytes: 0 };
        self.dispatch(layer, KernelId::Gemm, &g, launch)
    }

    /// conv_forward(out, inp, weight, bias, d): acts offsets out, inp; params offsets weight,
    /// bias (NONE: no bias).
    pub fn conv_forward(&mut self, layer: &str, out: u32, inp: u32, weight: u32, bias: u32, d: ConvDims) -> Dispatch {
        let g = GemmParams { out, inp, weight, bias, ..gemm_params(d) };
        let cols = (d.n * d.oh() * d.ow()) as u32;
        self.gemm(layer, 0, g, d.oc as u32, cols, 1, cols as u64 * (d.oc * d.c * d.k * d.k) as u64)
    }

    /// conv_backward_input(dinp, dout, weight, d): dinp = (dinp if `accumulate`) + the input's
    /// gradient.
    pub fn conv_backward_input(&mut self, layer: &str, dinp: u32, dout: u32, weight: u32, d: ConvDims, accumulate: bool) -> Dispatch {
        let g = GemmParams { dinp, out: dout, weight, accumulate: accumulate as u32, ..gemm_params(d) };
        let cols = (d.n * d.h * d.w) as u32;
        self.gemm(layer, 1, g, d.c as u32, cols, 1, (d.n * d.oh() * d.ow()) as u64 * (d.oc * d.c * d.k * d.k) as u64)
    }

    /// conv_backward_weight(dweight, dbias, dout, inp, d): the split-K products into scratch at
    /// `partial` (`weight_partial_len` floats), then their fixed-order sum into grads.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward_weight(&mut self, layer: &str, dweight: u32, dbias: u32, dout: u32, inp: u32, d: ConvDims, partial: u32) -> [Dispatch; 2] {
        let r = d.n * d.oh() * d.ow();
        let split = weight_split(r);
        let chunk = r.div_ceil(split as usize) as u32;
        let ckk = (d.c * d.k * d.k) as u32;
        let g = GemmParams { out: dout, inp, dweight, bias: dbias, chunk, partial, split, ..gemm_params(d) };
        let product = self.gemm(layer, 2, g, d.oc as u32, ckk + 1, split, r as u64 * (d.oc as u64) * (ckk as u64 + 1));
        let reduce = self.dispatch(layer, KernelId::WeightReduce, &g, net_flat(d.oc * (ckk as usize + 1), 0, 0));
        [product, reduce]
    }

    /// batchnorm_forward in training: the chunks' partials, their combination (the batch's
    /// mean and variance into scratch, the running statistics moved), then the normalisation.
    pub fn batchnorm_forward(&mut self, layer: &str, np: NormParams) -> [Dispatch; 3] {
        let np = NormParams { eval: 0, train_update: 1, ..np };
        let (n, c, hw) = (np.n as usize, np.c as usize, np.hw as usize);
        let partials = Launch { constants: vec![], groups: (np.c, np.chunks, 1), wg: NET_WG, macs: 0, bytes: 8 * (n * c * hw) as u64 };
        [
            self.dispatch(layer, KernelId::NormPartials, &np, partials),
            self.dispatch(layer, KernelId::NormCombine, &np, Launch { constants: vec![], groups: (np.c.div_ceil(64), 1, 1), wg: 64, macs: 0, bytes: 0 }),
            self.dispatch(layer, KernelId::NormApply, &np, net_flat(n * c * hw, 0, 8 * (n * c * hw) as u64)),
        ]
    }

    /// batchnorm_forward_eval: the normalisation by the running statistics.
    pub fn batchnorm_forward_eval(&mut self, layer: &str, np: NormParams) -> Dispatch {
        let np = NormParams { eval: 1, train_update: 0, ..np };
        let len = (np.n * np.c * np.hw) as usize;
        self.dispatch(layer, KernelId::NormApply, &np, net_flat(len, 0, 8 * len as u64))
    }

    /// batchnorm_backward: the chunks' partial sums, dgamma and dbeta of the batch (into grads),
    /// then dinp (+= when `np.accumulate`).
    pub fn batchnorm_backward(&mut self, layer: &str, np: NormParams) -> [Dispatch; 3] {
        let len = (np.n * np.c * np.hw) as usize;
        let partials = Launch { constants: vec![], groups: (np.c, np.chunks, 1), wg: NET_WG, macs: 0, bytes: 8 * len as u64 };
        [
            self.dispatch(layer, KernelId::NormBackPartials, &np, partials),
            self.dispatch(layer, KernelId::NormBackCombine, &np, Launch { constants: vec![], groups: (np.c.div_ceil(64), 1, 1), wg: 64, macs: 0, bytes: 0 }),
            self.dispatch(layer, KernelId::NormBackApply, &np, net_flat(len, 0, 12 * len as u64)),
        ]
    }

    /// A pool's forward (`id`: MaxForward, AvgForward, GapForward) over its outputs.
    pub fn pool_forward(&mut self, layer: &str, id: KernelId, pp: PoolParams) -> Dispatch {
        let outs = (pp.n * pp.c * pp.oh * pp.ow) as usize;
        self.dispatch(layer, id, &pp, net_flat(outs, 0, 4 * (outs + (pp.n * pp.c * pp.h * pp.w) as usize) as u64))
    }

    /// A pool's backward (`id`: MaxBackward, AvgBackward, GapBackward) over its inputs.
    pub fn pool_backward(&mut self, layer: &str, id: KernelId, pp: PoolParams) -> Dispatch {
        let ins = (pp.n * pp.c * pp.h * pp.w) as usize;
        self.dispatch(layer, id, &pp, net_flat(ins, 0, 8 * ins as u64))
    }

    /// An elementwise layer over `ep.len` values.
    pub fn elementwise(&mut self, layer: &str, ep: EltParams) -> Dispatch {
        let len = ep.len as usize;
        self.dispatch(layer, KernelId::Elementwise, &ep, net_flat(len, 0, 12 * len as u64))
    }
}

/// A dispatch of `id` labelled by its layer, bound to a new uniform holding `params` and then
/// `bufs`; its pipeline cached by kernel and constants. Returns the uniform with it.
pub fn make_dispatch<T: Pod>(gpu: &Gpu, layer: &str, id: KernelId, params: &T, bufs: &[&wgpu::Buffer], launch: Launch) -> (Dispatch, wgpu::Buffer) {
    let label = format!("{layer} {}", id.name());
    let uni = gpu.uniform(&format!("{label} params"), params);
    let mut all = vec![&uni];
    all.extend_from_slice(bufs);
    let bind = gpu.bind(&label, gpu.kernels.bgl(id), &all);
    let pipeline = gpu.kernels.pipeline(&gpu.device, id, &launch.constants, "net");
    (Dispatch { label, pipeline, bind, launch }, uni)
}

/// Floats of scratch a convolution's weight gradient needs for its partials.
pub fn weight_partial_len(d: ConvDims) -> usize {
    weight_split(d.n * d.oh() * d.ow()) as usize * d.oc * (d.c * d.k * d.k + 1)
}

/// Runs `dispatches` in one compute pass of `encoder`, in order.
pub fn record(encoder: &mut wgpu::CommandEncoder, label: &str, dispatches: &[&Dispatch]) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
    for d in dispatches {
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind, &[]);
        let (x, y, z) = d.launch.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}
