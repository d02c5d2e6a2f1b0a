//! The training loop shared by every front end (CLI, tests, the page): an `Engine` (GPU or
//! CPU, same operations), epochs shuffled from the seed, metrics read back every few hundred
//! steps, divergence caught at the step it happened, and the test-set evaluation.

use crate::augment::Augment;
use crate::cpu::net_engine::NetEngine;
use crate::cpu::CpuEngine;
use crate::gpu::net_engine::GpuNetEngine;
use crate::gpu::GpuEngine;
use crate::model::Rng;
use crate::outputs::{EngineError, EvalResult, Inside, Looks, Metrics};
use crate::recipe::Hyper;
use std::borrow::BorrowMut;
use std::fmt;
use web_time::Instant;

/// A training engine: the same operations on the GPU or on the CPU (or, with the `burn`
/// feature, burn's LeNet on burn-wgpu, the peer the benchmark races).
// The engines live one per run; boxing the larger one buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    Gpu(GpuEngine),
    Cpu(CpuEngine),
    /// The CPU engine for a network that is not LeNet-shaped (a loop over its layers).
    Net(NetEngine),
    /// The GPU engine for a network that is not LeNet-shaped.
    GpuNet(GpuNetEngine),
    #[cfg(feature = "burn")]
    Burn(crate::burn_net::BurnTrainer),
}

/// Metrics on their way back from an engine (`Engine::submit_metrics`): a readback in flight
/// on the GPU, already there on the CPU.
pub enum MetricsTicket {
    Gpu(crate::gpu::MetricsPending),
    Ready(Result<Metrics, EngineError>),
}

impl Engine {
    /// What it runs on, for the user.
    pub fn device(&self) -> String {
        match self {
            Engine::Gpu(g) => format!("GPU: {}", g.gpu.adapter),
            Engine::GpuNet(g) => format!("GPU: {}", g.gpu.adapter),
            Engine::Cpu(c) => c.device(),
            Engine::Net(c) => c.device(),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.name.clone(),
        }
    }
    pub fn batch(&self) -> usize {
        match self {
            Engine::Gpu(g) => g.batch,
            Engine::GpuNet(g) => g.batch,
            Engine::Cpu(c) => c.batch(),
            Engine::Net(c) => c.batch(),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.batch,
        }
    }
    pub fn train_len(&self) -> usize {
        match self {
            Engine::Gpu(g) => g.train_len(),
            Engine::GpuNet(g) => g.train_len(),
            Engine::Cpu(c) => c.train_len(),
            Engine::Net(c) => c.train_len(),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.train_len(),
        }
    }
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        match self {
            Engine::Gpu(g) => g.set_hyper(lr, momentum, weight_decay),
            Engine::GpuNet(g) => g.set_hyper(lr, momentum, weight_decay),
            Engine::Cpu(c) => c.set_hyper(lr, momentum, weight_decay),
            Engine::Net(c) => c.set_hyper(lr, momentum, weight_decay),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.set_hyper(lr, momentum, weight_decay),
        }
    }
    /// Start an epoch in this order of the training records, at step `step` of it (0 unless
    /// resuming).
    pub fn begin_epoch(&mut self, order: &[u32], step: usize) {
        match self {
            Engine::Gpu(g) => g.begin_epoch(order, step),
            Engine::GpuNet(g) => g.begin_epoch(order, step),
            Engine::Cpu(c) => c.begin_epoch(order, step),
            Engine::Net(c) => c.begin_epoch(order, step),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.begin_epoch(order, step),
        }
    }
    /// Run `steps` more steps of the epoch (queued on the GPU; done at once on the CPU).
    pub fn train_steps(&mut self, steps: usize) {
        match self {
            Engine::Gpu(g) => g.train_steps(steps),
            Engine::GpuNet(g) => g.train_steps(steps),
            Engine::Cpu(c) => c.train_steps(steps),
            Engine::Net(c) => c.train_steps(steps),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.train_steps(steps),
        }
    }
    /// Metrics since the last call (this is the point where queued GPU work is waited for).
    pub async fn read_metrics(&mut self) -> Result<Metrics, EngineError> {
        let t = self.submit_metrics();
        self.metrics(t).await
    }
    /// Queue the readback of the metrics since the last call, after the steps submitted so
    /// far; steps submitted after it run while it comes back (`metrics` waits for it).
    pub fn submit_metrics(&mut self) -> MetricsTicket {
        match self {
            Engine::Gpu(g) => MetricsTicket::Gpu(g.submit_metrics()),
            Engine::GpuNet(g) => MetricsTicket::Gpu(g.submit_metrics()),
            Engine::Cpu(c) => MetricsTicket::Ready(Ok(c.submit_metrics())),
            Engine::Net(c) => MetricsTicket::Ready(Ok(c.submit_metrics())),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => MetricsTicket::Ready(b.read_metrics()),
        }
    }
    /// The metrics a `submit_metrics` queued.
    pub async fn metrics(&self, t: MetricsTicket) -> Result<Metrics, EngineError> {
        match (self, t) {
            (Engine::Gpu(g), MetricsTicket::Gpu(p)) => g.metrics(p).await,
            (Engine::GpuNet(g), MetricsTicket::Gpu(p)) => g.metrics(p).await,
            (_, MetricsTicket::Ready(m)) => m,
            (_, MetricsTicket::Gpu(_)) => unreachable!("a GPU readback comes from the GPU engine"),
        }
    }
    pub async fn evaluate(&self) -> Result<EvalResult, EngineError> {
        match self {
            Engine::Gpu(g) => g.evaluate().await,
            Engine::GpuNet(g) => g.evaluate().await,
            Engine::Cpu(c) => c.evaluate().await,
            Engine::Net(c) => c.evaluate().await,
            #[cfg(feature = "burn")]
            Engine::Burn(b) => Ok(b.evaluate()),
        }
    }
    /// `evaluate`, given up when `stop()` says so between the pieces the CPU engine predicts
    /// (None then); the GPU's evaluation is one submission, answered as it ends.
    pub async fn evaluate_unless(&self, stop: &dyn Fn() -> bool) -> Result<Option<EvalResult>, EngineError> {
        match self {
            Engine::Cpu(c) => c.evaluate_unless(stop).await,
            Engine::Net(c) => c.evaluate_unless(stop).await,
            _ => self.evaluate().await.map(Some),
        }
    }
    pub async fn read_params(&self) -> Result<Vec<f32>, EngineError> {
        match self {
            Engine::Gpu(g) => g.read_params().await,
            Engine::GpuNet(g) => g.read_params().await,
            Engine::Cpu(c) => Ok(c.read_params()),
            Engine::Net(c) => Ok(c.read_params()),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => Ok(b.read_params()),
        }
    }
    /// The gradient [P] of the last step (the page's gradient histograms and norms).
    pub async fn read_grads(&self) -> Result<Vec<f32>, EngineError> {
        match self {
            Engine::Gpu(g) => g.read_grads().await,
            Engine::GpuNet(g) => g.read_grads().await,
            Engine::Cpu(c) => Ok(c.grads()),
            Engine::Net(c) => Ok(c.grads()),
            #[cfg(feature = "burn")]
            Engine::Burn(_) => Err(EngineError::settings("the burn engine does not keep its gradients")),
        }
    }
    pub async fn read_momentum(&self) -> Result<Vec<f32>, EngineError> {
        match self {
            Engine::Gpu(g) => g.read_momentum().await,
            Engine::GpuNet(g) => g.read_momentum().await,
            Engine::Cpu(c) => Ok(c.read_momentum()),
            Engine::Net(c) => Ok(c.read_momentum()),
            #[cfg(feature = "burn")]
            Engine::Burn(_) => {
                Err(EngineError::settings("the burn engine keeps its momentum inside burn's optimizer, which does not expose it: checkpoints need the gpu or cpu engine"))
            }
        }
    }
    /// Replace parameters and momentum (resuming a run).
    pub fn write_state(&mut self, params: &[f32], momentum: &[f32]) -> Result<(), EngineError> {
        let (want, name) = (self.params_len(), self.network_name());
        if params.len() != want || momentum.len() != want {
            return Err(EngineError::settings(format!("{} weights and {} momentum values given, and {name} network has {want}", params.len(), momentum.len())));
        }
        match self {
            Engine::Gpu(g) => g.write_state(params, momentum),
            Engine::GpuNet(g) => {
                if g.plan.params.buffer_total > 0 {
                    return Err(EngineError::settings("a run of a network with batch norm cannot continue from a checkpoint yet: checkpoints do not hold its running statistics"));
                }
                g.write_state(params, momentum, &[])
            }
            Engine::Cpu(c) => c.write_state(params, momentum),
            Engine::Net(c) => {
                if c.plan.params.buffer_total > 0 {
                    return Err(EngineError::settings("a run of a network with batch norm cannot continue from a checkpoint yet: checkpoints do not hold its running statistics"));
                }
                c.write_state(params, momentum, &[])
            }
            #[cfg(feature = "burn")]
            Engine::Burn(b) => {
                if momentum.iter().any(|&v| v != 0.0) {
                    return Err(EngineError::settings("the burn engine cannot take a momentum state (burn's optimizer does not accept one): resume with the gpu or cpu engine"));
                }
                b.write_params(params);
            }
        }
        Ok(())
    }
    /// Train the run's `total` steps under a per-step schedule (a warm-up: the engines of any
    /// network; the others' schedules are per epoch, through `set_hyper`).
    pub fn set_step_schedule(&mut self, schedule: crate::recipe::Schedule, total: u64) {
        match self {
            Engine::Net(c) => c.set_step_schedule(schedule, total),
            Engine::GpuNet(g) => g.set_step_schedule(schedule, total),
            _ => {}
        }
    }
    /// Zero the step counters and the accumulated metrics (a new run on this engine).
    pub fn reset_counters(&mut self) {
        match self {
            Engine::Gpu(g) => g.reset_counters(),
            Engine::GpuNet(g) => g.reset_counters(),
            Engine::Cpu(c) => c.reset_counters(),
            Engine::Net(c) => c.reset_counters(),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.reset_counters(),
        }
    }
    /// Train at another batch size (the data stays where it is).
    pub async fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        match self {
            Engine::Gpu(g) => g.set_batch(batch).await,
            Engine::GpuNet(g) => g.set_batch(batch).await,
            Engine::Cpu(c) => c.set_batch(batch),
            Engine::Net(c) => c.set_batch(batch),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.set_batch(batch),
        }
    }
    /// Augment the training batches from the next step on (see `augment`).
    pub fn set_augment(&mut self, a: Augment) {
        match self {
            Engine::Gpu(g) => g.set_augment(a),
            Engine::GpuNet(g) => g.set_augment(a),
            Engine::Cpu(c) => c.set_augment(a),
            Engine::Net(c) => c.set_augment(a),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => b.augment = a,
        }
    }
    /// Every activation of test record `record` under the current weights (the page's look
    /// inside the network): read from the GPU engine's own batch-1 forward, computed by the CPU
    /// reference for the other engines.
    pub async fn inspect(&self, record: usize) -> Result<Inside, EngineError> {
        match self {
            Engine::Gpu(g) => g.inspect(record).await,
            Engine::GpuNet(_) => Err(not_lenet("the look inside the network")),
            Engine::Cpu(c) => c.inspect(record),
            Engine::Net(_) => Err(not_lenet("the look inside the network")),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => {
                let missing = || EngineError::settings(format!("inspect: test record {record} does not exist (the test set has {})", b.test_len()));
                let img = b.test_image(record).ok_or_else(missing)?;
                Ok(crate::cpu::inspect(crate::model::Arch::LENET, &b.read_params(), img))
            }
        }
    }
    /// Where the network looks for `class` in `image` [3,32,32] under the current weights
    /// (saliency and Grad-CAM): the GPU engine's own forward and backward to the input, the
    /// CPU reference's for the others.
    pub async fn looks(&self, image: &[u8], class: usize) -> Result<Looks, EngineError> {
        match self {
            Engine::Gpu(g) => g.looks(image, class).await,
            Engine::GpuNet(_) => Err(not_lenet("where the network looks")),
            Engine::Cpu(c) => c.looks(image, class),
            Engine::Net(_) => Err(not_lenet("where the network looks")),
            #[cfg(feature = "burn")]
            Engine::Burn(b) => {
                crate::outputs::check_looks(image, class)?;
                Ok(crate::cpu::looks(crate::model::Arch::LENET, &b.read_params(), image, class))
            }
        }
    }
    /// The LeNet-shaped network it trains (None: any other network, `Engine::Net`'s plan).
    pub fn arch(&self) -> Option<crate::model::Arch> {
        match self {
            Engine::Gpu(g) => Some(g.arch()),
            Engine::GpuNet(_) => None,
            Engine::Cpu(c) => Some(c.arch()),
            Engine::Net(_) => None,
            #[cfg(feature = "burn")]
            Engine::Burn(_) => Some(crate::model::Arch::LENET),
        }
    }
    /// Floats of its packed parameters.
    pub fn params_len(&self) -> usize {
        match (self, self.arch()) {
            (Engine::Net(c), _) => c.plan.params.total,
            (Engine::GpuNet(g), _) => g.plan.params.total,
            (_, Some(a)) => crate::model::Layout::new(a).total,
            (_, None) => unreachable!("every engine but Net trains a LeNet-shaped network"),
        }
    }
    /// "the lenet", "the 20-32-256-128" or "this" (any other network), for messages.
    pub fn network_name(&self) -> String {
        self.arch().map_or("this".to_string(), |a| format!("the {}", a.name()))
    }
    pub fn is_gpu(&self) -> bool {
        matches!(self, Engine::Gpu(_) | Engine::GpuNet(_))
    }
}

/// A view that shows LeNet-shaped networks so far (the views of any network are to come).
fn not_lenet(what: &str) -> EngineError {
    EngineError::settings(format!("{what} is shown for LeNet-shaped networks so far, and this network is another"))
}

/// Where training is, reported every `report_every` steps.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize, // 1-based
    pub epochs: usize,
    pub step: usize, // steps done in this epoch
    pub steps_per_epoch: usize,
    pub global_step: u64,
    /// Mean batch loss over the steps since the last report.
    pub loss: f32,
    /// Training accuracy over the images since the last report.
    pub train_accuracy: f64,
    /// Training images per second since training started.
    pub images_per_second: f64,
    pub elapsed: f64,
}

/// Why training stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// The loss became NaN, infinite or exploded at this global step (0-based; epoch and step in epoch).
    Diverged { step: u64, epoch: usize, epoch_step: usize },
    /// The engine failed (its kind says whether the device can go on).
    Engine(EngineError),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Diverged { step, epoch, epoch_step } => write!(
                f,
                "training diverged: the loss became NaN, infinite or above {} at step {} (epoch {epoch}, step {} of the epoch); lower the learning rate",
                crate::model::DIVERGED_LOSS,
                step + 1,
                epoch_step + 1
            ),
            TrainError::Engine(e) => write!(f, "{e}"),
        }
    }
}
impl std::error::Error for TrainError {}

impl From<EngineError> for TrainError {
    fn from(e: EngineError) -> Self {
        TrainError::Engine(e)
    }
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub steps: u64,
    pub images: u64,
    pub seconds: f64,
    /// Mean loss of each report window, in order: the loss curve.
    pub losses: Vec<f32>,
    /// Where the run was when `stop` asked it to end early: epoch (1-based) and steps done in
    /// it; None when it ran to the end.
    pub stopped_at: Option<(usize, usize)>,
}

/// Where a run is, enough to continue it on a fresh engine after a lost GPU device or a
/// reload: the weights and momentum, the epoch and step in it, that epoch's order and the
/// shuffle stream for the epochs after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub params: Vec<f32>,
    pub momentum: Vec<f32>,
    pub epoch: usize,
    pub epoch_step: usize,
    pub global_step: u64,
    pub order: Vec<u32>,
    pub rng: Rng,
    pub images: u64,
    pub seconds: f64,
}

impl Checkpoint {
    /// Whether a run that diverged at `bad_step` (0-based, as in [`TrainError::Diverged`]) can
    /// go on from this checkpoint. The loss of step s is computed with the weights after s
    /// steps, so a checkpoint taken at s (after the update that blew up) already holds the bad
    /// weights: only one taken before s is a good point.
    pub fn before_divergence(&self, bad_step: u64) -> bool {
        self.global_step < bad_step
    }

    /// Whether this checkpoint can continue on an engine of `want` packed weights (`network`
    /// names it: "the lenet", "this") at `batch` on
    /// `train_len` records; the error says what does not fit. Checked before any of it is used
    /// (a saved run is a file from the outside: its lengths, epoch and order are not trusted).
    pub fn check(&self, want: usize, network: &str, batch: usize, train_len: usize) -> Result<(), String> {
        if self.params.len() != want || self.momentum.len() != want {
            return Err(format!("it holds {} weights and {} momentum values, and {network} network has {want}", self.params.len(), self.momentum.len()));
        }
        if let Some(i) = self.params.iter().chain(&self.momentum).position(|v| !v.is_finite()) {
            return Err(format!("its state holds a non-finite value (at index {i})"));
        }
        let steps_per_epoch = train_len / batch.max(1);
        if self.epoch == 0 || self.epoch_step > steps_per_epoch {
            return Err(format!("it is at epoch {}, step {}; an epoch here has {steps_per_epoch} steps (batch {batch}, {train_len} records)", self.epoch, self.epoch_step));
        }
        if self.order.len() != train_len {
            return Err(format!("its epoch order has {} records, and the training set has {train_len}", self.order.len()));
        }
        let mut seen = vec![false; train_len];
        for &i in &self.order {
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => return Err(format!("its epoch order is not an order of the {train_len} training records (record {i})")),
            }
        }
        if self.rng.state() == [0; 4] {
            return Err("its shuffle state is all zeros (it would never shuffle again)".into());
        }
        Ok(())
    }
}

/// What one chunk of steps did.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub progress: Progress,
    /// The chunk finished an epoch (evaluate now, if you evaluate per epoch).
    pub epoch_end: bool,
    /// The chunk finished the last epoch.
    pub done: bool,
}

/// A training run driven in chunks of steps, so that a caller (the page's event loop, the CLI,
/// a test) decides when each chunk runs and what happens between them: epochs shuffled from
/// the seed, metrics read back after each chunk, divergence caught at its step.
pub struct Session<E: BorrowMut<Engine> = Engine> {
    /// The engine, owned (the page) or borrowed (`train`).
    pub engine: E,
    pub hyper: Hyper,
    rng: Rng,
    order: Vec<u32>,
    /// 1-based epoch being trained; `epoch_step` steps of it are done (all of them at the end
    /// of an epoch: the next chunk starts the next epoch).
    epoch: usize,
    epoch_step: usize,
    steps_per_epoch: usize,
    /// Steps done before this engine took over (a resumed run).
    global_base: u64,
    global_step: u64,
    /// Training images and the seconds spent on training chunks (evaluation excluded).
    pub images: u64,
    pub seconds: f64,
    /// Keep the next chunk in flight while a chunk's metrics come back (`set_overlap`).
    overlap: bool,
    /// The chunk submitted ahead, not read yet: the engine is its `steps` past the position
    /// the session reports.
    ahead: Option<InFlight>,
    /// A chunk read by `settle` before its `run_chunk`: the next `run_chunk` returns it.
    ready: Option<Result<Chunk, TrainError>>,
}

/// A chunk of steps on the engine whose metrics are on their way.
struct InFlight {
    steps: usize,
    ticket: MetricsTicket,
}

impl<E: BorrowMut<Engine>> Session<E> {
    /// A new run at epoch 1, step 0.
    pub fn new(mut engine: E, hyper: &Hyper) -> Session<E> {
        // Shuffling has its own stream, separate from the initialisation's.
        let rng = Rng::new(hyper.seed ^ 0x53_4855_4646_4c45);
        engine.borrow_mut().reset_counters();
        let steps_per_epoch = engine.borrow().train_len() / engine.borrow().batch();
        let mut s = Session {
            engine,
            hyper: hyper.clone(),
            rng,
            order: Vec::new(),
            epoch: 1,
            epoch_step: 0,
            steps_per_epoch,
            global_base: 0,
            global_step: 0,
            images: 0,
            seconds: 0.0,
            overlap: false,
            ahead: None,
            ready: None,
        };
        s.order = s.rng.permutation(s.engine.borrow().train_len());
        s.engine.borrow_mut().begin_epoch(&s.order, 0);
        s.engine.borrow_mut().set_step_schedule(hyper.schedule, (hyper.epochs * steps_per_epoch) as u64);
        s.apply_epoch();
        s
    }

    /// The epoch's learning rate (schedule) and augmentation key, on the engine.
    fn apply_epoch(&mut self) {
        let h = &self.hyper;
        let e = self.engine.borrow_mut();
        e.set_hyper(h.lr_at(self.epoch), h.momentum, h.weight_decay);
        e.set_augment(h.augment_at(self.epoch));
    }

    /// The learning rate in use now (the base rate through the schedule).
    pub fn current_lr(&self) -> f32 {
        self.hyper.lr_at(self.epoch)
    }

    /// Continue a run from a checkpoint on a fresh engine (same dataset and batch size).
    /// Fewer `hyper.epochs` than the checkpoint's epoch end the run with that epoch, as lowering
    /// the epochs of a running session does: it is finished, not cut off where it was saved.
    pub fn resume(mut engine: E, hyper: &Hyper, ck: Checkpoint) -> Result<Session<E>, EngineError> {
        let hyper = Hyper { epochs: hyper.epochs.max(ck.epoch), ..hyper.clone() };
        let e = engine.borrow_mut();
        ck.check(e.params_len(), &e.network_name(), e.batch(), e.train_len()).map_err(|why| EngineError::settings(format!("this saved point cannot continue here: {why}")))?;
        e.reset_counters();
        e.write_state(&ck.params, &ck.momentum)?;
        e.begin_epoch(&ck.order, ck.epoch_step);
        let steps_per_epoch = e.train_len() / e.batch();
        let mut s = Session {
            engine,
            hyper,
            rng: ck.rng,
            order: ck.order,
            epoch: ck.epoch,
            epoch_step: ck.epoch_step,
            steps_per_epoch,
            global_base: ck.global_step,
            global_step: ck.global_step,
            images: ck.images,
            seconds: ck.seconds,
            overlap: false,
            ahead: None,
            ready: None,
        };
        s.apply_epoch();
        Ok(s)
    }

    /// Where the run is, read from the engine (waits for queued GPU work, the chunk in
    /// flight included: see `settle`).
    pub async fn checkpoint(&mut self) -> Result<Checkpoint, EngineError> {
        self.settle().await;
        Ok(Checkpoint {
            params: self.engine.borrow().read_params().await?,
            momentum: self.engine.borrow().read_momentum().await?,
            epoch: self.epoch,
            epoch_step: self.epoch_step,
            global_step: self.global_step,
            order: self.order.clone(),
            rng: self.rng.clone(),
            images: self.images,
            seconds: self.seconds,
        })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }
    pub fn epoch(&self) -> usize {
        self.epoch
    }
    pub fn epoch_step(&self) -> usize {
        self.epoch_step
    }
    pub fn global_step(&self) -> u64 {
        self.global_step
    }
    /// The last epoch is finished. (Raising `hyper.epochs` then trains on.)
    pub fn done(&self) -> bool {
        self.epoch > self.hyper.epochs || (self.epoch == self.hyper.epochs && self.epoch_step == self.steps_per_epoch)
    }
    /// Training images per second over the training chunks so far.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
    /// Epochs done, fractional (x axis of the curves).
    pub fn epochs_done(&self) -> f64 {
        (self.epoch - 1) as f64 + self.epoch_step as f64 / self.steps_per_epoch.max(1) as f64
    }
    /// Seconds to the end of the last epoch at the speed so far.
    pub fn seconds_left(&self) -> f64 {
        let left = (self.hyper.epochs * self.steps_per_epoch).saturating_sub((self.epoch - 1) * self.steps_per_epoch + self.epoch_step);
        left as f64 * self.hyper.batch as f64 / self.images_per_second().max(1e-9)
    }

    /// Learning rate, momentum and weight decay from the next step submitted on (with overlap
    /// on, the chunk already in flight keeps the old ones).
    /// `lr` is the base rate: the schedule scales it per epoch.
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        (self.hyper.lr, self.hyper.momentum, self.hyper.weight_decay) = (lr, momentum, weight_decay);
        self.apply_epoch();
    }

    /// Overlap the host and the GPU engine: each `run_chunk` submits the next chunk (as many
    /// steps, within the epoch) before it waits for its own chunk's metrics, so the GPU trains
    /// while the host reads them back, draws and encodes. (The CPU engine computes when it is
    /// asked: nothing to overlap, so it is never ahead.) The results are those of a run without it,
    /// bit for bit; the engine is one chunk ahead of the position the session reports until
    /// `settle` (which `checkpoint` calls).
    pub fn set_overlap(&mut self, on: bool) {
        self.overlap = on;
    }

    /// Wait for the chunk in flight, if any, so the engine's weights are those of the
    /// position the session reports (before an evaluation or a look inside that must match
    /// it); the next `run_chunk` returns that chunk.
    pub async fn settle(&mut self) -> &mut Self {
        if let Some(c) = self.ahead.take() {
            let r = self.finish(c, Instant::now()).await;
            self.ready = Some(r);
        }
        self
    }

    /// Run up to `steps` steps (never past the end of the epoch) and read the metrics back.
    /// With overlap on, the chunk returned may be the one submitted ahead by the call before
    /// (of the size asked then).
    pub async fn run_chunk(&mut self, steps: usize) -> Result<Chunk, TrainError> {
        if let Some(r) = self.ready.take() {
            return r;
        }
        assert!(!self.done(), "the run is over");
        let start = Instant::now();
        let current = match self.ahead.take() {
            Some(c) => c,
            None => {
                if self.epoch_step == self.steps_per_epoch {
                    self.epoch += 1;
                    self.epoch_step = 0;
                    self.order = self.rng.permutation(self.engine.borrow().train_len());
                    self.engine.borrow_mut().begin_epoch(&self.order, 0);
                    self.apply_epoch();
                }
                self.submit(steps.max(1).min(self.steps_per_epoch - self.epoch_step))
            }
        };
        // Never ahead into the next epoch: its end is where the caller evaluates.
        let after = self.epoch_step + current.steps;
        if self.overlap && self.engine.borrow().is_gpu() && after < self.steps_per_epoch {
            self.ahead = Some(self.submit(steps.max(1).min(self.steps_per_epoch - after)));
        }
        self.finish(current, start).await
    }

    /// Queue `steps` steps and the readback of their metrics.
    fn submit(&mut self, steps: usize) -> InFlight {
        let e = self.engine.borrow_mut();
        e.train_steps(steps);
        InFlight { steps, ticket: e.submit_metrics() }
    }

    /// Wait for a chunk's metrics and move the position past it (a diverged chunk too: the
    /// engine's weights are past it).
    async fn finish(&mut self, c: InFlight, start: Instant) -> Result<Chunk, TrainError> {
        let m = self.engine.borrow().metrics(c.ticket).await?;
        self.seconds += start.elapsed().as_secs_f64();
        let k = c.steps;
        let first = self.global_step;
        let epoch_step = self.epoch_step;
        self.epoch_step += k;
        self.global_step += m.steps as u64;
        self.images += m.seen as u64;
        if let Some(bad) = m.bad_step {
            // The engine counts steps from its own start; a resumed run adds the steps before.
            let step = self.global_base + bad;
            let in_chunk = step.saturating_sub(first) as usize;
            return Err(TrainError::Diverged { step, epoch: self.epoch, epoch_step: epoch_step + in_chunk.min(k) });
        }
        let epoch_end = self.epoch_step == self.steps_per_epoch;
        let done = self.done();
        let progress = Progress {
            epoch: self.epoch,
            epochs: self.hyper.epochs,
            step: self.epoch_step,
            steps_per_epoch: self.steps_per_epoch,
            global_step: self.global_step,
            loss: m.loss_sum / m.steps.max(1) as f32,
            train_accuracy: m.correct as f64 / m.seen.max(1) as f64,
            images_per_second: self.images_per_second(),
            elapsed: self.seconds,
        };
        Ok(Chunk { progress, epoch_end, done })
    }
}

/// Train for `hyper.epochs` epochs, each in a fresh order drawn from `hyper.seed`, reading the
/// metrics back every `report_every` steps and at each epoch's end.
pub async fn train(engine: &mut Engine, hyper: &Hyper, report_every: usize, on_progress: impl FnMut(&Progress)) -> Result<TrainReport, TrainError> {
    train_until(engine, hyper, report_every, on_progress, || false).await
}

/// `train`, asking `stop` before each chunk of `report_every` steps whether to end early (the
/// CLI's Ctrl-C): the engine then holds the weights of the last whole chunk, and the report
/// says where that was.
pub async fn train_until(
    engine: &mut Engine,
    hyper: &Hyper,
    report_every: usize,
    mut on_progress: impl FnMut(&Progress),
    stop: impl Fn() -> bool,
) -> Result<TrainReport, TrainError> {
    let mut s = Session::new(engine, hyper);
    s.set_overlap(true);
    let mut report = TrainReport { steps: 0, images: 0, seconds: 0.0, losses: Vec::new(), stopped_at: None };
    let start = Instant::now();
    while !s.done() {
        if stop() {
            // The chunk submitted ahead lands, so the weights are those of the position told.
            s.settle().await;
            if let Some(c) = s.ready.take() {
                let c = c?;
                report.losses.push(c.progress.loss);
                on_progress(&c.progress);
            }
            report.stopped_at = Some((s.epoch, s.epoch_step));
            break;
        }
        let c = s.run_chunk(report_every).await?;
        report.losses.push(c.progress.loss);
        on_progress(&c.progress);
    }
    report.steps = s.global_step;
    report.images = s.images;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
