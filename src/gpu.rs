//! The GPU engine: the WGSL kernels of shaders/ dispatched through wgpu (natively on any
//! adapter, and on WebGPU in the browser).
//!
//! Memory: parameters, gradients and momentum are three packed buffers [P] (model::Layout
//! offsets); each batch size in use (training N, evaluation M) has one `acts` buffer (every
//! activation and activation gradient at a named offset, see `ActLayout`) and one `ints` buffer
//! (labels and pooling argmaxes). The training and test sets are uploaded once as u8 records.
//! A training step is one command buffer of 21 dispatches; loss and accuracy accumulate in the
//! `metrics` buffer on the GPU and come back only through `read_back`, the one async readback.

use crate::augment::Augment;
use crate::cpu::Inside;
use crate::data::Split;
use crate::model::*;
use bytemuck::{Pod, Zeroable};
use std::fmt;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// A GPU problem: no adapter, a device error, a limit the data or batch exceeds.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuError(pub String);

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for GpuError {}

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

/// Workgroup size of every 1-D kernel (the `WG` constant of each shader).
const WG: u32 = 64;
/// Workgroup size of kernels with few, long-running invocations (WG_W in conv2d.wgsl).
const WG_SMALL: u32 = 16;
/// Workgroups per dimension are limited to 65,535: larger grids fold into y.
const MAX_GROUPS_X: u32 = 32768;

/// The device, its queue, the compiled kernels, and what it is, for the user.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)" and the like.
    pub adapter: String,
    /// A software adapter (lavapipe, SwiftShader, WARP): the GPU is emulated on the CPU.
    pub software: bool,
    /// The adapter the device was opened on, and its instance when this code made it (the
    /// `burn` engine opens its own device on the same adapter).
    pub wgpu_adapter: wgpu::Adapter,
    pub instance: Option<wgpu::Instance>,
    kernels: Arc<Kernels>,
    /// The first uncaptured device error (a validation error or a lost device), reported at
    /// the next readback instead of panicking.
    error: Arc<Mutex<Option<String>>>,
}

/// The compiled shader modules, one bind-group layout per file, and the pipelines made from
/// them (one per entry point and set of override constants, made on first use and kept).
struct Kernels {
    modules: Vec<wgpu::ShaderModule>,
    bgls: Vec<wgpu::BindGroupLayout>,
    layouts: Vec<wgpu::PipelineLayout>,
    cache: Mutex<Vec<CachedPipeline>>,
}

/// The shader files, in the order of `Kernels::modules`.
const GATHER: usize = 0;
const CONV: usize = 1;
const POOL: usize = 2;
const LINEAR: usize = 3;
const CE: usize = 4;
const SGD: usize = 5;

/// Every kernel entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelId {
    Gather,
    Conv2dForward,
    Conv2dBackwardInput,
    Conv2dBackwardWeight,
    MaxpoolForward,
    MaxpoolBackward,
    LinearForward,
    LinearBackwardInput,
    LinearBackwardWeight,
    CrossEntropy,
    EvalAccumulate,
    SgdUpdate,
}

impl KernelId {
    /// (shader file index, entry point name)
    fn entry(self) -> (usize, &'static str) {
        match self {
            KernelId::Gather => (GATHER, "gather"),
            KernelId::Conv2dForward => (CONV, "conv2d_forward"),
            KernelId::Conv2dBackwardInput => (CONV, "conv2d_backward_input"),
            KernelId::Conv2dBackwardWeight => (CONV, "conv2d_backward_weight"),
            KernelId::MaxpoolForward => (POOL, "maxpool_forward"),
            KernelId::MaxpoolBackward => (POOL, "maxpool_backward"),
            KernelId::LinearForward => (LINEAR, "linear_forward"),
            KernelId::LinearBackwardInput => (LINEAR, "linear_backward_input"),
            KernelId::LinearBackwardWeight => (LINEAR, "linear_backward_weight"),
            KernelId::CrossEntropy => (CE, "cross_entropy"),
            KernelId::EvalAccumulate => (CE, "eval_accumulate"),
            KernelId::SgdUpdate => (SGD, "sgd_update"),
        }
    }
}

/// How to launch a kernel: its override constants (register block sizes) and its grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub constants: Vec<(&'static str, u32)>,
    pub groups: (u32, u32, u32),
}

impl Launch {
    /// A 1-D kernel over `threads` invocations.
    pub fn flat(threads: usize) -> Launch {
        let (x, y) = grid(threads);
        Launch { constants: vec![], groups: (x, y, 1) }
    }
    /// conv2d_forward: a tile of 4 output columns x 8 output channels per invocation
    /// (conv2d.wgsl); needs K <= 5.
    pub fn conv2d_forward(p: &ConvParams, window: ActWindow) -> Launch {
        assert!(p.k <= 5, "conv2d_forward unrolls K <= 5 taps");
        let (oh, ow) = (p.h - p.k + 1, p.w - p.k + 1);
        Launch { constants: window.constants(), groups: ((oh * ow.div_ceil(4)).div_ceil(WG), p.oc.div_ceil(8), p.n) }
    }
    /// conv2d_backward_input: a tile of 4 input columns x 8 input channels per invocation;
    /// needs K <= 5.
    pub fn conv2d_backward_input(p: &ConvParams, window: ActWindow) -> Launch {
        assert!(p.k <= 5, "conv2d_backward_input unrolls K <= 5 taps");
        Launch { constants: window.constants(), groups: ((p.h * p.w.div_ceil(4)).div_ceil(WG), p.c.div_ceil(8), p.n) }
    }
    /// conv2d_backward_weight: one invocation per (c, ky) and pair of output channels, in
    /// workgroups of WG_SMALL; needs K <= 5.
    pub fn conv2d_backward_weight(p: &ConvParams, window: ActWindow) -> Launch {
        assert!(p.k <= 5, "conv2d_backward_weight keeps K <= 5 weights per row in registers");
        Launch { constants: window.constants(), groups: ((p.c * p.k).div_ceil(WG_SMALL), p.oc.div_ceil(2), 1) }
    }
    /// linear_forward with NB batch rows per invocation (NB <= MAX_BLOCK); `small`: inp is read
    /// through the uniform window (it must fit: `fits_window(N * IN)`).
    pub fn linear_forward(p: &LinearParams, nb: u32, small: bool) -> Launch {
        Launch { constants: vec![("NB", nb), ("SMALL", small as u32)], groups: (p.out_f.div_ceil(WG), p.n.div_ceil(nb), 1) }
    }
    /// linear_backward_input with NB batch rows per invocation; `small`: dout through the window.
    pub fn linear_backward_input(p: &LinearParams, nb: u32, small: bool) -> Launch {
        Launch { constants: vec![("NB", nb), ("SMALL", small as u32)], groups: (p.in_f.div_ceil(WG), p.n.div_ceil(nb), 1) }
    }
    /// linear_backward_weight with OB output features per invocation; `small`: dout through the
    /// window.
    pub fn linear_backward_weight(p: &LinearParams, ob: u32, small: bool) -> Launch {
        Launch { constants: vec![("OB", ob), ("SMALL", small as u32)], groups: (p.in_f.div_ceil(WG), p.out_f.div_ceil(ob), 1) }
    }
}

const ALL_KERNELS: [KernelId; 12] = [
    KernelId::Gather,
    KernelId::Conv2dForward,
    KernelId::Conv2dBackwardInput,
    KernelId::Conv2dBackwardWeight,
    KernelId::MaxpoolForward,
    KernelId::MaxpoolBackward,
    KernelId::LinearForward,
    KernelId::LinearBackwardInput,
    KernelId::LinearBackwardWeight,
    KernelId::CrossEntropy,
    KernelId::EvalAccumulate,
    KernelId::SgdUpdate,
];

/// The most batch rows / output features a linear kernel keeps per invocation (MAX_BLOCK in
/// linear.wgsl).
pub const MAX_BLOCK: u32 = 16;

/// Bytes of the uniform windows of conv2d.wgsl (weights) and linear.wgsl (activations):
/// WebGPU's default uniform binding limit.
pub const WEIGHT_WINDOW: u64 = 65536;

/// Regions of the activation-windows buffer of a pass (6 linear, 4 conv).
const WINDOW_REGIONS: u64 = 10;

/// Which activation a conv kernel reads through its uniform window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActWindow {
    /// none: storage loads
    None,
    /// inp (SMALL_IN)
    Inp,
    /// dout (SMALL_DOUT)
    Dout,
}

impl ActWindow {
    fn constants(self) -> Vec<(&'static str, u32)> {
        vec![("SMALL_IN", (self == ActWindow::Inp) as u32), ("SMALL_DOUT", (self == ActWindow::Dout) as u32)]
    }
}

/// Whether a tensor of `floats` fits a uniform window.
pub fn fits_window(floats: u32) -> bool {
    floats as u64 * 4 <= WEIGHT_WINDOW
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

impl Kernels {
    fn new(device: &wgpu::Device) -> Kernels {
        use B::*;
        let sources: [(&str, &str, &[B]); 6] = [
            ("gather.wgsl", include_str!("../shaders/gather.wgsl"), &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite]),
            ("conv2d.wgsl", include_str!("../shaders/conv2d.wgsl"), &[Uniform, Read, ReadWrite, ReadWrite, Uniform, Uniform]),
            ("maxpool.wgsl", include_str!("../shaders/maxpool.wgsl"), &[Uniform, ReadWrite, ReadWrite]),
            ("linear.wgsl", include_str!("../shaders/linear.wgsl"), &[Uniform, Read, ReadWrite, ReadWrite, Uniform]),
            ("cross_entropy.wgsl", include_str!("../shaders/cross_entropy.wgsl"), &[Uniform, ReadWrite, ReadWrite, ReadWrite, ReadWrite]),
            ("sgd.wgsl", include_str!("../shaders/sgd.wgsl"), &[Uniform, ReadWrite, Read, ReadWrite]),
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
    /// Each layer gets pipelines of its own: lavapipe specialises a pipeline for the uniform
    /// values it sees (loop bounds) and recompiles it when another layer's sizes come along,
    /// which cost milliseconds per dispatch when layers shared one.
    fn pipeline(&self, device: &wgpu::Device, id: KernelId, constants: &[(&'static str, u32)], layer: &str) -> wgpu::ComputePipeline {
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

    fn bgl(&self, id: KernelId) -> &wgpu::BindGroupLayout {
        &self.bgls[id.entry().0]
    }
}

impl Gpu {
    /// Find an adapter (high performance preferred) and open a device with WebGPU's default
    /// limits, so everything that runs here runs in a browser tab too.
    pub async fn new() -> Result<Gpu, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                GpuError(format!("no GPU adapter found ({e}); on Linux without a GPU install a software Vulkan driver (apt-get install mesa-vulkan-drivers), or use --engine cpu"))
            })?;
        let mut gpu = Self::from_adapter(&adapter).await?;
        gpu.instance = Some(instance);
        Ok(gpu)
    }

    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        // Browsers may leave the name empty (WebGPU exposes little about the adapter).
        let shown = [&info.name, &info.driver, &info.driver_info].into_iter().find(|s| !s.is_empty()).cloned().unwrap_or_else(|| "unnamed adapter".into());
        let name = format!("{shown} ({:?}, {:?})", info.backend, info.device_type);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor { label: Some("tabcnn device"), required_limits: wgpu::Limits::default(), ..Default::default() })
            .await
            .map_err(|e| GpuError(format!("adapter {name} cannot open a device with WebGPU's default limits: {e}")))?;
        let error = Arc::new(Mutex::new(None::<String>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                *s = Some(format!("GPU error: {e}"));
            }
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                *s = Some(if msg.is_empty() { format!("GPU device lost ({reason:?})") } else { format!("GPU device lost ({reason:?}): {msg}") });
            }
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = Arc::new(Kernels::new(&device));
        // Compile every kernel now so a shader error surfaces here, not mid-training.
        for id in ALL_KERNELS {
            kernels.pipeline(&device, id, &[], "");
        }
        if let Some(e) = scope.pop().await {
            return Err(GpuError(format!("the kernels do not compile on {name}: {e}")));
        }
        Ok(Gpu { device, queue, adapter: name, software: info.device_type == wgpu::DeviceType::Cpu, wgpu_adapter: adapter.clone(), instance: None, kernels, error })
    }

    /// The first device error since the device was made, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    fn storage_init(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        if contents.is_empty() {
            return self.storage(label, 4);
        }
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        })
    }

    fn uniform<T: Pod>(&self, label: &str, v: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(v),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    fn staging(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A bind group of whole buffers at bindings 0.., then `windows` (buffer, byte offset):
    /// WEIGHT_WINDOW-byte uniform views into buffers (weights, activation copies).
    fn bind(&self, label: &str, layout: &wgpu::BindGroupLayout, buffers: &[&wgpu::Buffer], windows: &[(&wgpu::Buffer, u64)]) -> wgpu::BindGroup {
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        for (k, &(buffer, offset)) in windows.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: (buffers.len() + k) as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(WEIGHT_WINDOW) }),
            });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
    }

    /// Copy `size` bytes at `offset` of `src` into `staging` and read them back: the one
    /// readback path. map_async + a future; natively `poll` drives the callback, on the web the
    /// browser's event loop does (poll is a no-op there), so this never spins on the web.
    pub async fn read_back(&self, src: &wgpu::Buffer, offset: u64, size: u64, staging: &wgpu::Buffer, then: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<Vec<u8>, GpuError> {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(src, offset, staging, 0, size);
        then(&mut enc);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(0..size);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let mapped = rx.await.map_err(|_| GpuError("readback cancelled: the GPU device was lost".into()))?;
        if let Some(e) = self.error() {
            return Err(GpuError(e));
        }
        mapped.map_err(|e| GpuError(format!("reading a buffer back from the GPU failed: {e}")))?;
        let bytes = slice.get_mapped_range().map_err(|e| GpuError(format!("mapping a readback buffer failed: {e:?}")))?.to_vec();
        staging.unmap();
        Ok(bytes)
    }
}

/// Uniform of conv2d.wgsl (see its Params for the fields).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct ConvParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub oc: u32,
    pub k: u32,
    pub relu: u32,
    pub inp: u32,
    pub out: u32,
    pub dinp: u32,
    pub dout: u32,
    pub weight: u32,
    pub bias: u32,
    /// offset in acts of the tensor the activation window holds (inp or dout)
    pub window: u32,
    pub _pad: [u32; 2],
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
    /// offset in acts of the tensor the uniform window holds (inp forward, dout backward)
    pub window: u32,
    pub _pad: [u32; 4],
}

/// Uniform of maxpool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub struct PoolParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub inp: u32,
    pub out: u32,
    pub argmax: u32,
    pub dinp: u32,
    pub dout: u32,
    pub _pad: [u32; 3],
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
    pub _pad: [u32; 3],
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

/// Named offsets (in floats, 64-aligned) of the activations of a batch of N in `acts`, and of
/// the labels and argmaxes in `ints`. Gradient tensors exist only when `backward` is set.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActLayout {
    pub n: usize,
    pub x: usize,       // [N,3,32,32]
    pub h1: usize,      // [N,C1,28,28] relu(conv1) (LeNet: C1 = 6, C2 = 16, F1 = 120, F2 = 84)
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
    pub dh2: usize,     // [N,C2,10,10]
    pub dp1: usize,     // [N,C1,14,14]
    pub dh1: usize,     // [N,C1,28,28]
    pub acts_len: usize,
    pub y: usize,    // ints: [N] labels
    pub arg1: usize, // ints: [N,C1,14,14]
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
            l.dh2 = take(c2 * H2 * H2);
            l.dp1 = take(c1 * P1 * P1);
            l.dh1 = take(c1 * H1 * H1);
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
}

/// One recorded dispatch: a kernel, its bindings and its grid.
struct Dispatch {
    /// A copy (acts -> activation windows) that must run before this dispatch: the linear
    /// kernels read the activations a whole workgroup shares through a uniform window, and
    /// WebGPU forbids binding acts as uniform and as writable storage in one dispatch.
    copy_before: Option<WindowCopy>,
    label: String,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: (u32, u32, u32),
}

/// Copy `size` bytes at `src_off` of `src` (acts) to `dst_off` of `dst` (the windows buffer).
#[derive(Clone)]
struct WindowCopy {
    src: wgpu::Buffer,
    src_off: u64,
    dst: wgpu::Buffer,
    dst_off: u64,
    size: u64,
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

/// A dataset on the GPU: images as u8 records packed in u32 words, split over at most two
/// buffers (each within the 128 MiB binding limit), labels as u32, and the order to read them.
struct DataBufs {
    images: Vec<wgpu::Buffer>,
    labels: wgpu::Buffer,
    index: wgpu::Buffer,
    count: usize,
    chunk_records: usize,
}

fn upload_split(gpu: &Gpu, name: &str, s: &Split) -> Result<DataBufs, GpuError> {
    let limits = gpu.device.limits();
    let max_bind = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let chunk_records = (max_bind / IMG_LEN as u64) as usize;
    let count = s.len();
    if count == 0 {
        return Err(GpuError(format!("the {name} set is empty")));
    }
    if count > 2 * chunk_records {
        return Err(GpuError(format!(
            "the {name} set has {count} records; the GPU engine holds at most {} ({} per 128 MiB binding, two bindings)",
            2 * chunk_records,
            chunk_records
        )));
    }
    let mut images = Vec::new();
    for (i, part) in s.images.chunks(chunk_records * IMG_LEN).enumerate() {
        images.push(gpu.storage_init(&format!("{name} images[{i}] (u8 records [R,3,32,32])"), part));
    }
    let labels: Vec<u32> = s.labels.iter().map(|&l| l as u32).collect();
    let identity: Vec<u32> = (0..count as u32).collect();
    Ok(DataBufs {
        images,
        labels: gpu.storage_init(&format!("{name} labels [R]"), bytemuck::cast_slice(&labels)),
        index: gpu.storage_init(&format!("{name} index [R]"), bytemuck::cast_slice(&identity)),
        count,
        chunk_records,
    })
}

/// A forward (and, for training, backward) pass over a batch of N: its buffers and dispatches.
struct Pass {
    layout: ActLayout,
    acts: wgpu::Buffer,
    _ints: wgpu::Buffer,
    _windows: wgpu::Buffer,
    _uniforms: Vec<wgpu::Buffer>,
    /// The gather's uniform and its contents (augmentation changes them each epoch).
    gather: (wgpu::Buffer, GatherParams),
    forward: Vec<Dispatch>,
    /// Loss (training) or accumulation (evaluation) after the forward.
    head: Dispatch,
    backward: Vec<Dispatch>,
}

struct Shared<'a> {
    layout: &'a Layout,
    params: &'a wgpu::Buffer,
    grads: &'a wgpu::Buffer,
    metrics: &'a wgpu::Buffer,
    preds: &'a wgpu::Buffer,
}

fn build_pass(gpu: &Gpu, name: &str, n: usize, train: bool, data: &DataBufs, sh: &Shared) -> Result<Pass, GpuError> {
    let k = &gpu.kernels;
    let lay = sh.layout;
    let arch = lay.arch;
    let Arch { c1, c2, f1, f2 } = arch;
    let fc1_in = arch.fc1_in();
    let l = ActLayout::new(n, train, arch);
    let max_bind = gpu.device.limits().max_storage_buffer_binding_size as usize;
    if l.acts_len * 4 > max_bind {
        return Err(GpuError(format!("batch {n} needs {} MiB of activations, over the {} MiB binding limit: use a smaller batch", (l.acts_len * 4) >> 20, max_bind >> 20)));
    }
    let acts = gpu.storage(&format!("{name} acts (batch {n})"), (l.acts_len * 4) as u64);
    let ints = gpu.storage(&format!("{name} ints (labels, argmax; batch {n})"), (l.ints_len * 4) as u64);
    let off = |i: usize| lay.specs[i].offset as u32;
    let mut uniforms = Vec::new();
    // Activation windows: up to WINDOW_REGIONS regions of 64 KiB (conv inputs and output
    // gradients, fc inputs and output gradients), filled by copies from acts inside the step.
    let windows = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(&format!("{name} activation windows ({WINDOW_REGIONS} x 64 KiB)")),
        size: WINDOW_REGIONS * WEIGHT_WINDOW,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    // One dispatch. Conv kernels see their weights through a window of params, then an
    // activation window region; linear kernels an activation window region. Region 0 is bound
    // (and not read) when the kernel is not SMALL.
    let mut mk = |label: String, id: KernelId, uni: wgpu::Buffer, bufs: &[&wgpu::Buffer], launch: Launch, act_window: Option<(u64, Option<WindowCopy>)>| {
        let mut all: Vec<&wgpu::Buffer> = vec![&uni];
        all.extend_from_slice(bufs);
        let (region, copy_before) = act_window.unwrap_or((0, None));
        let bind = match id {
            KernelId::Conv2dForward | KernelId::Conv2dBackwardInput | KernelId::Conv2dBackwardWeight => {
                let weights = if label.contains("conv1") { off(CONV1_W) } else { off(CONV2_W) } as u64 * 4;
                gpu.bind(&label, k.bgl(id), &all, &[(sh.params, weights), (&windows, region)])
            }
            KernelId::LinearForward | KernelId::LinearBackwardInput | KernelId::LinearBackwardWeight => gpu.bind(&label, k.bgl(id), &all, &[(&windows, region)]),
            _ => gpu.bind(&label, k.bgl(id), &all, &[]),
        };
        uniforms.push(uni);
        Dispatch { copy_before, pipeline: k.pipeline(&gpu.device, id, &launch.constants, &label), label, bind, groups: launch.groups }
    };
    let u32_ = |v: usize| v as u32;
    let img1 = data.images.get(1).unwrap_or(&data.images[0]);

    let g =
        GatherParams { n: u32_(n), mode: if train { 0 } else { 1 }, count: u32_(data.count), chunk_records: u32_(data.chunk_records), x: u32_(l.x), y: u32_(l.y), aug: 0, key: 0 };
    let gather_u = gpu.uniform(&format!("{name} gather params"), &g);
    let gather = (gather_u.clone(), g);
    let conv1 = ConvParams {
        n: u32_(n),
        c: C1_IN as u32,
        h: IMG as u32,
        w: IMG as u32,
        oc: c1 as u32,
        k: K as u32,
        relu: 1,
        inp: u32_(l.x),
        out: u32_(l.h1),
        dinp: 0,
        dout: u32_(l.dh1),
        weight: off(CONV1_W),
        bias: off(CONV1_B),
        window: 0,
        _pad: [0; 2],
    };
    let pool1 = PoolParams {
        n: u32_(n),
        c: c1 as u32,
        h: H1 as u32,
        w: H1 as u32,
        inp: u32_(l.h1),
        out: u32_(l.p1),
        argmax: u32_(l.arg1),
        dinp: u32_(l.dh1),
        dout: u32_(l.dp1),
        _pad: [0; 3],
    };
    let conv2 = ConvParams {
        n: u32_(n),
        c: c1 as u32,
        h: P1 as u32,
        w: P1 as u32,
        oc: c2 as u32,
        k: K as u32,
        relu: 1,
        inp: u32_(l.p1),
        out: u32_(l.h2),
        dinp: u32_(l.dp1),
        dout: u32_(l.dh2),
        weight: off(CONV2_W),
        bias: off(CONV2_B),
        window: 0,
        _pad: [0; 2],
    };
    let pool2 = PoolParams {
        n: u32_(n),
        c: c2 as u32,
        h: H2 as u32,
        w: H2 as u32,
        inp: u32_(l.h2),
        out: u32_(l.p2),
        argmax: u32_(l.arg2),
        dinp: u32_(l.dh2),
        dout: u32_(l.dp2),
        _pad: [0; 3],
    };
    let fc1 = LinearParams {
        n: u32_(n),
        in_f: fc1_in as u32,
        out_f: f1 as u32,
        relu: 1,
        inp_relu: 0,
        inp: u32_(l.p2),
        out: u32_(l.a1),
        dinp: u32_(l.dp2),
        dout: u32_(l.da1),
        weight: off(FC1_W),
        bias: off(FC1_B),
        window: 0,
        _pad: [0; 4],
    };
    let fc2 = LinearParams {
        n: u32_(n),
        in_f: f1 as u32,
        out_f: f2 as u32,
        relu: 1,
        inp_relu: 1,
        inp: u32_(l.a1),
        out: u32_(l.a2),
        dinp: u32_(l.da1),
        dout: u32_(l.da2),
        weight: off(FC2_W),
        bias: off(FC2_B),
        window: 0,
        _pad: [0; 4],
    };
    let fc3 = LinearParams {
        n: u32_(n),
        in_f: f2 as u32,
        out_f: CLASSES as u32,
        relu: 0,
        inp_relu: 1,
        inp: u32_(l.a2),
        out: u32_(l.logits),
        dinp: u32_(l.da2),
        dout: u32_(l.dlogits),
        weight: off(FC3_W),
        bias: off(FC3_B),
        window: 0,
        _pad: [0; 4],
    };
    let ce = CeParams { n: u32_(n), count: u32_(data.count), logits: u32_(l.logits), dlogits: u32_(l.dlogits), y: u32_(l.y), _pad: [0; 3] };

    // Batch rows per invocation of the linear kernels.
    let nb = (n as u32).min(MAX_BLOCK);
    let mut forward = Vec::new();
    forward.push(mk(
        format!("{name} gather"),
        KernelId::Gather,
        gather_u,
        &[&data.images[0], img1, &data.labels, &data.index, sh.metrics, &acts, &ints],
        Launch::flat(n * IMG_LEN / 4),
        None,
    ));
    let pool1_u = gpu.uniform(&format!("{name} pool1 params"), &pool1);
    let pool2_u = gpu.uniform(&format!("{name} pool2 params"), &pool2);
    // Each linear layer reads the activations its workgroups share (inp forward, dout backward)
    // through a window region when they fit in 64 KiB, copied from acts just before.
    let mut region = 0u64;
    // A window region holding a copy of `floats` floats of acts at `at`, if they fit.
    let mut window_for = |at: u32, floats: u32| -> Option<(u64, WindowCopy)> {
        if !fits_window(floats) {
            return None;
        }
        let dst_off = region * WEIGHT_WINDOW;
        region += 1;
        assert!(region <= WINDOW_REGIONS);
        Some((dst_off, WindowCopy { src: acts.clone(), src_off: at as u64 * 4, dst: windows.clone(), dst_off, size: floats as u64 * 4 }))
    };
    // Conv kernels: forward reads inp through a window; the backward reads dout (the weight
    // gradient falls back to inp, whose copy from the forward is still there).
    let x_win = window_for(conv1.inp, conv1.n * conv1.c * conv1.h * conv1.w);
    let p1_win = window_for(conv2.inp, conv2.n * conv2.c * conv2.h * conv2.w);
    let dh2_win = if train { window_for(conv2.dout, conv2.n * conv2.oc * (conv2.h - conv2.k + 1) * (conv2.w - conv2.k + 1)) } else { None };
    let dh1_win = if train { window_for(conv1.dout, conv1.n * conv1.oc * (conv1.h - conv1.k + 1) * (conv1.w - conv1.k + 1)) } else { None };
    // (uniform, which window, region and copy) of one conv dispatch
    let conv_disp = |nm: &str, p: &ConvParams, which: ActWindow, win: &Option<(u64, WindowCopy)>, copy: bool| {
        let at = if which == ActWindow::Dout { p.dout } else { p.inp };
        let (which, at) = if win.is_some() { (which, at) } else { (ActWindow::None, 0) };
        let uni = gpu.uniform(&format!("{name} {nm} params ({which:?} window)"), &ConvParams { window: at, ..*p });
        (uni, which, win.as_ref().map(|(r, c)| (*r, copy.then(|| c.clone()))))
    };
    let c1f = conv_disp("conv1", &conv1, ActWindow::Inp, &x_win, true);
    let c2f = conv_disp("conv2", &conv2, ActWindow::Inp, &p1_win, true);
    let c2bw = conv_disp("conv2", &conv2, ActWindow::Dout, &dh2_win, true);
    let c2bi = conv_disp("conv2", &conv2, ActWindow::Dout, &dh2_win, false);
    let c1bw = if dh1_win.is_some() { conv_disp("conv1", &conv1, ActWindow::Dout, &dh1_win, true) } else { conv_disp("conv1", &conv1, ActWindow::Inp, &x_win, false) };
    let mut linear = |nm: &str, p: &LinearParams, backward: bool| -> (wgpu::Buffer, bool, Option<(u64, Option<WindowCopy>)>) {
        let (at, floats) = if backward { (p.dout, p.n * p.out_f) } else { (p.inp, p.n * p.in_f) };
        let params = LinearParams { window: at, ..*p };
        let uni = gpu.uniform(&format!("{name} {nm} {} params", if backward { "backward" } else { "forward" }), &params);
        match window_for(at, floats) {
            None => (uni, false, None),
            Some((r, c)) => (uni, true, Some((r, Some(c)))),
        }
    };
    let fc1f = linear("fc1", &fc1, false);
    let fc2f = linear("fc2", &fc2, false);
    let fc3f = linear("fc3", &fc3, false);
    let (fc3b, fc2b, fc1b) = if train { (Some(linear("fc3", &fc3, true)), Some(linear("fc2", &fc2, true)), Some(linear("fc1", &fc1, true))) } else { (None, None, None) };
    let conv = [sh.params, &acts, sh.grads];
    let pool = [&acts, &ints];
    forward.push(mk(format!("{name} conv1 forward"), KernelId::Conv2dForward, c1f.0, &conv, Launch::conv2d_forward(&conv1, c1f.1), c1f.2));
    forward.push(mk(format!("{name} pool1 forward"), KernelId::MaxpoolForward, pool1_u.clone(), &pool, Launch::flat(n * c1 * P1 * P1), None));
    forward.push(mk(format!("{name} conv2 forward"), KernelId::Conv2dForward, c2f.0, &conv, Launch::conv2d_forward(&conv2, c2f.1), c2f.2));
    forward.push(mk(format!("{name} pool2 forward"), KernelId::MaxpoolForward, pool2_u.clone(), &pool, Launch::flat(n * fc1_in), None));
    forward.push(mk(format!("{name} fc1 forward"), KernelId::LinearForward, fc1f.0, &conv, Launch::linear_forward(&fc1, nb, fc1f.1), fc1f.2));
    forward.push(mk(format!("{name} fc2 forward"), KernelId::LinearForward, fc2f.0, &conv, Launch::linear_forward(&fc2, nb, fc2f.1), fc2f.2));
    forward.push(mk(format!("{name} fc3 forward"), KernelId::LinearForward, fc3f.0, &conv, Launch::linear_forward(&fc3, nb, fc3f.1), fc3f.2));
    let ce_u = gpu.uniform(&format!("{name} cross_entropy params"), &ce);
    let ce_bufs = [&acts, &ints, sh.metrics, sh.preds];
    let head = if train {
        mk(format!("{name} cross_entropy"), KernelId::CrossEntropy, ce_u, &ce_bufs, Launch::flat(WG as usize), None)
    } else {
        mk(format!("{name} eval_accumulate"), KernelId::EvalAccumulate, ce_u, &ce_bufs, Launch::flat(WG as usize), None)
    };
    let mut backward = Vec::new();
    if train {
        // fc3, fc2, fc1: the weight gradient, then the input gradient, sharing one window whose
        // copy runs before the first of the two.
        for (nm, p, (uni, small, win)) in [("fc3", &fc3, fc3b.unwrap()), ("fc2", &fc2, fc2b.unwrap()), ("fc1", &fc1, fc1b.unwrap())] {
            backward.push(mk(
                format!("{name} {nm} backward_weight"),
                KernelId::LinearBackwardWeight,
                uni.clone(),
                &conv,
                Launch::linear_backward_weight(p, 12.min(p.out_f), small),
                win.clone(),
            ));
            backward.push(mk(
                format!("{name} {nm} backward_input"),
                KernelId::LinearBackwardInput,
                uni,
                &conv,
                Launch::linear_backward_input(p, nb, small),
                win.map(|(r, _)| (r, None)),
            ));
        }
        backward.push(mk(format!("{name} pool2 backward"), KernelId::MaxpoolBackward, pool2_u, &pool, Launch::flat(n * fc1_in), None));
        backward.push(mk(format!("{name} conv2 backward_weight"), KernelId::Conv2dBackwardWeight, c2bw.0, &conv, Launch::conv2d_backward_weight(&conv2, c2bw.1), c2bw.2));
        backward.push(mk(format!("{name} conv2 backward_input"), KernelId::Conv2dBackwardInput, c2bi.0, &conv, Launch::conv2d_backward_input(&conv2, c2bi.1), c2bi.2));
        backward.push(mk(format!("{name} pool1 backward"), KernelId::MaxpoolBackward, pool1_u, &pool, Launch::flat(n * c1 * P1 * P1), None));
        backward.push(mk(format!("{name} conv1 backward_weight"), KernelId::Conv2dBackwardWeight, c1bw.0, &conv, Launch::conv2d_backward_weight(&conv1, c1bw.1), c1bw.2));
    }
    Ok(Pass { layout: l, acts, _ints: ints, _windows: windows, _uniforms: uniforms, gather, forward, head, backward })
}

fn record(pass: &mut wgpu::ComputePass, list: &[Dispatch]) {
    for d in list {
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind, &[]);
        pass.dispatch_workgroups(d.groups.0, d.groups.1, d.groups.2);
    }
}

/// Encode dispatches in order into compute passes, ending a pass for each window copy.
fn encode(enc: &mut wgpu::CommandEncoder, label: &str, lists: &[&[Dispatch]]) {
    let mut pass: Option<wgpu::ComputePass<'static>> = None;
    for d in lists.iter().flat_map(|l| l.iter()) {
        if let Some(c) = &d.copy_before {
            drop(pass.take());
            enc.copy_buffer_to_buffer(&c.src, c.src_off, &c.dst, c.dst_off, c.size);
        }
        let p = pass.get_or_insert_with(|| enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None }).forget_lifetime());
        record(p, std::slice::from_ref(d));
    }
}

/// What the GPU accumulated since the last readback.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Sum over steps of the batch-mean loss.
    pub loss_sum: f32,
    pub correct: u32,
    pub seen: u32,
    pub steps: u32,
    /// Global step (0-based) of the first non-finite loss, if any.
    pub bad_step: Option<u64>,
    pub global_step: u64,
}

/// The test-set result: confusion[true][predicted] and each record's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub confusion: [[u32; CLASSES]; CLASSES],
    pub preds: Vec<u32>,
}

impl EvalResult {
    pub fn from_preds(preds: Vec<u32>, labels: &[u8]) -> EvalResult {
        let mut confusion = [[0; CLASSES]; CLASSES];
        for (p, &l) in preds.iter().zip(labels) {
            confusion[l as usize][*p as usize] += 1;
        }
        EvalResult { confusion, preds }
    }
    pub fn total(&self) -> u32 {
        self.confusion.iter().flatten().sum()
    }
    pub fn correct(&self) -> u32 {
        (0..CLASSES).map(|i| self.confusion[i][i]).sum()
    }
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total().max(1) as f64
    }
    /// Per-class accuracy (recall), in class order.
    pub fn class_accuracy(&self) -> [f64; CLASSES] {
        let mut a = [0.0; CLASSES];
        for (i, row) in self.confusion.iter().enumerate() {
            let t: u32 = row.iter().sum();
            a[i] = row[i] as f64 / t.max(1) as f64;
        }
        a
    }
}

/// The GPU training engine.
pub struct GpuEngine {
    pub gpu: Gpu,
    pub batch: usize,
    pub eval_batch: usize,
    layout: Layout,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    momentum: wgpu::Buffer,
    metrics: wgpu::Buffer,
    metrics_staging: wgpu::Buffer,
    preds: wgpu::Buffer,
    preds_staging: wgpu::Buffer,
    params_staging: wgpu::Buffer,
    sgd_uniform: wgpu::Buffer,
    sgd: Dispatch,
    train: DataBufs,
    test: DataBufs,
    train_pass: Pass,
    eval_pass: Pass,
    /// A batch-1 forward over one test record, for the page's look inside the network.
    inspect_pass: Pass,
    inspect_staging: wgpu::Buffer,
    augment: Augment,
}

impl GpuEngine {
    /// Upload the parameters (packed as `Layout::new(hyper.net)`), the training and test sets,
    /// and build every buffer and dispatch for training at batch `batch`.
    pub async fn new(gpu: &Gpu, params: &[f32], batch: usize, hyper: &Hyper, train: &Split, test: &Split) -> Result<GpuEngine, GpuError> {
        let layout = Layout::new(hyper.net);
        if params.len() != layout.total {
            return Err(GpuError(format!("parameter vector has {} floats, expected {} for the {} network", params.len(), layout.total, hyper.net.name())));
        }
        // The conv kernels read a layer's weights through one 64 KiB uniform window.
        for (name, i) in [("conv1", CONV1_W), ("conv2", CONV2_W)] {
            let len = layout.specs[i].len();
            if !fits_window(len as u32) {
                return Err(GpuError(format!(
                    "the {} network's {name} has {len} weights; the GPU conv kernels read at most {} per layer: use the CPU engine",
                    hyper.net.name(),
                    WEIGHT_WINDOW / 4
                )));
            }
        }
        if batch == 0 || batch > train.len() {
            return Err(GpuError(format!("batch {batch} must be between 1 and the {} training records", train.len())));
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let eval_batch = 500.min(test.len().max(1));
        let p_bytes = (layout.total * 4) as u64;
        // The conv kernels read their weights through a 64 KiB uniform window: the buffer
        // extends past the last such window (zeros after the packed vector).
        let conv_end = (layout.specs[CONV2_W].offset * 4) as u64 + WEIGHT_WINDOW;
        let mut padded = params.to_vec();
        padded.resize(padded.len().max(conv_end as usize / 4), 0.0);
        let params_buf = gpu.storage_init("params [P] (conv1.weight ... fc3.bias)", bytemuck::cast_slice(&padded));
        let grads = gpu.storage("grads [P]", p_bytes);
        let momentum = gpu.storage("momentum [P]", p_bytes);
        let metrics = gpu.storage("metrics (loss, correct, counters, confusion[10,10])", (M_WORDS * 4) as u64);
        let metrics_staging = gpu.staging("metrics staging", (M_WORDS * 4) as u64);
        let preds = gpu.storage("test predictions [R]", (test.len() * 4) as u64);
        let preds_staging = gpu.staging("test predictions staging", (test.len() * 4) as u64);
        let params_staging = gpu.staging("params staging", p_bytes);
        let sgd = SgdParams { len: (layout.total / 4) as u32, lr: hyper.lr, momentum: hyper.momentum, weight_decay: hyper.weight_decay };
        let sgd_uniform = gpu.uniform("sgd params", &sgd);
        let sgd_label = "sgd_update".to_string();
        let sgd_dispatch = Dispatch {
            copy_before: None,
            bind: gpu.bind(&sgd_label, gpu.kernels.bgl(KernelId::SgdUpdate), &[&sgd_uniform, &params_buf, &grads, &momentum], &[]),
            label: sgd_label,
            pipeline: gpu.kernels.pipeline(&gpu.device, KernelId::SgdUpdate, &[], ""),
            groups: Launch::flat(layout.total / 4).groups,
        };
        let train_bufs = upload_split(gpu, "train", train)?;
        let test_bufs = upload_split(gpu, "test", test)?;
        let sh = Shared { layout: &layout, params: &params_buf, grads: &grads, metrics: &metrics, preds: &preds };
        let train_pass = build_pass(gpu, "train", batch, true, &train_bufs, &sh)?;
        let eval_pass = build_pass(gpu, "eval", eval_batch, false, &test_bufs, &sh)?;
        let inspect_pass = build_pass(gpu, "inspect", 1, false, &test_bufs, &sh)?;
        let inspect_staging = gpu.staging("inspect staging (acts of one image, x .. logits)", ((inspect_pass.layout.logits + CLASSES) * 4) as u64);
        if let Some(e) = scope.pop().await {
            return Err(GpuError(format!("setting up the GPU engine failed: {e}")));
        }
        Ok(GpuEngine {
            gpu: gpu.clone(),
            batch,
            eval_batch,
            layout,
            params: params_buf,
            grads,
            momentum,
            metrics,
            metrics_staging,
            preds,
            preds_staging,
            params_staging,
            sgd_uniform,
            sgd: sgd_dispatch,
            train: train_bufs,
            test: test_bufs,
            train_pass,
            eval_pass,
            inspect_pass,
            inspect_staging,
            augment: Augment::default(),
        })
    }

    pub fn train_len(&self) -> usize {
        self.train.count
    }

    /// Train at another batch size from now on: new activation buffers and dispatches, the
    /// datasets already on the GPU kept (they are uploaded once).
    pub async fn set_batch(&mut self, batch: usize) -> Result<(), GpuError> {
        if batch == 0 || batch > self.train.count {
            return Err(GpuError(format!("batch {batch} must be between 1 and the {} training records", self.train.count)));
        }
        let scope = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let sh = Shared { layout: &self.layout, params: &self.params, grads: &self.grads, metrics: &self.metrics, preds: &self.preds };
        let pass = build_pass(&self.gpu, "train", batch, true, &self.train, &sh)?;
        if let Some(e) = scope.pop().await {
            return Err(GpuError(format!("setting up batch {batch} failed: {e}")));
        }
        self.train_pass = pass;
        self.batch = batch;
        self.set_augment(self.augment);
        Ok(())
    }

    /// Augment the training batches from now on (the gather draws crops and flips from
    /// `a.key`); evaluation never is.
    pub fn set_augment(&mut self, a: Augment) {
        self.augment = a;
        let (buf, mut g) = self.train_pass.gather.clone();
        (g.aug, g.key) = (a.bits(), a.key);
        self.gpu.queue.write_buffer(&buf, 0, bytemuck::bytes_of(&g));
    }

    /// Zero the step counters and accumulators (a new run on this engine).
    pub fn reset_counters(&self) {
        self.gpu.queue.write_buffer(&self.metrics, 0, &[0u8; M_WORDS * 4]);
    }

    pub fn test_len(&self) -> usize {
        self.test.count
    }

    /// Learning rate, momentum and weight decay for the next steps (one small upload).
    pub fn set_hyper(&self, lr: f32, momentum: f32, weight_decay: f32) {
        let sgd = SgdParams { len: (self.layout.total / 4) as u32, lr, momentum, weight_decay };
        self.gpu.queue.write_buffer(&self.sgd_uniform, 0, bytemuck::bytes_of(&sgd));
    }

    /// Start an epoch at step `step` of it (0 for a new epoch; more when resuming): upload its
    /// order of the training records and set the step counter the gather reads.
    pub fn begin_epoch(&self, order: &[u32], step: usize) {
        assert_eq!(order.len(), self.train.count);
        self.gpu.queue.write_buffer(&self.train.index, 0, bytemuck::cast_slice(order));
        self.gpu.queue.write_buffer(&self.metrics, (M_EPOCH_STEP * 4) as u64, bytemuck::bytes_of(&(step as u32)));
    }

    /// Encode `steps` training steps, one command buffer each, and submit them together.
    pub fn train_steps(&self, steps: usize) {
        let cmds: Vec<wgpu::CommandBuffer> = (0..steps)
            .map(|_| {
                let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
                let p = &self.train_pass;
                encode(&mut enc, "train step", &[&p.forward, std::slice::from_ref(&p.head), &p.backward, std::slice::from_ref(&self.sgd)]);
                enc.finish()
            })
            .collect();
        self.gpu.queue.submit(cmds);
    }

    /// Read back what accumulated since the last call and reset the accumulators.
    pub async fn read_metrics(&self) -> Result<Metrics, GpuError> {
        let metrics = &self.metrics;
        let bytes = self.gpu.read_back(metrics, 0, (M_CONFUSION * 4) as u64, &self.metrics_staging, |enc| enc.clear_buffer(metrics, 0, Some((M_BAD_STEP * 4) as u64))).await?;
        let w: &[u32] = bytemuck::cast_slice(&bytes);
        Ok(Metrics {
            loss_sum: f32::from_bits(w[M_LOSS_SUM]),
            correct: w[M_CORRECT],
            seen: w[M_SEEN],
            steps: w[M_STEPS],
            bad_step: if w[M_BAD_STEP] == 0 { None } else { Some(w[M_BAD_STEP] as u64 - 1) },
            global_step: w[M_GLOBAL_STEP] as u64,
        })
    }

    /// Classify the whole test set on the GPU in batches of `eval_batch`: confusion matrix and
    /// every prediction, in one command buffer and one readback of each.
    pub async fn evaluate(&self) -> Result<EvalResult, GpuError> {
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("evaluate") });
        enc.clear_buffer(&self.metrics, (M_EVAL_BATCH * 4) as u64, None);
        for _ in 0..self.test.count.div_ceil(self.eval_batch) {
            encode(&mut enc, "evaluate", &[&self.eval_pass.forward, std::slice::from_ref(&self.eval_pass.head)]);
        }
        self.gpu.queue.submit([enc.finish()]);
        let bytes = self.gpu.read_back(&self.metrics, (M_CONFUSION * 4) as u64, (CLASSES * CLASSES * 4) as u64, &self.metrics_staging, |_| {}).await?;
        let w: &[u32] = bytemuck::cast_slice(&bytes);
        let mut confusion = [[0; CLASSES]; CLASSES];
        for (i, row) in confusion.iter_mut().enumerate() {
            row.copy_from_slice(&w[i * CLASSES..(i + 1) * CLASSES]);
        }
        let pb = self.gpu.read_back(&self.preds, 0, (self.test.count * 4) as u64, &self.preds_staging, |_| {}).await?;
        Ok(EvalResult { confusion, preds: bytemuck::cast_slice(&pb).to_vec() })
    }

    /// Every activation of test record `record` under the current weights: the batch-1 inspect
    /// pass (eval mode, so its gather reads `index[eval_batch]`: the counter is set to the
    /// record first; evaluate() clears it before its own batches) and one readback of x ..
    /// logits. No loss, no accumulation: training and the last evaluation are untouched.
    pub async fn inspect(&self, record: usize) -> Result<Inside, GpuError> {
        if record >= self.test.count {
            return Err(GpuError(format!("inspect: test record {record} does not exist (the test set has {})", self.test.count)));
        }
        self.gpu.queue.write_buffer(&self.metrics, (M_EVAL_BATCH * 4) as u64, bytemuck::bytes_of(&(record as u32)));
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("inspect") });
        encode(&mut enc, "inspect", &[&self.inspect_pass.forward]);
        self.gpu.queue.submit([enc.finish()]);
        let l = self.inspect_pass.layout;
        let b = self.gpu.read_back(&self.inspect_pass.acts, 0, self.inspect_staging.size(), &self.inspect_staging, |_| {}).await?;
        let v: &[f32] = bytemuck::cast_slice(&b);
        let t = |at: usize, len: usize| v[at..at + len].to_vec();
        let Arch { c1, c2, f1, f2 } = self.layout.arch;
        Ok(Inside {
            x: t(l.x, IMG_LEN),
            h1: t(l.h1, c1 * H1 * H1),
            p1: t(l.p1, c1 * P1 * P1),
            h2: t(l.h2, c2 * H2 * H2),
            p2: t(l.p2, c2 * P2 * P2),
            a1: t(l.a1, f1),
            a2: t(l.a2, f2),
            logits: t(l.logits, CLASSES),
        })
    }

    /// The packed parameters [P].
    pub async fn read_params(&self) -> Result<Vec<f32>, GpuError> {
        let b = self.gpu.read_back(&self.params, 0, (self.layout.total * 4) as u64, &self.params_staging, |_| {}).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The packed momentum [P].
    pub async fn read_momentum(&self) -> Result<Vec<f32>, GpuError> {
        let b = self.gpu.read_back(&self.momentum, 0, (self.layout.total * 4) as u64, &self.params_staging, |_| {}).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The packed gradients [P] of the last step.
    pub async fn read_grads(&self) -> Result<Vec<f32>, GpuError> {
        let b = self.gpu.read_back(&self.grads, 0, (self.layout.total * 4) as u64, &self.params_staging, |_| {}).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The logits [N,10] of the last training step's forward pass.
    pub async fn read_logits(&self) -> Result<Vec<f32>, GpuError> {
        let l = self.train_pass.layout;
        let len = (l.n * CLASSES * 4) as u64;
        if len > self.params_staging.size() {
            return Err(GpuError(format!("read_logits: batch {} does not fit the staging buffer", l.n)));
        }
        let b = self.gpu.read_back(&self.train_pass.acts, (l.logits * 4) as u64, len, &self.params_staging, |_| {}).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// Replace the parameters (and zero the momentum): loading a model.
    pub fn write_params(&self, params: &[f32]) {
        self.write_state(params, &vec![0.0; self.layout.total]);
    }

    /// Replace the parameters and the momentum: resuming a run.
    pub fn write_state(&self, params: &[f32], momentum: &[f32]) {
        assert_eq!(params.len(), self.layout.total);
        assert_eq!(momentum.len(), self.layout.total);
        self.gpu.queue.write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        self.gpu.queue.write_buffer(&self.momentum, 0, bytemuck::cast_slice(momentum));
    }

    /// Where a training step's time goes: each dispatch of the step alone, `reps` times in one
    /// command buffer, timed to completion; microseconds per dispatch. Runs the kernels for
    /// real, so it changes the parameters: profile a throwaway engine.
    pub async fn profile(&self, reps: usize) -> Result<Vec<(String, f64)>, GpuError> {
        let p = &self.train_pass;
        let mut rows = Vec::new();
        for d in p.forward.iter().chain(std::iter::once(&p.head)).chain(&p.backward).chain(std::iter::once(&self.sgd)) {
            let time_once = async || -> Result<f64, GpuError> {
                let t = web_time::Instant::now();
                let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile"), timestamp_writes: None });
                    for _ in 0..reps {
                        record(&mut pass, std::slice::from_ref(d));
                    }
                }
                self.gpu.queue.submit([enc.finish()]);
                self.read_metrics().await?;
                Ok(t.elapsed().as_secs_f64() * 1e6 / reps as f64)
            };
            time_once().await?; // warm-up
            rows.push((d.label.trim_start_matches("train ").to_string(), time_once().await?));
        }
        // The whole step, for comparison with the sum of its parts.
        let t = web_time::Instant::now();
        self.train_steps(reps);
        self.read_metrics().await?;
        rows.push(("(whole step, for comparison)".to_string(), t.elapsed().as_secs_f64() * 1e6 / reps as f64));
        Ok(rows)
    }

    /// The network it trains.
    pub fn arch(&self) -> Arch {
        self.layout.arch
    }

    pub fn act_layout(&self) -> ActLayout {
        self.train_pass.layout
    }
}

impl Gpu {
    /// Run one kernel once over fresh buffers holding `buffers` (bindings 1.., in order; the
    /// uniform is binding 0) with `launch`, and return every buffer's
    /// contents afterwards. Allocates per call: for tests and tools, never in a training step.
    pub async fn run_kernel(&self, id: KernelId, launch: &Launch, uniform: &[u8], buffers: &[&[u8]]) -> Result<Vec<Vec<u8>>, GpuError> {
        let pipeline = &self.kernels.pipeline(&self.device, id, &launch.constants, "");
        let bgl = self.kernels.bgl(id);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let uni = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("test uniform"), contents: uniform, usage: wgpu::BufferUsages::UNIFORM });
        let conv = matches!(id, KernelId::Conv2dForward | KernelId::Conv2dBackwardInput | KernelId::Conv2dBackwardWeight);
        let linear = matches!(id, KernelId::LinearForward | KernelId::LinearBackwardInput | KernelId::LinearBackwardWeight);
        // The conv kernels' weight window: binding 1 (params) from ConvParams.weight on,
        // zero-padded so the 64 KiB window fits.
        let window_at = if conv { bytemuck::pod_read_unaligned::<ConvParams>(&uniform[..std::mem::size_of::<ConvParams>()]).weight as u64 * 4 } else { 0 };
        // The activation window: a copy of binding 2 (acts) from the params' `window` on, as
        // the engine's step makes it.
        let act_window = (linear || conv).then(|| {
            let from = if conv {
                bytemuck::pod_read_unaligned::<ConvParams>(&uniform[..std::mem::size_of::<ConvParams>()]).window
            } else {
                bytemuck::pod_read_unaligned::<LinearParams>(&uniform[..std::mem::size_of::<LinearParams>()]).window
            } as usize
                * 4;
            let mut w = buffers[1][from.min(buffers[1].len())..].to_vec();
            w.resize(WEIGHT_WINDOW as usize, 0);
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("test activation window"), contents: &w, usage: wgpu::BufferUsages::UNIFORM })
        });
        if window_at % 256 != 0 {
            return Err(GpuError(format!("{id:?}: the weight offset must be a multiple of 64 floats (256 bytes), not {}", window_at / 4)));
        }
        let bufs: Vec<wgpu::Buffer> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut bytes = b.to_vec();
                if conv && i == 0 {
                    bytes.resize(bytes.len().max((window_at + WEIGHT_WINDOW) as usize), 0);
                }
                self.storage_init(&format!("{id:?} binding {}", i + 1), &bytes)
            })
            .collect();
        let mut all = vec![&uni];
        all.extend(bufs.iter());
        let mut windows = Vec::new();
        if conv {
            windows.push((&bufs[0], window_at));
        }
        if let Some(w) = &act_window {
            windows.push((w, 0));
        }
        let bind = self.bind(&format!("{id:?}"), bgl, &all, &windows);
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run_kernel") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run_kernel"), timestamp_writes: None });
            let (x, y, z) = launch.groups;
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(x, y, z);
        }
        self.queue.submit([enc.finish()]);
        let mut out = Vec::new();
        for (b, src) in bufs.iter().zip(buffers) {
            let staging = self.staging("test staging", src.len() as u64);
            out.push(self.read_back(b, 0, src.len().max(4) as u64 & !3, &staging, |_| {}).await?);
        }
        if let Some(e) = scope.pop().await {
            return Err(GpuError(format!("{id:?}: {e}")));
        }
        Ok(out)
    }
}
