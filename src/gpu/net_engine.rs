//! `GpuNetEngine`: any network (`net::Plan`) trained on the GPU. Parameters, gradients and
//! momentum are packed buffers [P] at `Params`' offsets, batch norm's running statistics a
//! buffer of their own, the datasets uploaded once as u8 records (`upload_split`). A training
//! step is one command buffer of one compute pass: the gather, the layers' forward, the loss,
//! their backward and SGD on the trained tensors (`net_pass`, net_optim.wgsl); loss and
//! accuracy accumulate on the GPU and come back only through the metrics readback. Its methods
//! are the LeNet `GpuEngine`'s, so `train::Engine`'s arms stay one line.

use super::engine::{run_evaluation, submit_steps, upload_split, EvalPasses, EvalStaging, MetricSlots, MetricsPending};
use super::kernels::*;
use super::net_kernels::{make_dispatch, net_flat, NetSgdParams};
use super::net_pass::{build_net_pass, NetPass, NetShared};
use super::pace::Pace;
use super::pass::{encode, DataBufs, Dispatch, Recorder, StepShape, Tally};
use super::{EngineError, Gpu};
use crate::augment::Augment;
use crate::cpu::net_engine::check_net_inputs;
use crate::cpu::reference::elementwise::mix;
use crate::data::Split;
use crate::model::{ALIGN, CLASSES};
use crate::net::plan::Plan;
use crate::outputs::{EvalResult, Metrics};
use crate::recipe::{Hyper, Optimizer, Schedule};

/// The GPU engine of any network.
pub struct GpuNetEngine {
    pub gpu: Gpu,
    pub plan: Plan,
    pub batch: usize,
    pub eval_batch: usize,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    momentum: wgpu::Buffer,
    buffers: wgpu::Buffer,
    /// One word per 64-float block of the parameters: 1 where it is trained.
    trained: wgpu::Buffer,
    metrics: wgpu::Buffer,
    metric_slots: MetricSlots,
    confusion_staging: wgpu::Buffer,
    pace: Pace,
    preds: wgpu::Buffer,
    preds_staging: wgpu::Buffer,
    params_staging: wgpu::Buffer,
    sgd_uniform: wgpu::Buffer,
    sgd: Dispatch,
    /// Advances the step counter after the update (a dispatch of its own, see net_optim.wgsl).
    count: Dispatch,
    train: DataBufs,
    test: DataBufs,
    train_pass: NetPass,
    eval_pass: NetPass,
    augment: Augment,
    /// The dropout masks' run seed (the CPU engine's, so both draw the same masks).
    seed: u32,
    /// The optimizer's learning rate, momentum and weight decay (`set_hyper`).
    hyper: (f32, f32, f32),
    nesterov: bool,
    smoothing: f32,
    /// The parameter groups' learning-rate multipliers.
    mult: [f32; 3],
    optimizer: Optimizer,
    /// AdamW's second moments [P] (4 bytes for SGD).
    second: wgpu::Buffer,
    /// A warm-up schedule's steps, first and last factors and the run's steps (all 0: none),
    /// and the step counter's value at the run's start.
    schedule: [f32; 4],
    step_base: u32,
}

/// The dropout masks' run seed of `seed` (as `cpu::net_engine::NetEngine` mixes it).
pub fn run_seed(seed: u64) -> u32 {
    mix(seed as u32 ^ mix((seed >> 32) as u32))
}

impl GpuNetEngine {
    /// Upload `plan`'s parameters and buffers and the datasets, and build every buffer and
    /// dispatch for training at `hyper.batch`; a buffer past the device's binding limit is
    /// refused with the largest batch that fits.
    pub async fn new(gpu: &Gpu, plan: Plan, params: &[f32], buffers: &[f32], hyper: &Hyper, train: &Split, test: &Split) -> Result<GpuNetEngine, EngineError> {
        check_net_inputs(&plan, params, buffers, hyper.batch, train.len())?;
        let p = &plan.params;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let p_bytes = (p.total * 4) as u64;
        let params_buf = gpu.storage_init("params [P] (every layer's weights, PyTorch's order)", bytemuck::cast_slice(params));
        let grads = gpu.storage("grads [P]", p_bytes);
        let momentum = gpu.storage("momentum [P] (AdamW: the first moments)", p_bytes);
        let adamw = hyper.optimizer == Optimizer::AdamW;
        let second = gpu.storage("AdamW's second moments [P] (SGD: unused)", if adamw { p_bytes } else { 4 });
        let buffers_buf = gpu.storage_init("buffers (batch norm's running mean and variance)", bytemuck::cast_slice(buffers));
        // Each 64-float block's group: 0 fixed, 1 + the group of a trained tensor.
        let mut blocks = vec![0u32; p.total / ALIGN];
        for t in p.params.iter().filter(|t| t.trained) {
            blocks[t.offset / ALIGN..(t.offset + t.len()).div_ceil(ALIGN)].fill(1 + t.role.group() as u32);
        }
        let trained = gpu.storage_init("trained blocks [P/64] (their groups)", bytemuck::cast_slice(&blocks));
        let metrics = gpu.storage("metrics (loss, correct, counters, confusion[10,10])", (M_WORDS * 4) as u64);
        let preds = gpu.storage("test predictions [R]", (test.len() * 4) as u64);
        let train_bufs = upload_split(gpu, "train", train)?;
        let test_bufs = upload_split(gpu, "test", test)?;
        let seed = run_seed(hyper.seed);
        let sh = NetShared { params: &params_buf, grads: &grads, buffers: &buffers_buf, metrics: &metrics, preds: &preds, seed, smoothing: hyper.label_smoothing };
        let train_pass = build_net_pass(gpu, "train", &plan, hyper.batch, true, &train_bufs, &sh)?;
        // Evaluation in batches of up to 500, fewer where a buffer would pass the binding.
        let mut eval_batch = 500.min(test.len().max(1));
        let eval_pass = loop {
            match build_net_pass(gpu, "eval", &plan, eval_batch, false, &test_bufs, &sh) {
                Ok(pass) => break pass,
                Err(e) if eval_batch == 1 => return Err(e),
                Err(_) => eval_batch = eval_batch * 3 / 4,
            }
        };
        let sgd_params = NetSgdParams {
            len: (p.total / 4) as u32,
            lr: hyper.lr,
            momentum: hyper.momentum,
            weight_decay: hyper.weight_decay,
            step_word: train_pass.layout.step_word,
            nesterov: hyper.nesterov as u32,
            mult: hyper.lr_groups,
            ..Default::default()
        };
        let opt = if adamw { KernelId::NetAdamW } else { KernelId::NetSgd };
        let (sgd, sgd_uniform) = make_sgd(gpu, opt, &sgd_params, [&params_buf, &grads, &momentum, &trained, &train_pass.ints, &second]);
        let count = make_count(gpu, &sgd_uniform, [&params_buf, &grads, &momentum, &trained, &train_pass.ints, &second]);
        if let Some(e) = scope.pop().await {
            return Err(EngineError::validation(format!("setting up the GPU engine failed: {e}")));
        }
        Ok(GpuNetEngine {
            gpu: gpu.clone(),
            batch: hyper.batch,
            eval_batch,
            params: params_buf,
            grads,
            momentum,
            buffers: buffers_buf,
            trained,
            metric_slots: MetricSlots::new(gpu),
            confusion_staging: gpu.staging("confusion staging [10,10]", (CLASSES * CLASSES * 4) as u64),
            pace: Pace::default(),
            preds_staging: gpu.staging("test predictions staging", (test.len() * 4) as u64),
            params_staging: gpu.staging("params staging", p_bytes.max(4 * p.buffer_total as u64)),
            metrics,
            preds,
            sgd_uniform,
            sgd,
            count,
            train: train_bufs,
            test: test_bufs,
            train_pass,
            eval_pass,
            augment: Augment::default(),
            seed,
            hyper: (hyper.lr, hyper.momentum, hyper.weight_decay),
            nesterov: hyper.nesterov,
            smoothing: hyper.label_smoothing,
            mult: hyper.lr_groups,
            optimizer: hyper.optimizer,
            second,
            schedule: [0.0; 4],
            step_base: 0,
            plan,
        })
    }

    pub fn device(&self) -> String {
        format!("GPU: {}", self.gpu.adapter)
    }
    pub fn train_len(&self) -> usize {
        self.train.count
    }

    /// Train at another batch size from now on (new activations and dispatches; the data and
    /// the weights stay).
    pub async fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > self.train.count {
            return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {} training records", self.train.count)));
        }
        self.plan.check_batch_norm(batch).map_err(EngineError::settings)?;
        let scope = self.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let sh =
            NetShared { params: &self.params, grads: &self.grads, buffers: &self.buffers, metrics: &self.metrics, preds: &self.preds, seed: self.seed, smoothing: self.smoothing };
        let pass = build_net_pass(&self.gpu, "train", &self.plan, batch, true, &self.train, &sh)?;
        let step = self.read_step().await?;
        let sgd_params = NetSgdParams { step_word: pass.layout.step_word, ..self.sgd_params() };
        let opt = if self.optimizer == Optimizer::AdamW { KernelId::NetAdamW } else { KernelId::NetSgd };
        let (sgd, sgd_uniform) = make_sgd(&self.gpu, opt, &sgd_params, [&self.params, &self.grads, &self.momentum, &self.trained, &pass.ints, &self.second]);
        let count = make_count(&self.gpu, &sgd_uniform, [&self.params, &self.grads, &self.momentum, &self.trained, &pass.ints, &self.second]);
        // The dropout masks go on from the step the old pass reached.
        self.gpu.queue.write_buffer(&pass.ints, (pass.layout.step_word * 4) as u64, bytemuck::bytes_of(&step));
        if let Some(e) = scope.pop().await {
            return Err(EngineError::validation(format!("setting up batch {batch} failed: {e}")));
        }
        (self.train_pass, self.sgd_uniform, self.sgd, self.count, self.batch) = (pass, sgd_uniform, sgd, count, batch);
        self.set_augment(self.augment);
        Ok(())
    }

    fn sgd_params(&self) -> NetSgdParams {
        let (lr, momentum, weight_decay) = self.hyper;
        NetSgdParams {
            len: (self.plan.params.total / 4) as u32,
            lr,
            momentum,
            weight_decay,
            step_word: self.train_pass.layout.step_word,
            nesterov: self.nesterov as u32,
            mult: self.mult,
            warm: self.schedule[0],
            start: self.schedule[1],
            end: self.schedule[2],
            total: self.schedule[3],
            base: self.step_base,
            _pad: [0; 2],
        }
    }

    /// The steps the training pass has taken (its dropout counter).
    async fn read_step(&self) -> Result<u32, EngineError> {
        let w = self.train_pass.layout.step_word as u64 * 4;
        let b = self.read(&self.train_pass.ints, w, 4, &self.params_staging, 0.0).await?;
        Ok(bytemuck::cast_slice::<u8, u32>(&b)[0])
    }

    pub fn set_augment(&mut self, a: Augment) {
        self.augment = a;
        let (buf, mut g) = self.train_pass.gather.clone();
        (g.aug, g.key) = (a.bits(), a.key);
        self.gpu.queue.write_buffer(&buf, 0, bytemuck::bytes_of(&g));
    }

    pub fn reset_counters(&self) {
        self.pace.reset();
        self.gpu.queue.write_buffer(&self.metrics, 0, &[0u8; M_WORDS * 4]);
    }

    /// Learning rate, momentum and weight decay for the next steps (one small upload).
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        self.hyper = (lr, momentum, weight_decay);
        self.gpu.queue.write_buffer(&self.sgd_uniform, 0, bytemuck::bytes_of(&self.sgd_params()));
    }

    pub fn begin_epoch(&self, order: &[u32], step: usize) {
        assert_eq!(order.len(), self.train.count);
        self.gpu.queue.write_buffer(&self.train.index, 0, bytemuck::cast_slice(order));
        self.gpu.queue.write_buffer(&self.metrics, (M_EPOCH_STEP * 4) as u64, bytemuck::bytes_of(&(step as u32)));
    }

    /// `steps` training steps, one command buffer each (`engine::submit_steps`).
    pub fn train_steps(&self, steps: usize) {
        submit_steps(&self.gpu, &self.pace, steps, |enc| self.encode_step(enc));
    }

    /// One training step: gather, forward, loss, backward and SGD in one compute pass.
    fn encode_step(&self, r: &mut impl Recorder) {
        let p = &self.train_pass;
        encode(r, "train step", &[&p.forward, std::slice::from_ref(&p.head), &p.backward, std::slice::from_ref(&self.sgd), std::slice::from_ref(&self.count)]);
    }

    /// What one training step launches (`tabcnn bench --shape`): the step's own encoding
    /// recorded into a tally.
    pub fn step_shape(&self) -> StepShape {
        let mut t = Tally::default();
        self.encode_step(&mut t);
        StepShape { kernels: t.kernels, passes: t.passes, copies: t.copies }
    }

    pub fn submit_metrics(&self) -> MetricsPending {
        self.metric_slots.submit(&self.gpu, &self.metrics, &self.pace)
    }

    pub async fn metrics(&self, p: MetricsPending) -> Result<Metrics, EngineError> {
        p.read(&self.pace).await
    }

    /// The test set through the network as `net.eval()` has it, in batches of `eval_batch`:
    /// the confusion matrix and every prediction, one command buffer and one readback each.
    pub async fn evaluate(&self) -> Result<EvalResult, EngineError> {
        let s = EvalStaging { metrics: &self.metrics, confusion: &self.confusion_staging, preds: &self.preds, preds_staging: &self.preds_staging };
        let passes = EvalPasses { forward: &self.eval_pass.forward, head: &self.eval_pass.head, batch: self.eval_batch, train_batch: self.batch };
        run_evaluation(&self.gpu, &self.pace, s, passes, self.test.count).await
    }

    async fn read_floats(&self, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, EngineError> {
        let b = self.read(src, 0, (len * 4).max(4) as u64, &self.params_staging, 0.0).await?;
        Ok(bytemuck::cast_slice(&b)[..len].to_vec())
    }

    pub async fn read_params(&self) -> Result<Vec<f32>, EngineError> {
        self.read_floats(&self.params, self.plan.params.total).await
    }
    pub async fn read_momentum(&self) -> Result<Vec<f32>, EngineError> {
        self.read_floats(&self.momentum, self.plan.params.total).await
    }
    pub async fn read_grads(&self) -> Result<Vec<f32>, EngineError> {
        self.read_floats(&self.grads, self.plan.params.total).await
    }
    /// Batch norm's running statistics (packed as `Params::buffers`).
    pub async fn read_buffers(&self) -> Result<Vec<f32>, EngineError> {
        self.read_floats(&self.buffers, self.plan.params.buffer_total).await
    }
    /// Go on from `steps` steps (a loaded model's): the step count and dropout's masks; the
    /// run's schedule counts from here.
    pub fn set_steps_done(&mut self, steps: u64) {
        let w = (self.train_pass.layout.step_word * 4) as u64;
        self.gpu.queue.write_buffer(&self.train_pass.ints, w, bytemuck::bytes_of(&(steps as u32)));
        self.step_base = steps as u32;
        self.gpu.queue.write_buffer(&self.sgd_uniform, 0, bytemuck::bytes_of(&self.sgd_params()));
    }

    /// Train the run's `total` steps under `schedule`'s per-step factor (a warm-up schedule;
    /// the others are set per epoch through `set_hyper`).
    pub fn set_step_schedule(&mut self, schedule: Schedule, total: u64) {
        self.schedule = match schedule {
            Schedule::Warmup { warm, start, end } => [(warm as f64 * total as f64).floor() as f32, start, end, total as f32],
            _ => [0.0; 4],
        };
        self.gpu.queue.write_buffer(&self.sgd_uniform, 0, bytemuck::bytes_of(&self.sgd_params()));
    }

    /// The training steps taken (batch norm's `num_batches_tracked`).
    pub async fn steps_done(&self) -> Result<u64, EngineError> {
        Ok(self.read_step().await? as u64)
    }

    /// Replace the parameters, momentum and buffers (resuming; lengths checked by the caller).
    pub fn write_state(&self, params: &[f32], momentum: &[f32], buffers: &[f32]) {
        self.gpu.queue.write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        self.gpu.queue.write_buffer(&self.momentum, 0, bytemuck::cast_slice(momentum));
        if !buffers.is_empty() {
            self.gpu.queue.write_buffer(&self.buffers, 0, bytemuck::cast_slice(buffers));
        }
    }

    async fn read(&self, src: &wgpu::Buffer, offset: u64, size: u64, staging: &wgpu::Buffer, work: f64) -> Result<Vec<u8>, EngineError> {
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        self.gpu.start_read_back(src, offset, size, staging, busy, self.pace.deadline(work), |_| {}).wait().await
    }
}

/// The optimizer's dispatch over the packed parameters (`id`: NetSgd or NetAdamW; bindings:
/// params, grads, momentum, trained blocks, the training pass's ints, AdamW's second moments)
/// and its uniform.
fn make_sgd(gpu: &Gpu, id: KernelId, p: &NetSgdParams, bufs: [&wgpu::Buffer; 6]) -> (Dispatch, wgpu::Buffer) {
    let len = p.len as usize;
    make_dispatch(gpu, "optimizer", id, p, &bufs, net_flat(len, 0, (len * 16 * 5) as u64))
}

/// The step counter's dispatch: one invocation, the SGD's uniform and bindings.
fn make_count(gpu: &Gpu, uniform: &wgpu::Buffer, bufs: [&wgpu::Buffer; 6]) -> Dispatch {
    let label = "step count".to_string();
    let mut all = vec![uniform];
    all.extend_from_slice(&bufs);
    let bind = gpu.bind(&label, gpu.kernels.bgl(KernelId::StepCount), &all);
    let launch = Launch { constants: vec![], groups: (1, 1, 1), wg: 1, macs: 0, bytes: 8 };
    Dispatch { label, pipeline: gpu.kernels.pipeline(&gpu.device, KernelId::StepCount, &[], "net"), bind, launch }
}
