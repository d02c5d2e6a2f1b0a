//! The kernels: their ids and shader files, the pipeline cache, the bind-group layouts, the
//! `#[repr(C)]` mirrors of each shader's params struct, and how each kernel is launched (its
//! override constants, its grid, and the work it does, for the step's shape).

use crate::model::CLASSES;
use bytemuck::{Pod, Zeroable};
use std::sync::Mutex;

/// Workgroup size of the 1-D kernels (the `WG` constant of gather, sgd, cross_entropy,
/// conv_pool_forward and conv_pool_backward_input).
pub const WG: u32 = 64;
/// The largest workgroup of conv_pool_backward_weight (MAX_WG_R: one workgroup reduces one
/// weight row).
pub const WG_R: u32 = 256;
/// The linear kernels' largest tile side (MAX_T): workgroups of up to 16 x 16 lanes.
pub const TILE: u32 = 16;

/// The linear kernels' tile side for a batch of n: 8 up to a batch of 8 (a 16-row tile would
/// leave most lanes idle), else 16.
pub fn linear_tile(n: u32) -> u32 {
    if n <= 8 {
        8
    } else {
        TILE
    }
}

/// Workgroups per dimension are limited to 65,535: larger 1-D grids fold into y.
const MAX_GROUPS_X: u32 = 32768;
/// conv_pool.wgsl: the largest K (MAX_K), channels per invocation (MAX_B) and the floats of
/// the workgroup's weight tile (W_TILE).
pub const MAX_K: u32 = 8;
pub const MAX_B: u32 = 8;
pub const W_TILE: u32 = 1600;

/// Every kernel entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelId {
    Gather,
    ConvPoolForward,
    ConvPoolBackwardWeight,
    ConvPoolBackwardInput,
    LinearForward,
    LinearBackward,
    CrossEntropy,
    EvalAccumulate,
    SgdUpdate,
    // Any network's layers (gpu/net_kernels.rs).
    Gemm,
    WeightReduce,
    NormPartials,
    NormCombine,
    NormApply,
    NormBackPartials,
    NormBackCombine,
    NormBackApply,
    MaxForward,
    MaxBackward,
    AvgForward,
    AvgBackward,
    GapForward,
    GapBackward,
    Elementwise,
    NetSgd,
    NetAdamW,
    StepCount,
}

pub const ALL_KERNELS: [KernelId; 27] = [
    KernelId::Gather,
    KernelId::ConvPoolForward,
    KernelId::ConvPoolBackwardWeight,
    KernelId::ConvPoolBackwardInput,
    KernelId::LinearForward,
    KernelId::LinearBackward,
    KernelId::CrossEntropy,
    KernelId::EvalAccumulate,
    KernelId::SgdUpdate,
    KernelId::Gemm,
    KernelId::WeightReduce,
    KernelId::NormPartials,
    KernelId::NormCombine,
    KernelId::NormApply,
    KernelId::NormBackPartials,
    KernelId::NormBackCombine,
    KernelId::NormBackApply,
    KernelId::MaxForward,
    KernelId::MaxBackward,
    KernelId::AvgForward,
    KernelId::AvgBackward,
    KernelId::GapForward,
    KernelId::GapBackward,
    KernelId::Elementwise,
    KernelId::NetSgd,
    KernelId::NetAdamW,
    KernelId::StepCount,
];

/// The shader files, in the order of `Kernels::modules`.
const GATHER: usize = 0;
const CONV_POOL: usize = 1;
const LINEAR: usize = 2;
const CE: usize = 3;
const SGD: usize = 4;
const NET_GEMM: usize = 5;
const NET_NORM: usize = 6;
const NET_POOL: usize = 7;
const NET_ELEMENTWISE: usize = 8;
const NET_OPTIM: usize = 9;

impl KernelId {
    /// (shader file index, entry point name)
    fn entry(self) -> (usize, &'static str) {
        match self {
            KernelId::Gather => (GATHER, "gather"),
            KernelId::ConvPoolForward => (CONV_POOL, "conv_pool_forward"),
            KernelId::ConvPoolBackwardWeight => (CONV_POOL, "conv_pool_backward_weight"),
            KernelId::ConvPoolBackwardInput => (CONV_POOL, "conv_pool_backward_input"),
            KernelId::LinearForward => (LINEAR, "linear_forward"),
            KernelId::LinearBackward => (LINEAR, "linear_backward"),
            KernelId::CrossEntropy => (CE, "cross_entropy"),
            KernelId::EvalAccumulate => (CE, "eval_accumulate"),
            KernelId::SgdUpdate => (SGD, "sgd_update"),
            KernelId::Gemm => (NET_GEMM, "gemm"),
            KernelId::WeightReduce => (NET_GEMM, "weight_reduce"),
            KernelId::NormPartials => (NET_NORM, "norm_partials"),
            KernelId::NormCombine => (NET_NORM, "norm_combine"),
            KernelId::NormApply => (NET_NORM, "norm_apply"),
            KernelId::NormBackPartials => (NET_NORM, "norm_back_partials"),
            KernelId::NormBackCombine => (NET_NORM, "norm_back_combine"),
            KernelId::NormBackApply => (NET_NORM, "norm_back_apply"),
            KernelId::MaxForward => (NET_POOL, "max_forward"),
            KernelId::MaxBackward => (NET_POOL, "max_backward"),
            KernelId::AvgForward => (NET_POOL, "avg_forward"),
            KernelId::AvgBackward => (NET_POOL, "avg_backward"),
            KernelId::GapForward => (NET_POOL, "gap_forward"),
            KernelId::GapBackward => (NET_POOL, "gap_backward"),
            KernelId::Elementwise => (NET_ELEMENTWISE, "elementwise"),
            KernelId::NetSgd => (NET_OPTIM, "net_sgd"),
            KernelId::NetAdamW => (NET_OPTIM, "net_adamw"),
            KernelId::StepCount => (NET_OPTIM, "step_count"),
        }
    }
    pub fn name(self) -> &'static str {
        self.entry().1
    }
}

/// How to launch a kernel: its override constants, its grid, its workgroup size, and the work
/// one launch does (for `tabcnn bench --shape`).
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub constants: Vec<(&'static str, u32)>,
    pub groups: (u32, u32, u32),
    /// Invocations per workgroup.
    pub wg: u32,
    /// Multiply-adds done (counting only the terms the kernel visits).
    pub macs: u64,
    /// Bytes read and written, counting each element of each tensor once.
    pub bytes: u64,
}

/// Workgroups for `threads` invocations of WG each, folded into y past 32,768 in x.
pub fn grid(threads: usize) -> (u32, u32) {
    let g = (threads as u32).div_ceil(WG).max(1);
    if g <= MAX_GROUPS_X {
        (g, 1)
    } else {
        (MAX_GROUPS_X, g.div_ceil(MAX_GROUPS_X))
    }
}

/// The sizes of one conv_pool layer: they become the pipeline's override constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub oc: u32,
    pub k: u32,
}

impl ConvShape {
    pub fn oh(&self) -> u32 {
        self.h - self.k + 1
    }
    pub fn ow(&self) -> u32 {
        self.w - self.k + 1
    }
    /// Pooling windows of one plane: (OH/2) x (OW/2).
    pub fn windows(&self) -> u32 {
        (self.oh() / 2) * (self.ow() / 2)
    }
    fn sizes(&self) -> Vec<(&'static str, u32)> {
        vec![("C", self.c), ("H", self.h), ("W", self.w), ("OC", self.oc), ("K", self.k)]
    }
}

/// Channels per invocation for `items` invocations per channel block of `channels`: the
/// largest of 8, 4, 2, 1 (no larger than the channels need) that still launches 8,192
/// invocations, so a small batch spreads over more lanes and a large one reuses each load more.
fn channel_block(items: u32, channels: u32) -> u32 {
    let most = channels.next_power_of_two().min(MAX_B);
    let mut b = most;
    while b > 1 && items * channels.div_ceil(b) < 8192 {
        b /= 2;
    }
    b
}

/// Channels of the second kind per weight tile: `block` x CC x K x K floats fit W_TILE.
fn tile_channels(block: u32, k: u32, channels: u32) -> u32 {
    (W_TILE / (block * k * k)).clamp(1, channels.max(1))
}

impl Launch {
    /// A 1-D kernel over `threads` invocations.
    pub fn flat(threads: usize) -> Launch {
        let (x, y) = grid(threads);
        Launch { constants: vec![], groups: (x, y, 1), wg: WG, macs: 0, bytes: 0 }
    }
    /// `flat` that says what it moves.
    pub fn flat_work(threads: usize, macs: u64, bytes: u64) -> Launch {
        Launch { macs, bytes, ..Launch::flat(threads) }
    }

    /// conv_pool_forward: one invocation per pooling cell (2 x 2 outputs) and block of OB
    /// output channels, the blocks chosen for the batch (`channel_block`).
    pub fn conv_pool_forward(s: &ConvShape) -> Launch {
        let ob = channel_block(s.n * s.oh().div_ceil(2) * s.ow().div_ceil(2), s.oc);
        Launch::conv_pool_forward_blocks(s, ob, tile_channels(ob, s.k, s.c))
    }
    /// conv_pool_forward with OB output channels per invocation and CC input channels per
    /// weight tile.
    pub fn conv_pool_forward_blocks(s: &ConvShape, ob: u32, cc: u32) -> Launch {
        assert!(s.k <= MAX_K && (1..=MAX_B).contains(&ob) && cc >= 1 && ob * cc * s.k * s.k <= W_TILE, "conv_pool_forward: K {} OB {ob} CC {cc} out of range", s.k);
        let cells = s.n * s.oh().div_ceil(2) * s.ow().div_ceil(2);
        let mut constants = s.sizes();
        constants.extend([("OB", ob), ("CC", cc)]);
        let outs = (s.n * s.oc * s.oh() * s.ow()) as u64;
        let pooled = (s.n * s.oc * s.windows()) as u64;
        Launch {
            constants,
            groups: (cells.div_ceil(WG), s.oc.div_ceil(ob), 1),
            wg: WG,
            macs: outs * (s.c * s.k * s.k) as u64,
            bytes: 4 * ((s.n * s.c * s.h * s.w) as u64 + (s.oc * s.c * s.k * s.k + s.oc) as u64 + outs + 2 * pooled),
        }
    }
    /// conv_pool_backward_weight: one workgroup per weight row (c, ky) and output channel, of
    /// as many lanes as one channel has windows (a power of two, 64 to WG_R).
    pub fn conv_pool_backward_weight(s: &ConvShape) -> Launch {
        Launch::conv_pool_backward_weight_lanes(s, (s.n * s.windows()).next_power_of_two().clamp(64, WG_R))
    }
    /// conv_pool_backward_weight in workgroups of `wg` lanes (a power of two up to WG_R).
    pub fn conv_pool_backward_weight_lanes(s: &ConvShape, wg: u32) -> Launch {
        assert!(s.k <= MAX_K && wg.is_power_of_two() && wg <= WG_R, "conv_pool_backward_weight: K {} lanes {wg} out of range", s.k);
        let pooled = (s.n * s.oc * s.windows()) as u64;
        let mut constants = s.sizes();
        constants.push(("WG_R", wg));
        Launch {
            constants,
            groups: (s.c * s.k, s.oc, 1),
            wg,
            // every window with a gradient: K x K taps for each input channel
            macs: pooled * (s.c * s.k * s.k) as u64,
            bytes: 4 * (2 * pooled + (s.n * s.c * s.h * s.w) as u64 + (s.oc * s.c * s.k * s.k + s.oc) as u64),
        }
    }
    /// conv_pool_backward_input: one invocation per input position and block of input
    /// channels, the blocks chosen for the batch.
    pub fn conv_pool_backward_input(s: &ConvShape) -> Launch {
        let cb = channel_block(s.n * s.h * s.w, s.c);
        Launch::conv_pool_backward_input_blocks(s, cb, tile_channels(cb, s.k, s.oc))
    }
    /// conv_pool_backward_input with CB input channels per invocation (the shader's OB) and
    /// OCC output channels per weight tile (its CC).
    pub fn conv_pool_backward_input_blocks(s: &ConvShape, cb: u32, occ: u32) -> Launch {
        assert!(s.k <= MAX_K && (1..=MAX_B).contains(&cb) && occ >= 1 && cb * occ * s.k * s.k <= W_TILE, "conv_pool_backward_input: K {} CB {cb} OCC {occ} out of range", s.k);
        let positions = s.n * s.h * s.w;
        let mut constants = s.sizes();
        constants.extend([("OB", cb), ("CC", occ)]);
        let pooled = (s.n * s.oc * s.windows()) as u64;
        Launch {
            constants,
            groups: (positions.div_ceil(WG), s.c.div_ceil(cb), 1),
            wg: WG,
            macs: pooled * (s.c * s.k * s.k) as u64,
            bytes: 4 * (2 * pooled + positions as u64 * s.c as u64 + (s.oc * s.c * s.k * s.k) as u64),
        }
    }
    /// linear_forward: one T x T tile of out[N,OUT] per workgroup.
    pub fn linear_forward(p: &LinearParams) -> Launch {
        let (n, i, o) = (p.n as u64, p.in_f as u64, p.out_f as u64);
        let t = linear_tile(p.n);
        Launch { constants: vec![("T", t)], groups: (p.out_f.div_ceil(t), p.n.div_ceil(t), 1), wg: t * t, macs: n * i * o, bytes: 4 * (n * i + o * i + o + n * o) }
    }
    /// linear_backward: the dweight tiles (`LinearParams::dw_groups` of them), then the dinp
    /// tiles, in one 1-D grid.
    pub fn linear_backward(p: &LinearParams) -> Launch {
        let (n, i, o) = (p.n as u64, p.in_f as u64, p.out_f as u64);
        let t = linear_tile(p.n);
        let groups = p.dw_groups + p.n.div_ceil(t) * p.in_f.div_ceil(t);
        Launch { constants: vec![("T", t)], groups: (groups, 1, 1), wg: t * t, macs: 2 * n * i * o, bytes: 4 * (n * o + 2 * n * i + 2 * o * i + o) }
    }
    pub fn invocations(&self) -> u64 {
        (self.groups.0 * self.groups.1 * self.groups.2) as u64 * self.wg as u64
    }
}

/// Words of the metrics buffer (mirrors `struct Metrics` in cross_entropy.wgsl).
pub const M_LOSS_SUM: usize = 0;
pub const M_CORRECT: usize = 1;
pub const M_SEEN: usize = 2;
pub const M_STEPS: usize = 3;
pub const M_BAD_STEP: usize = 4;
pub const M_EPOCH_STEP: usize = 5;
pub const M_GLOBAL_STEP: usize = 6;
pub const M_EVAL_BATCH: usize = 7;
pub const M_CONFUSION: usize = 8;
pub const M_WORDS: usize = M_CONFUSION + CLASSES * CLASSES;

/// Uniform of conv_pool.wgsl (see its Params for the fields); sizes are override constants
/// (`ConvShape`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct ConvParams {
    pub n: u32,
    pub inp: u32,
    pub out: u32,
    pub pool: u32,
    pub arg: u32,
    pub dpool: u32,
    pub dinp: u32,
    pub weight: u32,
    pub bias: u32,
    pub _pad: [u32; 3],
}

/// Uniform of linear.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct LinearParams {
    pub n: u32,
    pub in_f: u32,
    pub out_f: u32,
    pub relu: u32,
    pub inp_relu: u32,
    pub inp: u32,
    pub out: u32,
    pub dinp: u32,
    pub dout: u32,
    pub weight: u32,
    pub bias: u32,
    /// linear_backward: the workgroups of the weight half, ceil(OUT/T) x ceil(IN/T)
    pub dw_groups: u32,
}

impl LinearParams {
    /// `dw_groups` as linear_backward needs it (tiles of `linear_tile(n)`).
    pub fn with_dw_groups(self) -> LinearParams {
        let t = linear_tile(self.n);
        LinearParams { dw_groups: self.out_f.div_ceil(t) * self.in_f.div_ceil(t), ..self }
    }
}

/// Uniform of gather.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct GatherParams {
    pub n: u32,
    pub mode: u32,
    pub count: u32,
    pub chunk_records: u32,
    pub x: u32,
    pub y: u32,
    /// bit 0 flip, bit 1 crop (`Augment::bits`); 0 for evaluation
    pub aug: u32,
    /// this epoch's augmentation key
    pub key: u32,
}

/// Uniform of cross_entropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct CeParams {
    pub n: u32,
    pub count: u32,
    pub logits: u32,
    pub dlogits: u32,
    pub y: u32,
    /// Label smoothing (0: the plain loss)
    pub smoothing: f32,
    pub _pad: [u32; 2],
}

/// Uniform of sgd.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct SgdParams {
    /// P / 4: the kernel reads vec4s
    pub len: u32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

#[derive(Clone, Copy)]
enum B {
    Uniform,
    Read,
    ReadWrite,
}

fn bind_layout(device: &wgpu::Device, label: &str, kinds: &[B]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match k {
                B::Uniform => wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
                B::Read => wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only: true }, has_dynamic_offset: false, min_binding_size: None },
                B::ReadWrite => wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only: false }, has_dynamic_offset: false, min_binding_size: None },
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries })
}

/// A compiled pipeline: (kernel, override constants, layer) and the pipeline.
type CachedPipeline = (KernelId, Vec<(&'static str, u32)>, String, wgpu::ComputePipeline);

/// The compiled shader modules, one bind-group layout per file, and the pipelines made from
/// them (one per entry point, set of override constants and layer, made on first use and kept).
pub struct Kernels {
    modules: Vec<wgpu::ShaderModule>,
    bgls: Vec<wgpu::BindGroupLayout>,
    layouts: Vec<wgpu::PipelineLayout>,
    cache: Mutex<Vec<CachedPipeline>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Kernels {
        use B::*;
        // Any network's kernels share one binding list: the uniform, acts, ints, the
        // parameters (read), their gradients, the scratch, the buffers (running statistics).
        let net: &[B] = &[Uniform, ReadWrite, ReadWrite, Read, ReadWrite, ReadWrite, ReadWrite];
        let sources: [(&str, &str, &[B]); 10] = [
            ("gather.wgsl", include_str!("../../shaders/gather.wgsl"), &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite]),
            ("conv_pool.wgsl", include_str!("../../shaders/conv_pool.wgsl"), &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite]),
            ("linear.wgsl", include_str!("../../shaders/linear.wgsl"), &[Uniform, Read, ReadWrite, ReadWrite]),
            ("cross_entropy.wgsl", include_str!("../../shaders/cross_entropy.wgsl"), &[Uniform, ReadWrite, ReadWrite, ReadWrite, ReadWrite]),
            ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl"), &[Uniform, ReadWrite, Read, ReadWrite]),
            ("net_gemm.wgsl", include_str!("../../shaders/net_gemm.wgsl"), net),
            ("net_norm.wgsl", include_str!("../../shaders/net_norm.wgsl"), net),
            ("net_pool.wgsl", include_str!("../../shaders/net_pool.wgsl"), net),
            ("net_elementwise.wgsl", include_str!("../../shaders/net_elementwise.wgsl"), net),
            ("net_optim.wgsl", include_str!("../../shaders/net_optim.wgsl"), &[Uniform, ReadWrite, Read, ReadWrite, Read, ReadWrite, ReadWrite]),
        ];
        let mut k = Kernels { modules: vec![], bgls: vec![], layouts: vec![], cache: Mutex::new(vec![]) };
        for (label, src, kinds) in sources {
            k.modules.push(device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(src.into()) }));
            let bgl = bind_layout(device, &format!("{label} bindings"), kinds);
            k.layouts.push(device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: Some(label), bind_group_layouts: &[Some(&bgl)], immediate_size: 0 }));
            k.bgls.push(bgl);
        }
        k
    }

    /// The pipeline of `id` with these override constants for layer `layer`, made on first use.
    pub fn pipeline(&self, device: &wgpu::Device, id: KernelId, constants: &[(&'static str, u32)], layer: &str) -> wgpu::ComputePipeline {
        let mut cache = self.cache.lock().unwrap();
        if let Some((_, _, _, p)) = cache.iter().find(|(i, c, l, _)| *i == id && c.as_slice() == constants && l == layer) {
            return p.clone();
        }
        let (file, entry) = id.entry();
        let consts: Vec<(&str, f64)> = constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let label = format!("{entry} {layer} {constants:?}");
        let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&self.layouts[file]),
            module: &self.modules[file],
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &consts, ..Default::default() },
            cache: None,
        });
        cache.push((id, constants.to_vec(), layer.to_string(), p.clone()));
        p
    }

    pub fn bgl(&self, id: KernelId) -> &wgpu::BindGroupLayout {
        &self.bgls[id.entry().0]
    }
}
