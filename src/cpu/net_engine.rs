//! The CPU engine for any network (`net::Plan`): `NetLanes` over every core for the training
//! step, PyTorch's SGD on the trained tensors, batch norm's running statistics kept beside the
//! parameters, and forward-only lanes in evaluation mode for the test set and predictions. Its
//! methods are the LeNet `CpuEngine`'s, so `train::Engine`'s arms stay one line each.
//! Its memory is sized before anything is allocated; a step allocates nothing.

use super::engine::{all_cores, Threads, MAX_CPU_ENGINE_BYTES};
use super::net_lanes::{net_lane_bytes, NetLanes};
use super::reference::elementwise::mix;
use super::reference::net::Mode;
use super::reference::{self, PREDICT_BATCH};
use crate::augment::Augment;
use crate::data::Split;
use crate::model::{CLASSES, IMG_LEN};
use crate::net::plan::Plan;
use crate::outputs::{EngineError, EvalResult, Metrics};
use crate::recipe::{Hyper, Optimizer, Schedule, ADAM_BETAS, ADAM_EPS};
use std::sync::Mutex;

/// The most a piece of evaluation's forward passes may hold (as the LeNet engine's).
const PREDICT_BYTES: u64 = super::PREDICT_BYTES;

/// Images per piece of evaluation for `plan`: PREDICT_BATCH, fewer where their activations
/// would pass PREDICT_BYTES, at least one.
pub fn net_predict_piece(plan: &Plan) -> usize {
    (PREDICT_BYTES / net_lane_bytes(plan, 1, false).max(1)).clamp(1, PREDICT_BATCH as u64) as usize
}

/// What the engine of `plan` at `batch` on `threads` threads holds with `records` images, in
/// bytes, without allocating it: the training lanes, the evaluation lanes, parameters,
/// momentum and the summed gradient, the buffers, and the data.
pub fn net_engine_bytes(plan: &Plan, batch: usize, threads: usize, records: usize) -> u64 {
    let threads = threads.clamp(1, batch.max(1));
    let lanes: u64 = super::engine::split(batch, threads).map(|(_, n)| net_lane_bytes(plan, n, true)).sum();
    let piece = net_predict_piece(plan);
    let eval: u64 = super::engine::split(piece, threads).map(|(_, n)| net_lane_bytes(plan, n, false)).sum();
    let state = 4 * (3 * plan.params.total + plan.params.buffer_total) as u64;
    lanes + eval + state + records as u64 * (IMG_LEN as u64 + 1 + 4)
}

/// Whether the engine of `plan` at `batch` fits within MAX_CPU_ENGINE_BYTES; the error gives
/// the size and the largest batch that fits.
pub fn check_net_memory(plan: &Plan, batch: usize, threads: usize, records: usize) -> Result<(), EngineError> {
    let fits = |b: usize| net_engine_bytes(plan, b, threads, records) <= MAX_CPU_ENGINE_BYTES;
    if fits(batch) {
        return Ok(());
    }
    let (mut lo, mut hi) = (0, batch);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    let advice = if lo == 0 { "nothing fits: the network is too large for the CPU engine".to_string() } else { format!("batch {lo} fits") };
    Err(EngineError::limits(format!(
        "batch {batch} of this network needs {} MiB on the CPU engine, more than the {} MiB it may use: {advice}",
        net_engine_bytes(plan, batch, threads, records) >> 20,
        MAX_CPU_ENGINE_BYTES >> 20
    )))
}

/// What every engine of any network checks before it allocates: the weights and buffers are
/// the network's, the batch is 1 to the training records and trains its batch norms.
pub fn check_net_inputs(plan: &Plan, params: &[f32], buffers: &[f32], batch: usize, train_len: usize) -> Result<(), EngineError> {
    let p = &plan.params;
    if params.len() != p.total || buffers.len() != p.buffer_total {
        return Err(EngineError::settings(format!("{} weights and {} buffer values given, and this network has {} and {}", params.len(), buffers.len(), p.total, p.buffer_total)));
    }
    if batch == 0 || batch > train_len {
        return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {train_len} training records")));
    }
    plan.check_batch_norm(batch).map_err(EngineError::settings)
}

/// The CPU engine for any network.
pub struct NetEngine {
    pub plan: Plan,
    params: Vec<f32>,
    /// Batch norm's running statistics (packed as `Params::buffers`).
    buffers: Vec<f32>,
    momentum: Vec<f32>,
    /// AdamW's second moments (empty for SGD).
    second: Vec<f32>,
    optimizer: Optimizer,
    /// The ranges of the trained parameters (batch norm's fixed gamma is not one), each with
    /// its group's learning-rate multiplier.
    trained: Vec<(std::ops::Range<usize>, f32)>,
    batch: usize,
    lanes: NetLanes,
    /// Forward-only lanes for evaluation, behind a lock so that predicting takes `&self`.
    eval: Mutex<NetLanes>,
    threads: Threads,
    train: Split,
    test: Split,
    order: Vec<u32>,
    epoch_step: usize,
    acc: Metrics,
    lr: f32,
    mu: f32,
    weight_decay: f32,
    augment: Augment,
    /// Label smoothing of the loss, and Nesterov momentum (the recipe's).
    smoothing: f32,
    nesterov: bool,
    /// The dropout masks' stream: the run's seed, mixed with the step.
    seed: u32,
    steps_done: u64,
    /// A warm-up schedule over the run's steps, counted from `step_base` (`set_step_schedule`).
    schedule: Schedule,
    total: u64,
    step_base: u64,
}

impl NetEngine {
    /// `plan` with packed parameters `params` and buffers `buffers` (`Params`' packing),
    /// training at `hyper.batch` on `threads` threads (0: every core).
    pub fn new(plan: Plan, params: &[f32], buffers: &[f32], hyper: &Hyper, train: &Split, test: &Split, threads: usize) -> Result<NetEngine, EngineError> {
        check_net_inputs(&plan, params, buffers, hyper.batch, train.len())?;
        let p = &plan.params;
        let threads = if threads == 0 { all_cores() } else { threads };
        check_net_memory(&plan, hyper.batch, threads, train.len() + test.len())?;
        let threads = Threads::new(threads);
        let trained = p.params.iter().filter(|t| t.trained).map(|t| (t.range(), hyper.lr_groups[t.role.group()])).collect();
        let piece = net_predict_piece(&plan);
        Ok(NetEngine {
            lanes: NetLanes::new(plan.clone(), hyper.batch, threads.count, true),
            eval: Mutex::new(NetLanes::new(plan.clone(), piece, threads.count, false)),
            params: params.to_vec(),
            buffers: buffers.to_vec(),
            momentum: vec![0.0; p.total],
            second: vec![0.0; if hyper.optimizer == Optimizer::AdamW { p.total } else { 0 }],
            optimizer: hyper.optimizer,
            trained,
            batch: hyper.batch,
            threads,
            order: (0..train.len() as u32).collect(),
            train: train.clone(),
            test: test.clone(),
            epoch_step: 0,
            acc: Metrics::default(),
            lr: hyper.lr,
            mu: hyper.momentum,
            weight_decay: hyper.weight_decay,
            augment: Augment::default(),
            smoothing: hyper.label_smoothing,
            nesterov: hyper.nesterov,
            seed: mix(hyper.seed as u32 ^ mix((hyper.seed >> 32) as u32)),
            steps_done: 0,
            schedule: Schedule::Constant,
            total: 0,
            step_base: 0,
            plan,
        })
    }

    pub fn device(&self) -> String {
        let t = self.threads.count;
        format!("CPU engine ({t} thread{})", if t == 1 { "" } else { "s" })
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn train_len(&self) -> usize {
        self.train.len()
    }
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        (self.lr, self.mu, self.weight_decay) = (lr, momentum, weight_decay);
    }
    pub fn set_augment(&mut self, a: Augment) {
        self.augment = a;
    }
    pub fn begin_epoch(&mut self, order: &[u32], step: usize) {
        self.order.clear();
        self.order.extend_from_slice(order);
        self.epoch_step = step;
    }
    pub fn reset_counters(&mut self) {
        self.acc = Metrics::default();
    }

    /// Train at another batch size (the lanes are made anew; the weights stay).
    pub fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > self.train.len() {
            return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {} training records", self.train.len())));
        }
        self.plan.check_batch_norm(batch).map_err(EngineError::settings)?;
        check_net_memory(&self.plan, batch, self.threads.count, self.train.len() + self.test.len())?;
        // The old lanes go first: the peak holds one batch's lanes, not two.
        self.lanes = NetLanes::new(self.plan.clone(), 1, 1, true);
        self.lanes = NetLanes::new(self.plan.clone(), batch, self.threads.count, true);
        self.batch = batch;
        Ok(())
    }

    /// `steps` more steps of the epoch, with the metrics and divergence check of the others
    /// (a gradient or running statistic that is not finite diverged too: a ReLU or a pool can
    /// hide a NaN from the loss, not from these).
    pub fn train_steps(&mut self, steps: usize) {
        for _ in 0..steps {
            let base = self.epoch_step * self.batch;
            let (loss_sum, correct, finite) = self.step_on(base);
            self.acc.record_step(loss_sum, correct, self.batch, !finite);
            self.epoch_step += 1;
        }
    }

    pub fn submit_metrics(&mut self) -> Metrics {
        self.acc.take()
    }

    /// One step on the batch `order[base..base+N]`: forward (batch statistics, dropout), the
    /// mean loss, backward, and SGD. Returns the batch's loss sum, correct predictions, and
    /// whether its gradient and the running statistics are finite.
    fn step_on(&mut self, base: usize) -> (f32, u32, bool) {
        let seed = self.dropout_seed_of(self.steps_done);
        let factor = self.schedule.step_factor(self.steps_done - self.step_base, self.total);
        // AdamW's bias correction counts this run's steps from 1.
        let t = self.steps_done - self.step_base + 1;
        self.steps_done += 1;
        self.lanes.gather(&self.train.images, &self.train.labels, &self.order, base, &self.augment);
        self.lanes.forward(&self.threads, &self.params, &mut self.buffers, Mode::Train, seed);
        let (loss, correct) = self.lanes.loss(self.smoothing);
        self.lanes.backward(&self.threads, &self.params, seed);
        match self.optimizer {
            Optimizer::Sgd => self.update(factor),
            Optimizer::AdamW => self.update_adamw(factor, t),
        }
        let finite = self.lanes.grads.iter().chain(&self.buffers).all(|v| v.is_finite());
        (loss, correct, finite)
    }

    /// PyTorch's SGD with momentum on the trained tensors: g' = g + wd p; v = mu v + g';
    /// p -= lr v, or with Nesterov p -= lr (g' + mu v); a group trains at lr x m with weight
    /// decay wd / m (its multiplier m); `factor` is the schedule's for this step.
    fn update(&mut self, factor: f32) {
        let (mu, nesterov) = (self.mu, self.nesterov);
        for (r, m) in &self.trained {
            let (lr, wd) = (self.lr * m * factor, self.weight_decay / m);
            for ((p, m), &g) in self.params[r.clone()].iter_mut().zip(&mut self.momentum[r.clone()]).zip(&self.lanes.grads[r.clone()]) {
                let g = g + wd * *p;
                let v = mu * *m + g;
                *m = v;
                *p -= lr * if nesterov { g + mu * v } else { v };
            }
        }
    }

    /// PyTorch's AdamW on the trained tensors at step `t` (from 1): p -= lr wd p; m = b1 m +
    /// (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) +
    /// eps). The groups scale lr and divide wd as for SGD; `factor` is the schedule's.
    fn update_adamw(&mut self, factor: f32, t: u64) {
        let (b1, b2) = ADAM_BETAS;
        let (c1, c2) = (1.0 - b1.powi(t.min(i32::MAX as u64) as i32), 1.0 - b2.powi(t.min(i32::MAX as u64) as i32));
        for (r, m) in &self.trained {
            let (lr, wd) = (self.lr * m * factor, self.weight_decay / m);
            let it = self.params[r.clone()].iter_mut().zip(&mut self.momentum[r.clone()]).zip(&mut self.second[r.clone()]).zip(&self.lanes.grads[r.clone()]);
            for (((p, m1), m2), &g) in it {
                *p -= lr * wd * *p;
                *m1 = b1 * *m1 + (1.0 - b1) * g;
                *m2 = b2 * *m2 + (1.0 - b2) * g * g;
                *p -= lr * (*m1 / c1) / ((*m2 / c2).sqrt() + ADAM_EPS);
            }
        }
    }

    /// The seed of the dropout masks of the engine's step `step` (0-based): the run's seed
    /// mixed with the step (each layer mixes in its own place).
    pub fn dropout_seed_of(&self, step: u64) -> u32 {
        mix(self.seed ^ mix(step as u32 ^ 0x5eed))
    }

    /// The gradient of the last step, summed over the lanes.
    pub fn grads(&self) -> Vec<f32> {
        self.lanes.grads.clone()
    }

    /// The logits [R,10] of records `index` of `images` in evaluation mode (the running
    /// statistics, no dropout), a piece at a time over the threads.
    pub fn logits(&self, images: &[u8], index: &[u32]) -> Vec<f32> {
        let mut eval = self.eval.lock().unwrap_or_else(|e| e.into_inner());
        let piece = eval.batch;
        let labels = vec![0u8; images.len() / IMG_LEN];
        let mut logits = vec![0.0; index.len() * CLASSES];
        let mut buffers = self.buffers.clone();
        for (part, out) in index.chunks(piece).zip(logits.chunks_mut(piece * CLASSES)) {
            for l in &mut eval.lanes {
                // A short last piece leaves the lanes' last images as they were: evaluation
                // treats each image alone, so they change nothing and are not read.
                let n = part.len().saturating_sub(l.lo).min(l.n);
                reference::gather(&mut l.x, &mut l.y, images, &labels, part, l.lo, n);
            }
            eval.forward(&self.threads, &self.params, &mut buffers, Mode::Eval, 0);
            for l in eval.lanes.iter().filter(|l| l.lo < part.len()) {
                let n = (part.len() - l.lo).min(l.n);
                out[l.lo * CLASSES..][..n * CLASSES].copy_from_slice(&l.logits(&self.plan)[..n * CLASSES]);
            }
        }
        logits
    }

    pub fn probabilities(&self, images: &[u8], index: &[u32]) -> Vec<[f32; CLASSES]> {
        self.logits(images, index).chunks_exact(CLASSES).map(reference::softmax).collect()
    }

    pub fn predict_range(&self, images: &[u8], start: usize, count: usize) -> Vec<u32> {
        let index: Vec<u32> = (start as u32..(start + count) as u32).collect();
        self.logits(images, &index).chunks_exact(CLASSES).map(reference::prediction).collect()
    }

    pub async fn evaluate(&self) -> Result<EvalResult, EngineError> {
        Ok(self.evaluate_unless(&|| false).await?.expect("never stopped"))
    }

    /// The test set's predictions in pieces, the event loop let in between; given up between
    /// two pieces when `stop()` says so.
    pub async fn evaluate_unless(&self, stop: &dyn Fn() -> bool) -> Result<Option<EvalResult>, EngineError> {
        let n = self.test.len();
        let mut preds = Vec::with_capacity(n);
        let index: Vec<u32> = (0..n as u32).collect();
        for piece in index.chunks(PREDICT_BATCH) {
            preds.extend(self.logits(&self.test.images, piece).chunks_exact(CLASSES).map(reference::prediction));
            crate::timer::yield_now().await;
            if preds.len() < n && stop() {
                return Ok(None);
            }
        }
        Ok(Some(EvalResult::from_preds(preds, &self.test.labels)))
    }

    pub fn read_params(&self) -> Vec<f32> {
        self.params.clone()
    }
    pub fn read_momentum(&self) -> Vec<f32> {
        self.momentum.clone()
    }
    /// Batch norm's running statistics (packed as `Params::buffers`).
    pub fn read_buffers(&self) -> Vec<f32> {
        self.buffers.clone()
    }
    /// The training steps behind the weights (batch norm's `num_batches_tracked`).
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }
    /// Go on from `steps` steps (a loaded model's): the step count and dropout's masks; the
    /// run's schedule counts from here.
    pub fn set_steps_done(&mut self, steps: u64) {
        (self.steps_done, self.step_base) = (steps, steps);
    }

    /// Train the run's `total` steps under `schedule`'s per-step factor (a warm-up schedule;
    /// the others are set per epoch through `set_hyper`).
    pub fn set_step_schedule(&mut self, schedule: Schedule, total: u64) {
        (self.schedule, self.total) = (schedule, total);
    }
    /// Replace parameters, momentum and buffers (resuming; lengths checked by the caller).
    pub fn write_state(&mut self, params: &[f32], momentum: &[f32], buffers: &[f32]) {
        self.params.copy_from_slice(params);
        self.momentum.copy_from_slice(momentum);
        self.buffers.copy_from_slice(buffers);
    }
}
