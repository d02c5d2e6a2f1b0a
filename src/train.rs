//! The training loop shared by every front end (CLI, tests, the page): an `Engine` (GPU or
//! CPU, same operations), epochs shuffled from the seed, metrics read back every few hundred
//! steps, divergence caught at the step it happened, and the test-set evaluation.

use crate::cpu::CpuEngine;
use crate::data::Split;
use crate::gpu::{EvalResult, GpuEngine, GpuError, Metrics};
use crate::model::{Hyper, Rng};
use std::fmt;
use web_time::Instant;

/// The CPU reference engine with the state the GPU engine keeps on the device.
pub struct CpuTrainer {
    pub engine: CpuEngine,
    train: Split,
    test: Split,
    order: Vec<u32>,
    epoch_step: usize,
    acc: Metrics,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}

impl CpuTrainer {
    pub fn new(params: Vec<f32>, hyper: &Hyper, train: &Split, test: &Split) -> CpuTrainer {
        CpuTrainer {
            engine: CpuEngine::new(params, hyper.batch),
            order: (0..train.len() as u32).collect(),
            train: train.clone(),
            test: test.clone(),
            epoch_step: 0,
            acc: Metrics::default(),
            lr: hyper.lr,
            momentum: hyper.momentum,
            weight_decay: hyper.weight_decay,
        }
    }
}

/// A training engine: the same operations on the GPU or on the CPU.
pub enum Engine {
    Gpu(GpuEngine),
    Cpu(CpuTrainer),
}

impl Engine {
    /// What it runs on, for the user.
    pub fn device(&self) -> String {
        match self {
            Engine::Gpu(g) => format!("GPU: {}", g.gpu.adapter),
            Engine::Cpu(_) => "CPU reference engine (1 thread)".to_string(),
        }
    }
    pub fn batch(&self) -> usize {
        match self {
            Engine::Gpu(g) => g.batch,
            Engine::Cpu(c) => c.engine.acts.n,
        }
    }
    pub fn train_len(&self) -> usize {
        match self {
            Engine::Gpu(g) => g.train_len(),
            Engine::Cpu(c) => c.train.len(),
        }
    }
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        match self {
            Engine::Gpu(g) => g.set_hyper(lr, momentum, weight_decay),
            Engine::Cpu(c) => (c.lr, c.momentum, c.weight_decay) = (lr, momentum, weight_decay),
        }
    }
    pub fn begin_epoch(&mut self, order: &[u32]) {
        match self {
            Engine::Gpu(g) => g.begin_epoch(order),
            Engine::Cpu(c) => {
                c.order = order.to_vec();
                c.epoch_step = 0;
            }
        }
    }
    /// Run `steps` more steps of the epoch (queued on the GPU; done at once on the CPU).
    pub fn train_steps(&mut self, steps: usize) {
        match self {
            Engine::Gpu(g) => g.train_steps(steps),
            Engine::Cpu(c) => {
                let n = c.engine.acts.n;
                for _ in 0..steps {
                    let r = c.engine.step(&c.train.images, &c.train.labels, &c.order, c.epoch_step * n, c.lr, c.momentum, c.weight_decay);
                    let mean = r.loss_sum / n as f32;
                    if !(mean <= crate::model::DIVERGED_LOSS) && c.acc.bad_step.is_none() {
                        c.acc.bad_step = Some(c.acc.global_step);
                    }
                    c.acc.loss_sum += mean;
                    c.acc.correct += r.correct;
                    c.acc.seen += n as u32;
                    c.acc.steps += 1;
                    c.acc.global_step += 1;
                    c.epoch_step += 1;
                }
            }
        }
    }
    /// Metrics since the last call (this is the point where queued GPU work is waited for).
    pub async fn read_metrics(&mut self) -> Result<Metrics, GpuError> {
        match self {
            Engine::Gpu(g) => g.read_metrics().await,
            Engine::Cpu(c) => {
                let m = c.acc;
                c.acc = Metrics { bad_step: m.bad_step, global_step: m.global_step, ..Default::default() };
                Ok(m)
            }
        }
    }
    pub async fn evaluate(&self) -> Result<EvalResult, GpuError> {
        match self {
            Engine::Gpu(g) => g.evaluate().await,
            Engine::Cpu(c) => Ok(EvalResult::from_preds(c.engine.predict(&c.test.images, c.test.len()), &c.test.labels)),
        }
    }
    pub async fn read_params(&self) -> Result<Vec<f32>, GpuError> {
        match self {
            Engine::Gpu(g) => g.read_params().await,
            Engine::Cpu(c) => Ok(c.engine.params.clone()),
        }
    }
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
    Diverged {
        step: u64,
        epoch: usize,
        epoch_step: usize,
    },
    Gpu(String),
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
            TrainError::Gpu(e) => write!(f, "{e}"),
        }
    }
}
impl std::error::Error for TrainError {}

impl From<GpuError> for TrainError {
    fn from(e: GpuError) -> Self {
        TrainError::Gpu(e.0)
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
}

/// Train for `hyper.epochs` epochs, each in a fresh order drawn from `hyper.seed`, reading the
/// metrics back every `report_every` steps and at each epoch's end.
pub async fn train(engine: &mut Engine, hyper: &Hyper, report_every: usize, mut on_progress: impl FnMut(&Progress)) -> Result<TrainReport, TrainError> {
    let n = engine.train_len();
    let batch = engine.batch();
    let steps_per_epoch = n / batch;
    // Shuffling has its own stream, separate from the initialisation's.
    let mut rng = Rng::new(hyper.seed ^ 0x5348_5546_464c_45);
    let start = Instant::now();
    let mut report = TrainReport { steps: 0, images: 0, seconds: 0.0, losses: Vec::new() };
    for epoch in 1..=hyper.epochs {
        engine.begin_epoch(&rng.permutation(n));
        let mut done = 0;
        while done < steps_per_epoch {
            let k = report_every.max(1).min(steps_per_epoch - done);
            engine.train_steps(k);
            done += k;
            let m = engine.read_metrics().await?;
            if let Some(step) = m.bad_step {
                let before = report.steps; // global steps before this window
                let in_window = step.saturating_sub(before) as usize;
                let epoch_step = done - k + in_window.min(k);
                return Err(TrainError::Diverged { step, epoch, epoch_step });
            }
            report.steps += m.steps as u64;
            report.images += m.seen as u64;
            let loss = m.loss_sum / m.steps.max(1) as f32;
            report.losses.push(loss);
            let elapsed = start.elapsed().as_secs_f64();
            on_progress(&Progress {
                epoch,
                epochs: hyper.epochs,
                step: done,
                steps_per_epoch,
                global_step: m.global_step,
                loss,
                train_accuracy: m.correct as f64 / m.seen.max(1) as f64,
                images_per_second: report.images as f64 / elapsed.max(1e-9),
                elapsed,
            });
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
