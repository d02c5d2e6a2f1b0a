//! The GPU engine: the WGSL kernels of shaders/ dispatched through wgpu (natively on any
//! adapter, and on WebGPU in the browser).
//!
//! - this file: the device, its error slot, buffer helpers and the one async readback;
//! - `kernels`: kernel ids, pipelines, bind layouts, the params mirrors, launches;
//! - `pass`: a training step (or an evaluation) built layer by layer, as `cpu::forward` and
//!   `cpu::backward` read;
//! - `engine`: `GpuEngine`, which owns the buffers and runs the passes.

pub mod engine;
pub mod kernels;
pub mod net_engine;
pub mod net_kernels;
pub mod net_pass;
pub mod pace;
pub mod pass;

pub use crate::outputs::{EngineError, ErrorKind};
pub use engine::{Clock, GpuEngine, MetricsPending, Profile};
pub use kernels::*;
pub use pass::{ActLayout, Dispatch, Recorder, StepShape, Tally};

use bytemuck::Pod;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a readback may wait unless its caller knows better (`GpuEngine` sizes the
/// deadline of each readback by the work queued before it).
pub const READ_BACK_DEADLINE: Duration = Duration::from_secs(600);
use wgpu::util::DeviceExt;

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
    pub(crate) kernels: Arc<Kernels>,
    /// The first uncaptured device error (a validation error or a lost device), reported at
    /// the next readback instead of panicking.
    error: Arc<Mutex<Option<EngineError>>>,
}

impl Gpu {
    /// Find an adapter (high performance preferred) and open a device with WebGPU's default
    /// limits, but for the storage binding and buffer sizes, which are the adapter's own (a
    /// browser grants them too): everything that runs here runs in a tab.
    pub async fn new() -> Result<Gpu, EngineError> {
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
                EngineError::unavailable(format!(
                    "no GPU adapter found ({e}); on Linux without a GPU install a software Vulkan driver (apt-get install mesa-vulkan-drivers), or use --engine cpu"
                ))
            })?;
        let mut gpu = Self::from_adapter(&adapter).await?;
        gpu.instance = Some(instance);
        Ok(gpu)
    }

    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Gpu, EngineError> {
        let info = adapter.get_info();
        // Browsers may leave the name empty (WebGPU exposes little about the adapter).
        let shown = [&info.name, &info.driver, &info.driver_info].into_iter().find(|s| !s.is_empty()).cloned().unwrap_or_else(|| "unnamed adapter".into());
        let name = format!("{shown} ({:?}, {:?})", info.backend, info.device_type);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tabcnn device"),
                // WebGPU's defaults are the floor; a storage binding and a buffer as large as
                // the adapter allows (the default 128 MiB binding capped the widest network's
                // batch on the GPU at 97), so the engines size their batches by the device.
                required_limits: wgpu::Limits {
                    max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
                    max_buffer_size: adapter.limits().max_buffer_size,
                    ..wgpu::Limits::default()
                },
                // the GPU's own clock for the profile, where the adapter has one (and inside
                // a pass where it can be written there)
                required_features: adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::unavailable(format!("adapter {name} cannot open a device with WebGPU's default limits: {e}")))?;
        let error = Arc::new(Mutex::new(None::<EngineError>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                let kind = match e {
                    wgpu::Error::OutOfMemory { .. } => ErrorKind::Limits,
                    _ => ErrorKind::Validation,
                };
                *s = Some(EngineError::new(kind, format!("GPU error: {e}")));
            }
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                *s = Some(EngineError::device_lost(if msg.is_empty() { format!("GPU device lost ({reason:?})") } else { format!("GPU device lost ({reason:?}): {msg}") }));
            }
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = Arc::new(Kernels::new(&device));
        // Compile every kernel now so a shader error surfaces here, not mid-training.
        for id in ALL_KERNELS {
            kernels.pipeline(&device, id, &[], "");
        }
        if let Some(e) = scope.pop().await {
            return Err(EngineError::unavailable(format!("the kernels do not compile on {name}: {e}")));
        }
        Ok(Gpu { device, queue, adapter: name, software: info.device_type == wgpu::DeviceType::Cpu, wgpu_adapter: adapter.clone(), instance: None, kernels, error })
    }

    /// The first device error since the device was made, if any.
    pub fn error(&self) -> Option<EngineError> {
        self.error.lock().unwrap().clone()
    }

    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub fn storage_init(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        if contents.is_empty() {
            return self.storage(label, 4);
        }
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        })
    }

    pub fn uniform<T: Pod>(&self, label: &str, v: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(v),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub fn staging(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A bind group of whole buffers at bindings 0.., in order.
    pub fn bind(&self, label: &str, layout: &wgpu::BindGroupLayout, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
    }

    /// Copy `size` bytes at `offset` of `src` into `staging` and read them back: the one
    /// readback path (`start_read_back`, then `Pending::wait`), with the default deadline.
    pub async fn read_back(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        size: u64,
        staging: &wgpu::Buffer,
        then: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<Vec<u8>, EngineError> {
        self.start_read_back(src, offset, size, staging, Arc::new(AtomicBool::new(true)), READ_BACK_DEADLINE, then).wait().await
    }

    /// Submit the copy of `size` bytes at `offset` of `src` into `staging` (then `then`'s
    /// commands, in the same command buffer) and request the map, without waiting: the GPU
    /// goes on with whatever is queued after it. `busy` is cleared once `staging` is unmapped
    /// again, by `Pending::wait` or, for a readback dropped on its way, by the map callback.
    /// Waiting past `deadline` is an error of the kind DeviceLost.
    pub fn start_read_back(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        size: u64,
        staging: &wgpu::Buffer,
        busy: Arc<AtomicBool>,
        deadline: Duration,
        then: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Pending {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(src, offset, staging, 0, size);
        then(&mut enc);
        let submission = self.queue.submit([enc.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        let (abandoned, flag) = (staging.clone(), busy.clone());
        staging.slice(0..size).map_async(wgpu::MapMode::Read, move |r| {
            if let Err(r) = tx.send(r) {
                // Nobody waits for it any more: free the buffer for the next readback.
                if r.is_ok() {
                    abandoned.unmap();
                }
                flag.store(false, Ordering::Release);
            }
        });
        Pending { gpu: self.clone(), staging: staging.clone(), size, busy, submission, deadline, rx: Some(rx) }
    }
}

/// A readback on its way (see `Gpu::start_read_back`).
pub struct Pending {
    gpu: Gpu,
    staging: wgpu::Buffer,
    size: u64,
    busy: Arc<AtomicBool>,
    submission: wgpu::SubmissionIndex,
    deadline: Duration,
    rx: Option<futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>>,
}

impl Pending {
    /// The bytes, once the GPU has run everything submitted up to the copy (and nothing after
    /// it need have run). map_async + a future: natively `poll` waits for that submission and
    /// runs the callback; on the web the browser's event loop does (poll is a no-op there), so
    /// this never spins on the web. Past the deadline it is a lost device: a map that never
    /// resolves must not leave a run waiting forever.
    pub async fn wait(mut self) -> Result<Vec<u8>, EngineError> {
        let rx = self.rx.take().expect("waited once");
        let late = EngineError::device_lost(format!(
            "the GPU did not finish its work within {:.0} s (a hung driver or GPU process): treated as a lost device",
            self.deadline.as_secs_f64()
        ));
        match self.gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(self.submission.clone()), timeout: Some(self.deadline) }) {
            // (dropping `rx` lets the map callback free the staging buffer when it comes)
            Err(wgpu::PollError::Timeout) => return Err(late),
            Err(wgpu::PollError::WrongSubmissionIndex(..)) => {
                // The submission never went in (a lost device): a plain wait reports why.
                let _ = self.gpu.device.poll(wgpu::PollType::wait_indefinitely());
            }
            Ok(_) => {}
        }
        let Some(mapped) = crate::timer::within(rx, self.deadline).await else { return Err(late) };
        let mapped = mapped.map_err(|_| EngineError::device_lost("readback cancelled: the GPU device was lost"));
        let is_mapped = matches!(mapped, Ok(Ok(())));
        let bytes = match (self.gpu.error(), mapped) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(Err(e))) => Err(EngineError::device_lost(format!("reading a buffer back from the GPU failed: {e}"))),
            (None, Ok(Ok(()))) => {
                let view = self.staging.slice(0..self.size).get_mapped_range();
                view.map(|v| v.to_vec()).map_err(|e| EngineError::device_lost(format!("mapping a readback buffer failed: {e:?}")))
            }
        };
        if is_mapped {
            self.staging.unmap();
        }
        self.busy.store(false, Ordering::Release);
        bytes
    }
}

impl Drop for Pending {
    /// Dropped unread: if the map already resolved, unmap now; if not, the callback will.
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if let Ok(Some(r)) = rx.try_recv() {
                if r.is_ok() {
                    self.staging.unmap();
                }
                self.busy.store(false, Ordering::Release);
            }
        }
    }
}
