//! `GpuEngine`: the parameters, gradients and momentum (three packed buffers [P] at the
//! model::Layout offsets), the datasets uploaded once as u8 records, the metrics buffer, and
//! the passes: training at batch N, evaluation at batch M, and a batch-1 forward for the
//! inspection view. A training step is one command buffer of one compute pass (the train
//! pass's dispatches, then SGD); loss and accuracy accumulate on the GPU and come back only
//! through `Gpu::read_back`.

use super::kernels::*;
use super::pace::Pace;
use super::pass::*;
use super::{EngineError, Gpu, Pending};
use crate::augment::Augment;
use crate::data::Split;
use crate::model::*;
use crate::outputs::{check_looks, EvalResult, Inside, Looks, Metrics};
use crate::recipe::Hyper;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Upload a dataset split once, as u8 records (two bindings past 128 MiB), labels and the
/// identity order.
pub fn upload_split(gpu: &Gpu, name: &str, s: &Split) -> Result<DataBufs, EngineError> {
    let limits = gpu.device.limits();
    let max_bind = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let chunk_records = (max_bind / IMG_LEN as u64) as usize;
    let count = s.len();
    if count == 0 {
        return Err(EngineError::settings(format!("the {name} set is empty")));
    }
    if count > 2 * chunk_records {
        return Err(EngineError::limits(format!(
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

/// Training steps per submission: few enough that the GPU starts while the host still encodes
/// a chunk, enough that a submission's cost is shared.
const SUBMIT_STEPS: usize = 8;

/// Which clock a profile was timed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The GPU's timestamps around each kernel's compute pass (TIMESTAMP_QUERY).
    Timestamps,
    /// The wall clock around each submission and its readback (includes the submission and
    /// readback latency: meaningful with many repetitions).
    WallClock,
}

/// Microseconds per dispatch of each kernel of a training step, and the whole step last.
#[derive(Clone, Debug)]
pub struct Profile {
    pub clock: Clock,
    pub rows: Vec<(String, f64)>,
    /// Microseconds of each kernel (the rows' order, the whole step left out) inside the
    /// step's own compute pass, from timestamps written between its dispatches: what each
    /// costs among the others, as trained. Where the device has TIMESTAMP_QUERY_INSIDE_PASSES
    /// (native Vulkan, Metal, D3D12; not WebGPU).
    pub in_step: Option<Vec<f64>>,
}

/// A metrics readback on its way (`GpuEngine::submit_metrics`), with the steps it covers.
pub struct MetricsPending {
    pending: Pending,
    steps: usize,
    queued: web_time::Instant,
}

/// Staging buffers for the metrics of chunks on their way back, each with its busy flag: two
/// when a session keeps a chunk in flight while it reads the one before, more only if a
/// readback was dropped before its map resolved. Every GPU engine reads its metrics so.
pub struct MetricSlots(Mutex<Vec<(wgpu::Buffer, Arc<AtomicBool>)>>);

impl MetricSlots {
    pub fn new(gpu: &Gpu) -> MetricSlots {
        MetricSlots(Mutex::new((0..2).map(|i| (gpu.staging(&format!("metrics staging [{i}]"), (M_CONFUSION * 4) as u64), Arc::new(AtomicBool::new(false)))).collect()))
    }

    /// Queue the copy of `metrics` (and the reset of its accumulators) after the steps
    /// submitted, without waiting.
    pub fn submit(&self, gpu: &Gpu, metrics: &wgpu::Buffer, pace: &Pace) -> MetricsPending {
        let mut slots = self.0.lock().unwrap();
        let free = match slots.iter().position(|(_, busy)| !busy.load(Ordering::Acquire)) {
            Some(i) => i,
            None => {
                // Every slot waits on a map (a readback dropped on its way): one more.
                let i = slots.len();
                slots.push((gpu.staging(&format!("metrics staging [{i}]"), (M_CONFUSION * 4) as u64), Arc::new(AtomicBool::new(false))));
                i
            }
        };
        let (staging, busy) = &slots[free];
        busy.store(true, Ordering::Release);
        let deadline = pace.deadline(0.0);
        let clear = |enc: &mut wgpu::CommandEncoder| enc.clear_buffer(metrics, 0, Some((M_BAD_STEP * 4) as u64));
        let pending = gpu.start_read_back(metrics, 0, (M_CONFUSION * 4) as u64, staging, busy.clone(), deadline, clear);
        MetricsPending { pending, steps: pace.take_queued(), queued: web_time::Instant::now() }
    }
}

impl MetricsPending {
    /// The metrics, once the GPU got there (`pace` learns how long that took).
    pub async fn read(self, pace: &Pace) -> Result<Metrics, EngineError> {
        let bytes = self.pending.wait().await?;
        pace.done(self.steps, self.queued.elapsed().as_secs_f64());
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
}

/// Encode `steps` training steps (`encode_step` records one), one command buffer each,
/// submitted SUBMIT_STEPS at a time: the GPU runs the first ones while the host encodes the
/// rest. Every GPU engine trains so.
pub fn submit_steps(gpu: &Gpu, pace: &Pace, steps: usize, encode_step: impl Fn(&mut wgpu::CommandEncoder)) {
    let mut left = steps;
    while left > 0 {
        let group = left.min(SUBMIT_STEPS);
        let cmds = (0..group).map(|_| {
            let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
            encode_step(&mut enc);
            enc.finish()
        });
        gpu.queue.submit(cmds);
        pace.submitted(group);
        left -= group;
    }
}

/// Where an evaluation's results are, and the staging buffers they come back through.
pub struct EvalStaging<'a> {
    pub metrics: &'a wgpu::Buffer,
    pub confusion: &'a wgpu::Buffer,
    pub preds: &'a wgpu::Buffer,
    pub preds_staging: &'a wgpu::Buffer,
}

/// An evaluation pass's dispatches: its forward and the accumulation of its predictions, in
/// batches of `batch` (`train_batch`, the training batch, sizes the readback's deadline).
pub struct EvalPasses<'a> {
    pub forward: &'a [Dispatch],
    pub head: &'a Dispatch,
    pub batch: usize,
    pub train_batch: usize,
}

/// The `count` test records through `p` in one command buffer, then the confusion matrix and
/// every prediction read back: every GPU engine evaluates so.
pub async fn run_evaluation(gpu: &Gpu, pace: &Pace, s: EvalStaging<'_>, p: EvalPasses<'_>, count: usize) -> Result<EvalResult, EngineError> {
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("evaluate") });
    enc.clear_buffer(s.metrics, (M_EVAL_BATCH * 4) as u64, None);
    for _ in 0..count.div_ceil(p.batch) {
        encode(&mut enc, "evaluate", &[p.forward, std::slice::from_ref(p.head)]);
    }
    gpu.queue.submit([enc.finish()]);
    // an evaluation image costs about a third of a training image (the forward only)
    read_evaluation(gpu, pace, s, count, count as f64 / (3.0 * p.train_batch as f64)).await
}

/// The confusion matrix and the `count` predictions an evaluation left on the GPU, read back
/// within the deadline of the work queued and `work` steps' worth more.
async fn read_evaluation(gpu: &Gpu, pace: &Pace, s: EvalStaging<'_>, count: usize, work: f64) -> Result<EvalResult, EngineError> {
    let read = |src: &wgpu::Buffer, offset: u64, size: u64, staging: &wgpu::Buffer, work: f64| {
        gpu.start_read_back(src, offset, size, staging, Arc::new(AtomicBool::new(true)), pace.deadline(work), |_| {}).wait()
    };
    let bytes = read(s.metrics, (M_CONFUSION * 4) as u64, (CLASSES * CLASSES * 4) as u64, s.confusion, work).await?;
    let w: &[u32] = bytemuck::cast_slice(&bytes);
    let mut confusion = [[0; CLASSES]; CLASSES];
    for (i, row) in confusion.iter_mut().enumerate() {
        row.copy_from_slice(&w[i * CLASSES..(i + 1) * CLASSES]);
    }
    let pb = read(s.preds, 0, (count * 4) as u64, s.preds_staging, 0.0).await?;
    Ok(EvalResult::from_counted(confusion, bytemuck::cast_slice(&pb).to_vec()))
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
    metric_slots: MetricSlots,
    confusion_staging: wgpu::Buffer,
    /// How long its work takes: each readback's deadline.
    pace: Pace,
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
    /// A batch-1 forward and backward to the input, with gradients of its own: where the
    /// network looks (saliency, Grad-CAM).
    looks_pass: Pass,
    looks_grads: wgpu::Buffer,
    looks_staging: wgpu::Buffer,
    augment: Augment,
}

impl GpuEngine {
    /// Upload the parameters (packed as `Layout::new(hyper.net)`), the training and test sets,
    /// and build every buffer and dispatch for training at batch `batch`.
    pub async fn new(gpu: &Gpu, params: &[f32], batch: usize, hyper: &Hyper, train: &Split, test: &Split) -> Result<GpuEngine, EngineError> {
        let layout = Layout::new(hyper.net);
        if params.len() != layout.total {
            return Err(EngineError::settings(format!("parameter vector has {} floats, expected {} for the {} network", params.len(), layout.total, hyper.net.name())));
        }
        if batch == 0 || batch > train.len() {
            return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {} training records", train.len())));
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Evaluation in batches of 500, fewer where a wide network's activations would pass
        // the binding limit.
        let max_bind = gpu.device.limits().max_storage_buffer_binding_size as usize;
        let mut eval_batch = 500.min(test.len().max(1));
        while eval_batch > 1 && ActLayout::new(eval_batch, false, hyper.net).acts_len * 4 > max_bind {
            eval_batch = eval_batch * 3 / 4;
        }
        let p_bytes = (layout.total * 4) as u64;
        let params_buf = gpu.storage_init("params [P] (conv1.weight ... fc3.bias)", bytemuck::cast_slice(params));
        let grads = gpu.storage("grads [P]", p_bytes);
        let momentum = gpu.storage("momentum [P]", p_bytes);
        let metrics = gpu.storage("metrics (loss, correct, counters, confusion[10,10])", (M_WORDS * 4) as u64);
        let metric_slots = MetricSlots::new(gpu);
        let confusion_staging = gpu.staging("confusion staging [10,10]", (CLASSES * CLASSES * 4) as u64);
        let preds = gpu.storage("test predictions [R]", (test.len() * 4) as u64);
        let preds_staging = gpu.staging("test predictions staging", (test.len() * 4) as u64);
        let params_staging = gpu.staging("params staging", p_bytes);
        let sgd = SgdParams { len: (layout.total / 4) as u32, lr: hyper.lr, momentum: hyper.momentum, weight_decay: hyper.weight_decay };
        let sgd_uniform = gpu.uniform("sgd params", &sgd);
        let sgd_label = "sgd_update".to_string();
        let sgd_launch = Launch::flat_work(layout.total / 4, 0, (layout.total * 4 * 5) as u64);
        let sgd_dispatch = Dispatch {
            bind: gpu.bind(&sgd_label, gpu.kernels.bgl(KernelId::SgdUpdate), &[&sgd_uniform, &params_buf, &grads, &momentum]),
            label: sgd_label,
            pipeline: gpu.kernels.pipeline(&gpu.device, KernelId::SgdUpdate, &[], ""),
            launch: sgd_launch,
        };
        let train_bufs = upload_split(gpu, "train", train)?;
        let test_bufs = upload_split(gpu, "test", test)?;
        let sh = Shared { layout: &layout, params: &params_buf, grads: &grads, metrics: &metrics, preds: &preds };
        let train_pass = build_pass(gpu, "train", batch, Mode::Train, &train_bufs, &sh)?;
        let eval_pass = build_pass(gpu, "eval", eval_batch, Mode::Eval, &test_bufs, &sh)?;
        let inspect_pass = build_pass(gpu, "inspect", 1, Mode::Eval, &test_bufs, &sh)?;
        let inspect_staging = gpu.staging("inspect staging (acts of one image, x .. logits)", ((inspect_pass.layout.logits + CLASSES) * 4) as u64);
        let looks_grads = gpu.storage("looks grads [P] (one image's; training's stay as they are)", p_bytes);
        let looks_sh = Shared { grads: &looks_grads, ..sh };
        let looks_pass = build_pass(gpu, "looks", 1, Mode::Looks, &test_bufs, &looks_sh)?;
        let looks_staging = gpu.staging("looks staging (acts of one image, x .. dx)", (looks_pass.layout.acts_len * 4) as u64);
        if let Some(e) = scope.pop().await {
            return Err(EngineError::validation(format!("setting up the GPU engine failed: {e}")));
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
            metric_slots,
            confusion_staging,
            pace: Pace::default(),
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
            looks_pass,
            looks_grads,
            looks_staging,
            augment: Augment::default(),
        })
    }

    pub fn train_len(&self) -> usize {
        self.train.count
    }

    /// Train at another batch size from now on: new activation buffers and dispatches, the
    /// datasets already on the GPU kept (they are uploaded once).
    pub async fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > self.train.count {
            return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {} training records", self.train.count)));
        }
        let scope = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let sh = Shared { layout: &self.layout, params: &self.params, grads: &self.grads, metrics: &self.metrics, preds: &self.preds };
        let pass = build_pass(&self.gpu, "train", batch, Mode::Train, &self.train, &sh)?;
        if let Some(e) = scope.pop().await {
            return Err(EngineError::validation(format!("setting up batch {batch} failed: {e}")));
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
        self.pace.reset();
        self.gpu.queue.write_buffer(&self.metrics, 0, &[0u8; M_WORDS * 4]);
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

    /// Encode `steps` training steps, one command buffer each, submitted SUBMIT_STEPS at a
    /// time: the GPU runs the first ones while the host encodes the rest.
    pub fn train_steps(&self, steps: usize) {
        submit_steps(&self.gpu, &self.pace, steps, |enc| self.encode_step(enc));
    }

    /// Read back what accumulated since the last call and reset the accumulators.
    pub async fn read_metrics(&self) -> Result<Metrics, EngineError> {
        self.metrics(self.submit_metrics()).await
    }

    /// Queue the copy of what accumulated so far (and the reset of the accumulators) after the
    /// steps submitted, without waiting: steps submitted later run while it comes back.
    pub fn submit_metrics(&self) -> MetricsPending {
        self.metric_slots.submit(&self.gpu, &self.metrics, &self.pace)
    }

    /// The metrics a `submit_metrics` queued, once the GPU got there.
    pub async fn metrics(&self, p: MetricsPending) -> Result<Metrics, EngineError> {
        p.read(&self.pace).await
    }

    /// Classify the whole test set on the GPU in batches of `eval_batch`: confusion matrix and
    /// every prediction, in one command buffer and one readback of each.
    pub async fn evaluate(&self) -> Result<EvalResult, EngineError> {
        let s = EvalStaging { metrics: &self.metrics, confusion: &self.confusion_staging, preds: &self.preds, preds_staging: &self.preds_staging };
        let passes = EvalPasses { forward: &self.eval_pass.forward, head: &self.eval_pass.head, batch: self.eval_batch, train_batch: self.batch };
        run_evaluation(&self.gpu, &self.pace, s, passes, self.test.count).await
    }

    /// Every activation of test record `record` under the current weights: the batch-1 inspect
    /// pass (eval mode, so its gather reads `index[eval_batch]`: the counter is set to the
    /// record first; evaluate() clears it before its own batches) and one readback of x ..
    /// logits. No loss, no accumulation: training and the last evaluation are untouched.
    pub async fn inspect(&self, record: usize) -> Result<Inside, EngineError> {
        if record >= self.test.count {
            return Err(EngineError::settings(format!("inspect: test record {record} does not exist (the test set has {})", self.test.count)));
        }
        self.gpu.queue.write_buffer(&self.metrics, (M_EVAL_BATCH * 4) as u64, bytemuck::bytes_of(&(record as u32)));
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("inspect") });
        encode(&mut enc, "inspect", &[&self.inspect_pass.forward]);
        self.gpu.queue.submit([enc.finish()]);
        let l = self.inspect_pass.layout;
        let b = self.read(&self.inspect_pass.acts, 0, self.inspect_staging.size(), &self.inspect_staging, 1.0).await?;
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

    /// Where the network looks for `class` in `image` [3,32,32] (a test record or the visitor's
    /// picture) under the current weights, as cpu::looks computes it: x (normalised as the
    /// gather does) and the one-hot gradient of the class's logit are written, then the looks
    /// pass runs its forward (without the gather) and its backward down to dx, and two
    /// readbacks bring x .. dx and conv2's bias gradient.
    pub async fn looks(&self, image: &[u8], class: usize) -> Result<Looks, EngineError> {
        check_looks(image, class)?;
        let (l, acts) = (self.looks_pass.layout, &self.looks_pass.acts);
        let (mut x, mut y) = (vec![0.0f32; IMG_LEN], [0u32]);
        crate::cpu::gather(&mut x, &mut y, image, &[0], &[0], 0, 1);
        let mut dlogits = [0.0f32; CLASSES];
        dlogits[class] = 1.0;
        self.gpu.queue.write_buffer(acts, (l.x * 4) as u64, bytemuck::cast_slice(&x));
        self.gpu.queue.write_buffer(acts, (l.dlogits * 4) as u64, bytemuck::cast_slice(&dlogits));
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("looks") });
        encode(&mut enc, "looks", &[&self.looks_pass.forward[1..], &self.looks_pass.backward]);
        self.gpu.queue.submit([enc.finish()]);
        let b = self.read(acts, 0, (l.acts_len * 4) as u64, &self.looks_staging, 3.0).await?;
        let v: &[f32] = bytemuck::cast_slice(&b);
        let c2 = self.layout.arch.c2;
        let t = |at: usize, len: usize| v[at..at + len].to_vec();
        let (logits, dx, h2) = (t(l.logits, CLASSES), t(l.dx, IMG_LEN), t(l.h2, c2 * H2 * H2));
        let bias = &self.layout.specs[CONV2_B];
        let g = self.read(&self.looks_grads, (bias.offset * 4) as u64, (c2 * 4) as u64, &self.looks_staging, 0.0).await?;
        Ok(Looks { class, logits, dx, h2, dbias2: bytemuck::cast_slice(&g).to_vec() })
    }

    /// The packed parameters [P].
    pub async fn read_params(&self) -> Result<Vec<f32>, EngineError> {
        let b = self.read(&self.params, 0, (self.layout.total * 4) as u64, &self.params_staging, 0.0).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The packed momentum [P].
    pub async fn read_momentum(&self) -> Result<Vec<f32>, EngineError> {
        let b = self.read(&self.momentum, 0, (self.layout.total * 4) as u64, &self.params_staging, 0.0).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The packed gradients [P] of the last step.
    pub async fn read_grads(&self) -> Result<Vec<f32>, EngineError> {
        let b = self.read(&self.grads, 0, (self.layout.total * 4) as u64, &self.params_staging, 0.0).await?;
        Ok(bytemuck::cast_slice(&b).to_vec())
    }

    /// The logits [N,10] of the last training step's forward pass.
    pub async fn read_logits(&self) -> Result<Vec<f32>, EngineError> {
        let l = self.train_pass.layout;
        let len = (l.n * CLASSES * 4) as u64;
        if len > self.params_staging.size() {
            return Err(EngineError::limits(format!("read_logits: batch {} does not fit the staging buffer", l.n)));
        }
        let b = self.read(&self.train_pass.acts, (l.logits * 4) as u64, len, &self.params_staging, 0.0).await?;
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

    /// Where a training step's time goes: each dispatch of the step alone, `reps` times in a
    /// row, then the whole step `reps` times; microseconds per dispatch (and per step). Timed
    /// by the GPU's own clock (timestamps at the start and end of a compute pass per kernel)
    /// where the device has TIMESTAMP_QUERY, else by the wall clock around each submission
    /// and its readback; and each kernel inside the step's pass where timestamps can be
    /// written there (`Profile::in_step`). Runs the kernels for real, so it changes the
    /// parameters: profile a throwaway engine.
    pub async fn profile(&self, reps: usize) -> Result<Profile, EngineError> {
        let p = &self.train_pass;
        let kernels: Vec<&Dispatch> = p.forward.iter().chain(std::iter::once(&p.head)).chain(&p.backward).chain(std::iter::once(&self.sgd)).collect();
        let mut labels: Vec<String> = kernels.iter().map(|d| d.label.trim_start_matches("train ").to_string()).collect();
        labels.push("(whole step, for comparison)".into());
        // One timed unit: a kernel `reps` times, or (index == kernels.len()) the step.
        let lists = self.step_lists();
        let unit = |pass: &mut wgpu::ComputePass, i: usize| {
            for _ in 0..reps {
                match kernels.get(i) {
                    Some(d) => record(pass, std::slice::from_ref(*d)),
                    None => lists.iter().for_each(|l| record(pass, l)),
                }
            }
        };
        let us = if self.gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            self.profile_timestamps(labels.len(), reps, unit).await?
        } else {
            let mut us = Vec::new();
            for i in 0..labels.len() {
                for warm in [true, false] {
                    let t = web_time::Instant::now();
                    let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
                    unit(&mut enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile"), timestamp_writes: None }), i);
                    self.gpu.queue.submit([enc.finish()]);
                    self.read_metrics().await?;
                    if !warm {
                        us.push(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
                    }
                }
            }
            us
        };
        let in_step = match self.gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
            true => Some(self.profile_inside_pass(&kernels, reps).await?),
            false => None,
        };
        self.read_metrics().await?;
        let clock = if self.gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) { Clock::Timestamps } else { Clock::WallClock };
        Ok(Profile { clock, rows: labels.into_iter().zip(us).collect(), in_step })
    }

    /// The step `reps` times in one compute pass, as trained, with a timestamp before its first
    /// dispatch and after each: microseconds per kernel, averaged over the repetitions.
    async fn profile_inside_pass(&self, kernels: &[&Dispatch], reps: usize) -> Result<Vec<f64>, EngineError> {
        let per_step = kernels.len() + 1;
        // A query set holds at most 4,096 queries.
        let reps = reps.clamp(1, 4096 / per_step);
        let ts = Timestamps::new(&self.gpu, "profile timestamps inside the pass", per_step * reps);
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile inside the pass") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile inside the pass"), timestamp_writes: None });
            for r in 0..reps {
                let base = (r * per_step) as u32;
                pass.write_timestamp(&ts.set, base);
                for (i, d) in kernels.iter().enumerate() {
                    record(&mut pass, std::slice::from_ref(*d));
                    pass.write_timestamp(&ts.set, base + i as u32 + 1);
                }
            }
        }
        ts.resolve(&mut enc);
        self.gpu.queue.submit([enc.finish()]);
        let t = ts.read(&self.gpu).await?;
        let mean = |i: usize| (0..reps).map(|r| t.us(r * per_step + i, r * per_step + i + 1)).sum::<f64>() / reps as f64;
        Ok((0..kernels.len()).map(mean).collect())
    }

    /// `units` timed units, each in a compute pass of its own between two timestamps, after a
    /// warm-up of them all; microseconds per repetition from the GPU's clock.
    async fn profile_timestamps(&self, units: usize, reps: usize, unit: impl Fn(&mut wgpu::ComputePass, usize)) -> Result<Vec<f64>, EngineError> {
        let ts = Timestamps::new(&self.gpu, "profile timestamps", 2 * units);
        for timed in [false, true] {
            let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
            for i in 0..units {
                let writes = timed.then(|| wgpu::ComputePassTimestampWrites {
                    query_set: &ts.set,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                });
                unit(&mut enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile"), timestamp_writes: writes }), i);
            }
            if timed {
                ts.resolve(&mut enc);
            }
            self.gpu.queue.submit([enc.finish()]);
        }
        let t = ts.read(&self.gpu).await?;
        Ok((0..units).map(|i| t.us(2 * i, 2 * i + 1) / reps as f64).collect())
    }

    /// Read `size` bytes at `offset` of `src` through `staging`, within the deadline of the
    /// steps in flight and `work` steps' worth more.
    async fn read(&self, src: &wgpu::Buffer, offset: u64, size: u64, staging: &wgpu::Buffer, work: f64) -> Result<Vec<u8>, EngineError> {
        let busy = Arc::new(AtomicBool::new(true));
        self.gpu.start_read_back(src, offset, size, staging, busy, self.pace.deadline(work), |_| {}).wait().await
    }

    /// The network it trains.
    pub fn arch(&self) -> Arch {
        self.layout.arch
    }

    /// What one training step launches: the step's own encoding (`encode_step`) recorded
    /// into a tally, its dispatches, passes and copies counted there.
    pub fn step_shape(&self) -> StepShape {
        let mut t = Tally::default();
        self.encode_step(&mut t);
        StepShape { kernels: t.kernels, passes: t.passes, copies: t.copies }
    }

    /// One training step: forward, loss head, backward and update, in one compute pass.
    fn encode_step(&self, r: &mut impl Recorder) {
        encode(r, "train step", &self.step_lists());
    }

    /// The dispatch lists of one training step, in order.
    fn step_lists(&self) -> [&[Dispatch]; 4] {
        let p = &self.train_pass;
        [&p.forward, std::slice::from_ref(&p.head), &p.backward, std::slice::from_ref(&self.sgd)]
    }
}

impl Gpu {
    /// Run one kernel once over fresh buffers holding `buffers` (bindings 1.., in order; the
    /// uniform is binding 0) with `launch`, and return every buffer's contents afterwards.
    /// Allocates per call: for tests and tools, never in a training step.
    pub async fn run_kernel(&self, id: KernelId, launch: &Launch, uniform: &[u8], buffers: &[&[u8]]) -> Result<Vec<Vec<u8>>, EngineError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self.kernels.pipeline(&self.device, id, &launch.constants, "test");
        let uni = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("test uniform"), contents: uniform, usage: wgpu::BufferUsages::UNIFORM });
        let bufs: Vec<wgpu::Buffer> = buffers.iter().enumerate().map(|(i, b)| self.storage_init(&format!("{id:?} binding {}", i + 1), b)).collect();
        let mut all = vec![&uni];
        all.extend(bufs.iter());
        let bind = self.bind(&format!("{id:?}"), self.kernels.bgl(id), &all);
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run_kernel") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("run_kernel"), timestamp_writes: None });
            let (x, y, z) = launch.groups;
            pass.set_pipeline(&pipeline);
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
            return Err(EngineError::validation(format!("{id:?}: {e}")));
        }
        Ok(out)
    }
}

/// A set of GPU timestamps for the profile, the buffer they resolve into and its staging.
struct Timestamps {
    set: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
    count: u32,
}

impl Timestamps {
    fn new(gpu: &Gpu, label: &str, count: usize) -> Timestamps {
        let count = count as u32;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some(label), ty: wgpu::QueryType::Timestamp, count });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{label}, resolved")),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.staging(&format!("{label}, staging"), count as u64 * 8);
        Timestamps { set, resolved, staging, count }
    }

    /// Resolve every timestamp (after the passes that write them, in the same encoder).
    fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        enc.resolve_query_set(&self.set, 0..self.count, &self.resolved, 0);
    }

    /// The timestamps, as the GPU's ticks.
    async fn read(&self, gpu: &Gpu) -> Result<Ticks, EngineError> {
        let bytes = gpu.read_back(&self.resolved, 0, self.count as u64 * 8, &self.staging, |_| {}).await?;
        Ok(Ticks(bytemuck::cast_slice(&bytes).to_vec(), gpu.queue.get_timestamp_period() as f64))
    }
}

/// Resolved timestamps and the nanoseconds of one tick.
struct Ticks(Vec<u64>, f64);

impl Ticks {
    /// Microseconds from timestamp `a` to timestamp `b` (0 if the clock went backwards).
    fn us(&self, a: usize, b: usize) -> f64 {
        self.0[b].saturating_sub(self.0[a]) as f64 * self.1 / 1e3
    }
}
