//! The CPU engine that trains where there is no GPU: the fast layers of cpu/layers.rs over
//! every core, with the GPU engine's method names (`train_steps`, `submit_metrics`,
//! `evaluate`, ...) so each arm of `train::Engine` is one line.
//!
//! A batch of N is split into one lane per thread (contiguous images, sizes differing by at
//! most one). A lane runs its images' whole forward, loss and backward on its own activations
//! and writes its own share of the gradient; then the threads sum the lanes' gradients in lane
//! order and apply SGD, each over its own range of the parameters. The split depends only on N
//! and the thread count and every sum has a fixed order, so the same seed and thread count
//! give the same weights bit for bit; another thread count changes the rounding only.
//! `Rounding::Shifted` (tests only) changes it on purpose: see there.
//! Everything a step touches is allocated when the engine is made or the batch changes.

use super::layers;
use super::predict::{predictions_of, probabilities_of, range, ForwardLanes};
use super::reference::{self, cross_entropy_part, gather_augmented, split2, Acts, StepResult, PREDICT_BATCH};
use crate::augment::Augment;
use crate::data::Split;
use crate::model::*;
use crate::outputs::{check_looks, EngineError, EvalResult, Inside, Looks, Metrics};
use crate::recipe::Hyper;

/// The fewest images a helper's lane takes: below, waking it and copying the weights both ways
/// cost more than it saves (in Chromium on 2 cores, helpers trained 0.84x as fast as one thread
/// at batch 4, 1.05x at 16 and 1.26x at 64: BENCHMARKS.md).
pub const MIN_REMOTE_IMAGES: usize = 8;

/// The threads to use when none are asked for: every core the system reports (1 in a tab
/// without wasm threads).
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The order of the engine's sums. `Plain` is what users run. `Shifted` is a switch for the
/// tests alone: every training batch is split into one lane more than there are threads (other
/// lane sizes, so the matrix products block differently) and the lanes' gradients are summed
/// in reverse order. The same arithmetic in another order: other last bits, as another CPU's
/// SIMD kernels give. The suite passes under both (CI runs the comparison tests again with
/// TABCNN_ROUNDING=shifted): a test that holds under one rounding only tests one machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rounding {
    #[default]
    Plain,
    Shifted,
}

impl Rounding {
    /// TABCNN_ROUNDING=shifted or plain (unset: plain; anything else: plain, said on stderr).
    /// Read each time an engine is made; in a tab there is no environment, so always plain.
    pub fn from_env() -> Rounding {
        match std::env::var("TABCNN_ROUNDING").as_deref() {
            Ok("shifted") => Rounding::Shifted,
            Ok("plain") | Err(_) => Rounding::Plain,
            Ok(other) => {
                eprintln!("TABCNN_ROUNDING={other} is neither plain nor shifted: the CPU engine rounds plainly");
                Rounding::Plain
            }
        }
    }
    /// Training lanes for `threads` threads.
    fn lanes(self, threads: usize) -> usize {
        threads + (self == Rounding::Shifted) as usize
    }
    /// Element k of the gradient: the lanes' shares summed in lane order (reversed when shifted).
    fn sum(self, lanes: &[Lane], k: usize) -> f32 {
        let share = |l: &Lane| l.grads[k];
        match self {
            Rounding::Plain => lanes.iter().map(share).reduce(|a, b| a + b),
            Rounding::Shifted => lanes.iter().rev().map(share).reduce(|a, b| a + b),
        }
        .unwrap_or(0.0)
    }
}

/// One lane: a contiguous run of the batch with its own activations and gradient share.
pub(super) struct Lane {
    /// Index in the batch of this lane's first image.
    lo: usize,
    /// Activations of the lane's images (acts.n of them).
    pub(super) acts: Acts<f32>,
    /// This lane's part of the gradient, packed like the parameters.
    grads: Vec<f32>,
    /// im2col of one image: [C*K*K, OH*OW], the larger of conv1's and conv2's.
    cols: Vec<f32>,
    /// The unpooled gradient of one image's conv output: [OC, OH*OW], the larger layer's.
    dout: Vec<f32>,
    /// Sum over the lane of the per-image loss, and its correct predictions.
    loss: f32,
    correct: u32,
}

/// Floats of a lane's scratch: im2col of one image [C*K*K, OH*OW] and one image's unpooled
/// conv gradient [OC, OH*OW], each the larger layer's.
fn scratch_len(arch: Arch) -> (usize, usize) {
    let Arch { c1, c2, .. } = arch;
    ((C1_IN * K * K * H1 * H1).max(c1 * K * K * H2 * H2), (c1 * H1 * H1).max(c2 * H2 * H2))
}

/// Bytes of a lane of `n` images, without allocating it: its activations, im2col, and where it
/// trains (`training`) its gradient share [P] and unpooled gradient too.
pub fn lane_bytes(n: usize, layout: &Layout, training: bool) -> u64 {
    let (cols, dout) = scratch_len(layout.arch);
    let train_only = if training { dout + layout.total } else { 0 };
    reference::acts_bytes(n, layout.arch) + 4 * (cols + train_only) as u64
}

impl Lane {
    /// A lane that trains: activations, its gradient share, and scratch.
    pub(super) fn new(lo: usize, n: usize, layout: &Layout) -> Lane {
        let (cols, dout) = scratch_len(layout.arch);
        Lane { lo, acts: Acts::new(n, layout.arch), grads: vec![0.0; layout.total], cols: vec![0.0; cols], dout: vec![0.0; dout], loss: 0.0, correct: 0 }
    }

    /// A lane that only predicts (`forward`): no gradient share, no unpooled gradient.
    pub(super) fn forward_only(n: usize, layout: &Layout) -> Lane {
        let (cols, _) = scratch_len(layout.arch);
        Lane { lo: 0, acts: Acts::new(n, layout.arch), grads: Vec::new(), cols: vec![0.0; cols], dout: Vec::new(), loss: 0.0, correct: 0 }
    }

    /// The lane's training pass on the images already in acts.x / acts.y: forward, the loss
    /// (a mean over the whole `batch`), backward into its gradient share, for `n` (at most
    /// acts.n) images of it.
    fn train(&mut self, p: &[f32], l: &Layout, n: usize, batch: usize) {
        self.forward(p, l, n);
        (self.loss, self.correct) = cross_entropy_part(&mut self.acts.dlogits, &self.acts.logits, &self.acts.y, n, batch);
        self.backward(p, l, n);
    }

    /// The lane's forward from acts.x to the logits, layer by layer as `reference::forward`,
    /// for `n` (at most acts.n) images of it.
    pub(super) fn forward(&mut self, p: &[f32], l: &Layout, n: usize) {
        let a = &mut self.acts;
        let Arch { c1, c2, f1, f2 } = l.arch;
        let t = |i: usize| &p[l.specs[i].range()];
        layers::conv_pool_forward(&mut a.h1, &mut a.p1, &mut a.arg1, &mut self.cols, &a.x, t(CONV1_W), t(CONV1_B), n, C1_IN, IMG, IMG, c1, K);
        layers::conv_pool_forward(&mut a.h2, &mut a.p2, &mut a.arg2, &mut self.cols, &a.p1, t(CONV2_W), t(CONV2_B), n, c1, P1, P1, c2, K);
        layers::linear_forward(&mut a.a1, &a.p2, t(FC1_W), t(FC1_B), n, l.arch.fc1_in(), f1, true);
        layers::linear_forward(&mut a.a2, &a.a1, t(FC2_W), t(FC2_B), n, f1, f2, true);
        layers::linear_forward(&mut a.logits, &a.a2, t(FC3_W), t(FC3_B), n, f2, CLASSES, false);
    }

    /// The lane's backward from acts.dlogits into its gradient share, as `reference::backward`.
    fn backward(&mut self, p: &[f32], l: &Layout, n: usize) {
        let a = &mut self.acts;
        let Arch { c1, c2, f1, f2 } = l.arch;
        let fc1_in = l.arch.fc1_in();
        let t = |i: usize| &p[l.specs[i].range()];
        let g = &mut self.grads;
        let (gw3, gb3) = split2(g, l, FC3_W, FC3_B);
        layers::linear_backward(&mut a.da2, gw3, gb3, &a.dlogits, &a.a2, t(FC3_W), n, f2, CLASSES, true);
        let (gw2, gb2) = split2(g, l, FC2_W, FC2_B);
        layers::linear_backward(&mut a.da1, gw2, gb2, &a.da2, &a.a1, t(FC2_W), n, f1, f2, true);
        let (gw1, gb1) = split2(g, l, FC1_W, FC1_B);
        layers::linear_backward(&mut a.dp2, gw1, gb1, &a.da1, &a.p2, t(FC1_W), n, fc1_in, f1, false);
        let (gwc2, gbc2) = split2(g, l, CONV2_W, CONV2_B);
        layers::conv_pool_backward_weight(gwc2, gbc2, &mut self.dout, &mut self.cols, &a.dp2, &a.arg2, &a.p1, n, c1, P1, P1, c2, K);
        layers::conv_pool_backward_input(&mut a.dp1, &mut self.dout, &mut self.cols, &a.dp2, &a.arg2, t(CONV2_W), n, c1, P1, P1, c2, K);
        let (gwc1, gbc1) = split2(g, l, CONV1_W, CONV1_B);
        layers::conv_pool_backward_weight(gwc1, gbc1, &mut self.dout, &mut self.cols, &a.dp1, &a.arg1, &a.x, n, C1_IN, IMG, IMG, c1, K);
    }
}

/// `n` images split into `parts` lanes: (first image, count) of each, the sizes differing by
/// at most one, none empty.
pub(super) fn split(n: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> + Clone + Send {
    let parts = parts.clamp(1, n.max(1));
    (0..parts).map(move |i| (i * n / parts, (i + 1) * n / parts - i * n / parts))
}

/// Lanes for `n` images split `parts` ways.
fn make_lanes(n: usize, parts: usize, layout: &Layout) -> Vec<Lane> {
    split(n, parts).map(|(lo, m)| Lane::new(lo, m, layout)).collect()
}

/// The engine's threads: a pool of `threads` (None for one thread, or where threads cannot be
/// started: then everything runs on the caller's thread, in the same order).
pub struct Threads {
    pool: Option<rayon::ThreadPool>,
    pub count: usize,
}

impl Threads {
    pub fn new(count: usize) -> Threads {
        let pool = if count > 1 { rayon::ThreadPoolBuilder::new().num_threads(count).thread_name(|i| format!("tabcnn-cpu-{i}")).build().ok() } else { None };
        let count = if pool.is_some() { count } else { 1 };
        Threads { pool, count }
    }

    /// f on each item, the items spread over the threads (each item on one thread, whole).
    pub fn each<T: Send>(&self, items: impl Iterator<Item = T> + Send, f: impl Fn(T) + Sync) {
        match &self.pool {
            Some(pool) => pool.scope(|s| {
                let f = &f;
                for item in items {
                    s.spawn(move |_| f(item));
                }
            }),
            None => items.for_each(f),
        }
    }
}

/// The CPU training engine: parameters and momentum packed like the GPU buffers, the batch in
/// lanes, and the run state the GPU engine keeps on the device (the data, the epoch's order,
/// the metrics since the last readback, the hyperparameters).
pub struct CpuEngine {
    pub layout: Layout,
    params: Vec<f32>,
    momentum: Vec<f32>,
    batch: usize,
    /// The training batch, one lane a thread (one more when `rounding` is shifted).
    lanes: Vec<Lane>,
    rounding: Rounding,
    /// Forward-only lanes for evaluation and predictions.
    eval: ForwardLanes,
    threads: Threads,
    /// Lanes computed by helpers outside this process (the tab's workers), after the local ones.
    remote: Option<Box<dyn RemoteLanes + Send>>,
    /// Why the helpers were let go, if they were.
    remote_lost: Option<String>,
    train: Split,
    test: Split,
    order: Vec<u32>,
    epoch_step: usize,
    acc: Metrics,
    lr: f32,
    mu: f32,
    weight_decay: f32,
    augment: Augment,
}

impl CpuEngine {
    /// The network `hyper.net` with packed parameters `params`, training at `hyper.batch` on
    /// `threads` threads (at least 1). Its memory is checked before anything is allocated.
    pub fn new(params: &[f32], hyper: &Hyper, train: &Split, test: &Split, threads: usize) -> Result<CpuEngine, EngineError> {
        let layout = Layout::new(hyper.net);
        if params.len() != layout.total {
            return Err(EngineError::settings(format!("{} weights given, and the {} network has {}", params.len(), hyper.net.name(), layout.total)));
        }
        check_batch(hyper.batch, train.len())?;
        let rounding = Rounding::from_env();
        let threads = threads.max(1);
        check_engine_memory(hyper.net, hyper.batch, threads, rounding.lanes(threads), train.len() + test.len())?;
        let threads = Threads::new(threads);
        Ok(CpuEngine {
            lanes: make_lanes(hyper.batch, rounding.lanes(threads.count), &layout),
            rounding,
            eval: ForwardLanes::new(&threads, &layout),
            threads,
            remote: None,
            remote_lost: None,
            params: params.to_vec(),
            momentum: vec![0.0; layout.total],
            layout,
            batch: hyper.batch,
            order: (0..train.len() as u32).collect(),
            train: train.clone(),
            test: test.clone(),
            epoch_step: 0,
            acc: Metrics::default(),
            lr: hyper.lr,
            mu: hyper.momentum,
            weight_decay: hyper.weight_decay,
            augment: Augment::default(),
        })
    }

    /// What it runs on, for the user.
    pub fn device(&self) -> String {
        let t = self.threads();
        let helpers = match &self.remote {
            Some(r) => format!(", {} in helper workers", r.count()),
            None => String::new(),
        };
        format!("CPU engine ({t} thread{}{helpers})", if t == 1 { "" } else { "s" })
    }
    /// The threads that train: this process's and the helpers' (when the batch is split
    /// over them: lanes of MIN_REMOTE_IMAGES or more).
    pub fn threads(&self) -> usize {
        self.threads.count + self.remote_lanes()
    }
    /// The helpers' lanes at this batch size: all of them, or none when a lane would be
    /// smaller than MIN_REMOTE_IMAGES.
    fn remote_lanes(&self) -> usize {
        match &self.remote {
            Some(r) if self.batch / (self.threads.count + r.count()) >= MIN_REMOTE_IMAGES => r.count(),
            _ => 0,
        }
    }
    /// Why the helpers are not training, when they are there and are not.
    pub fn threads_note(&self) -> Option<String> {
        if let Some(why) = &self.remote_lost {
            return Some(format!("the helper workers stopped: {why}"));
        }
        let r = self.remote.as_ref()?;
        (self.remote_lanes() == 0)
            .then(|| format!("batch {} is split over this thread only: {} helper worker(s) take lanes of {MIN_REMOTE_IMAGES} images or more", self.batch, r.count()))
    }
    /// Why the helpers stopped being used (a failure or a missed deadline), if they did.
    pub fn remote_lost(&self) -> Option<&str> {
        self.remote_lost.as_deref()
    }

    /// Compute the last lanes of every batch in `remote` (the tab's helper workers) from the
    /// next step on; the batch is split over this process's threads and theirs. Refused (the
    /// engine stays as it was) when the helpers cannot take lanes of this size. Helpers lent
    /// anew after some were lost (fresh ones in their place) clear the loss.
    pub fn set_remote(&mut self, mut remote: Box<dyn RemoteLanes + Send>) -> Result<(), String> {
        let lanes = self.threads.count + remote.count();
        remote.prepare(self.layout.arch, self.layout.total, self.batch.div_ceil(lanes))?;
        self.remote = Some(remote);
        self.remote_lost = None;
        self.make_lanes();
        Ok(())
    }

    /// The training lanes for the batch over every thread, the helpers' included.
    fn make_lanes(&mut self) {
        // The old lanes go first: assigned over them, the new ones would be allocated while the
        // old are still held (twice the batch's activations at the peak, and a wasm heap never
        // gives memory back).
        self.lanes.clear();
        self.lanes = make_lanes(self.batch, self.rounding.lanes(self.threads()), &self.layout);
    }
    /// Round as `r` from the next step on (the lanes are made anew; the weights stay).
    pub fn set_rounding(&mut self, r: Rounding) {
        self.rounding = r;
        self.make_lanes();
    }
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }
    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn arch(&self) -> Arch {
        self.layout.arch
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
        check_batch(batch, self.train.len())?;
        let records = self.train.len() + self.test.len();
        check_engine_memory(self.layout.arch, batch, self.threads.count, self.rounding.lanes(self.threads()), records)?;
        if let Some(r) = &mut self.remote {
            if let Err(e) = r.prepare(self.layout.arch, self.layout.total, batch.div_ceil(self.threads.count + r.count())) {
                self.remote = None;
                self.remote_lost = Some(e);
            }
        }
        self.batch = batch;
        self.make_lanes();
        Ok(())
    }

    /// `steps` more steps of the epoch, with the metrics and the divergence check the GPU
    /// engine's kernels keep.
    pub fn train_steps(&mut self, steps: usize) {
        for _ in 0..steps {
            let base = self.epoch_step * self.batch;
            let r = self.step_on(base);
            self.acc.record_step(r.loss_sum, r.correct, self.batch, false);
            self.epoch_step += 1;
        }
    }

    /// The metrics since the last call (the CPU computes when asked: they are there already).
    pub fn submit_metrics(&mut self) -> Metrics {
        self.acc.take()
    }

    /// One SGD step on the batch `order[base..base+N]` of the training set.
    fn step_on(&mut self, base: usize) -> StepResult {
        // Moved out for the step (it borrows the engine whole) and back: no copy.
        let (train, order) = (std::mem::take(&mut self.train), std::mem::take(&mut self.order));
        let r = self.step(&train.images, &train.labels, &order, base);
        (self.train, self.order) = (train, order);
        r
    }
}

impl CpuEngine {
    /// One SGD step on the batch `index[base..base+N]` of (images, labels): each lane's
    /// forward, loss and backward on its thread, then the summed gradient's update.
    pub fn step(&mut self, images: &[u8], labels: &[u8], index: &[u32], base: usize) -> StepResult {
        let (batch, aug, l, p) = (self.batch, &self.augment, &self.layout, &self.params[..]);
        let gather = |lane: &mut Lane| gather_augmented(&mut lane.acts.x, &mut lane.acts.y, images, labels, index, base + lane.lo, lane.acts.n, aug);
        // The helpers' lanes (the last ones) set off first, then this process's, then the
        // helpers' collected.
        let local = self.lanes.len() - self.remote_lanes();
        let (mine, theirs) = self.lanes.split_at_mut(local);
        let mut failed = None;
        if let Some(r) = &mut self.remote {
            for (i, lane) in theirs.iter_mut().enumerate() {
                gather(lane);
                if let Err(e) = r.start(i, l.arch, p, &lane.acts.x, &lane.acts.y, batch) {
                    failed.get_or_insert(e);
                }
            }
        }
        let t = web_time::Instant::now();
        self.threads.each(mine.iter_mut(), |lane| {
            gather(lane);
            lane.train(p, l, lane.acts.n, batch);
        });
        // The helpers' lanes are no larger than these: how long they may take follows.
        let local = t.elapsed();
        if let (Some(r), None) = (&mut self.remote, &failed) {
            for (i, lane) in theirs.iter_mut().enumerate() {
                match r.finish(i, &mut lane.grads, local) {
                    Ok((loss, correct)) => (lane.loss, lane.correct) = (loss, correct),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(why) = failed {
            // A helper that failed or went quiet: its lanes are computed here, now and from
            // now on, by the same code on the same inputs (the same bits).
            self.remote = None;
            self.remote_lost = Some(why);
            self.threads.each(theirs.iter_mut(), |lane| lane.train(p, l, lane.acts.n, batch));
        }
        self.update();
        self.lanes.iter().fold(StepResult::default(), |r, lane| StepResult { loss_sum: r.loss_sum + lane.loss, correct: r.correct + lane.correct })
    }

    /// PyTorch's SGD with momentum on the lanes' gradients summed in lane order, the
    /// parameters cut into one range a thread: g = sum + wd * p; v = mu * v + g; p -= lr * v.
    fn update(&mut self) {
        let (lr, mu, wd, lanes, rounding) = (self.lr, self.mu, self.weight_decay, &self.lanes, self.rounding);
        let part = self.layout.total.div_ceil(self.threads.count).next_multiple_of(16);
        let ranges = self.params.chunks_mut(part).zip(self.momentum.chunks_mut(part)).enumerate();
        self.threads.each(ranges, |(i, (p, m))| {
            let start = i * part;
            for (j, (p, m)) in p.iter_mut().zip(m.iter_mut()).enumerate() {
                let g = rounding.sum(lanes, start + j);
                let v = mu * *m + (g + wd * *p);
                *m = v;
                *p -= lr * v;
            }
        });
    }

    /// The gradient of the last step (the lanes' shares summed as the update sums them).
    pub fn grads(&self) -> Vec<f32> {
        (0..self.layout.total).map(|k| self.rounding.sum(&self.lanes, k)).collect()
    }
}

impl CpuEngine {
    /// The logits [R,10] of the records `index` of `images` (a forward only).
    pub fn logits(&self, images: &[u8], index: &[u32]) -> Vec<f32> {
        self.eval.logits(&self.threads, &self.layout, &self.params, images, index)
    }

    /// Softmax probabilities [10] of the records `index` of `images` (the page's grid).
    pub fn probabilities(&self, images: &[u8], index: &[u32]) -> Vec<[f32; CLASSES]> {
        probabilities_of(&self.logits(images, index))
    }

    /// The predicted class of records `start .. start + count` of `images`.
    pub fn predict_range(&self, images: &[u8], start: usize, count: usize) -> Vec<u32> {
        predictions_of(&self.logits(images, &range(start, count)))
    }

    /// The test set's confusion matrix and predictions, in pieces with the event loop let in
    /// between (on the page a wide network's evaluation is seconds of work).
    pub async fn evaluate(&self) -> Result<EvalResult, EngineError> {
        Ok(self.evaluate_unless(&|| false).await?.expect("never stopped"))
    }

    /// `evaluate`, given up between two pieces when `stop()` says so (None then): a Pause or a
    /// Reset does not wait for seconds of predictions it would not show.
    pub async fn evaluate_unless(&self, stop: &dyn Fn() -> bool) -> Result<Option<EvalResult>, EngineError> {
        let n = self.test.len();
        let mut preds = Vec::with_capacity(n);
        let index = range(0, n);
        for piece in index.chunks(PREDICT_BATCH) {
            preds.extend(predictions_of(&self.logits(&self.test.images, piece)));
            crate::timer::yield_now().await;
            if preds.len() < n && stop() {
                return Ok(None);
            }
        }
        Ok(Some(EvalResult::from_preds(preds, &self.test.labels)))
    }

    /// Every activation of test record `record` under the current weights (the reference's
    /// batch-1 forward: one image is not worth the threads).
    pub fn inspect(&self, record: usize) -> Result<Inside, EngineError> {
        let img = self.test.images.get(record * IMG_LEN..(record + 1) * IMG_LEN);
        let img = img.ok_or_else(|| EngineError::settings(format!("inspect: test record {record} does not exist (the test set has {})", self.test.len())))?;
        Ok(reference::inspect(self.layout.arch, &self.params, img))
    }

    /// Where the network looks for `class` in `image` [3,32,32] (a test record or the
    /// visitor's picture), under the current weights: one image, so the reference's layers.
    pub fn looks(&self, image: &[u8], class: usize) -> Result<Looks, EngineError> {
        check_looks(image, class)?;
        Ok(reference::looks(self.layout.arch, &self.params, image, class))
    }

    pub fn read_params(&self) -> Vec<f32> {
        self.params.clone()
    }
    pub fn read_momentum(&self) -> Vec<f32> {
        self.momentum.clone()
    }
    /// Replace parameters and momentum (resuming a run; the lengths are checked by the caller).
    pub fn write_state(&mut self, params: &[f32], momentum: &[f32]) {
        self.params.copy_from_slice(params);
        self.momentum.copy_from_slice(momentum);
    }
}

/// Lanes of the batch computed outside this process's threads: the tab's helper workers, each
/// running `LaneWorker` (this same code) on memory of its own. The engine sends a lane's
/// gathered images and the weights and takes back its gradient share; a helper that fails or
/// misses its deadline returns an error, and the engine computes its lanes itself from then on.
pub trait RemoteLanes {
    /// How many lanes (helpers) it computes.
    fn count(&self) -> usize;
    /// Make room for lanes of up to `images` images of network `arch` (`params` floats).
    fn prepare(&mut self, arch: Arch, params: usize, images: usize) -> Result<(), String>;
    /// Set off lane `i` (0-based among the helpers') under `params` on images x[N,3,32,32] with
    /// labels y[N], N = y.len(); `batch` is the whole batch (the loss is a mean over it).
    fn start(&mut self, i: usize, arch: Arch, params: &[f32], x: &[f32], y: &[u32], batch: usize) -> Result<(), String>;
    /// Wait for lane `i`: its gradient share (packed like the parameters) into `grads`, and its
    /// loss sum and correct predictions. `local` is how long this process took for its own
    /// lanes of this step (each no smaller than a helper's): a helper far slower than that is
    /// gone, and its deadline follows from it.
    fn finish(&mut self, i: usize, grads: &mut [f32], local: std::time::Duration) -> Result<(f32, u32), String>;
}

/// A helper's side of `RemoteLanes`: one lane's training pass, the same code the engine runs.
pub struct LaneWorker {
    layout: Layout,
    lane: Lane,
    params: Vec<f32>,
    /// Images in the current lane.
    n: usize,
}

impl LaneWorker {
    /// Room for lanes of up to `images` images of `arch`.
    pub fn new(arch: Arch, images: usize) -> LaneWorker {
        let layout = Layout::new(arch);
        LaneWorker { lane: Lane::new(0, images, &layout), params: vec![0.0; layout.total], layout, n: 0 }
    }
    pub fn arch(&self) -> Arch {
        self.layout.arch
    }
    /// How many images a lane may hold.
    pub fn capacity(&self) -> usize {
        self.lane.acts.n
    }
    /// Where the next lane's inputs go: the weights [params], the images x[N,3,32,32] and the
    /// labels y[N] (N = `n` images, 1 to the capacity).
    pub fn inputs(&mut self, n: usize) -> (&mut [f32], &mut [f32], &mut [u32]) {
        assert!(n >= 1 && n <= self.capacity(), "a lane of {n} images in room for {}", self.capacity());
        self.n = n;
        (&mut self.params, &mut self.lane.acts.x[..n * IMG_LEN], &mut self.lane.acts.y[..n])
    }
    /// The lane's training pass on the inputs: its gradient share, loss sum and correct count.
    pub fn train(&mut self, batch: usize) -> (&[f32], f32, u32) {
        self.lane.train(&self.params, &self.layout, self.n, batch);
        (&self.lane.grads, self.lane.loss, self.lane.correct)
    }
}

/// The most the whole CPU engine may hold: its lanes, its evaluation lanes, weights and momentum
/// and its copy of the dataset. A tab's wasm heap has 4 GiB at most, and the worker keeps views
/// and kept weights beside the engine; natively it bounds what `--threads` may ask for.
pub const MAX_CPU_ENGINE_BYTES: u64 = 3 << 29;

/// What the CPU engine of `arch` at `batch` holds on `threads` threads (`lanes` training lanes)
/// with a dataset of `records` images, in bytes, without allocating it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineBytes {
    /// The training lanes' activations (the batch's, split over them).
    pub acts: u64,
    /// Each training lane's gradient share and scratch, times the lanes.
    pub lanes: u64,
    /// The evaluation lanes (`predict_piece` images split over the threads, forward only).
    pub eval: u64,
    /// Weights and momentum [P] each.
    pub state: u64,
    /// The engine's copy of the training and test images and labels, and the epoch's order.
    pub data: u64,
}

impl EngineBytes {
    pub fn new(arch: Arch, batch: usize, threads: usize, lanes: usize, records: usize) -> EngineBytes {
        let layout = Layout::new(arch);
        let threads = threads.max(1) as u64;
        let lanes = lanes.clamp(1, batch.max(1)) as u64;
        let per_lane = lane_bytes(0, &layout, true);
        let eval = threads * lane_bytes(super::predict::predict_piece(arch).div_ceil(threads as usize), &layout, false);
        EngineBytes { acts: reference::acts_bytes(batch, arch), lanes: lanes * per_lane, eval, state: 2 * 4 * layout.total as u64, data: records as u64 * (IMG_LEN as u64 + 1 + 4) }
    }
    pub fn total(&self) -> u64 {
        self.acts + self.lanes + self.eval + self.state + self.data
    }
}

/// What the CPU engine may take, and what its holder keeps beside it: the CLI gives the
/// engine MAX_CPU_ENGINE_BYTES; the page's worker gives the engine and its own views, kept
/// weights and dataset one limit together.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub limit: u64,
    /// Bytes held beside the engine, and what they are (for the message).
    pub beside: u64,
    pub beside_what: &'static str,
    /// Who holds it all ("the CPU engine", "this tab's worker").
    pub holder: &'static str,
}

impl Budget {
    /// The engine alone (the CLI, and every engine made anywhere).
    pub const ENGINE: Budget = Budget { limit: MAX_CPU_ENGINE_BYTES, beside: 0, beside_what: "", holder: "the CPU engine" };

    /// Whether the CPU engine of `arch` at `batch` on `threads` threads (`lanes` training
    /// lanes, `records` images) fits with what is beside it (and its activations
    /// MAX_CPU_ACTS_BYTES); the error names each part's size and the largest batch that fits,
    /// or the most threads.
    pub fn check(&self, arch: Arch, batch: usize, threads: usize, lanes: usize, records: usize) -> Result<(), EngineError> {
        reference::check_memory(arch, batch)?;
        let total = |n: usize, t: usize, l: usize| EngineBytes::new(arch, n, t, l, records).total() + self.beside;
        if total(batch, threads, lanes) <= self.limit {
            return Ok(());
        }
        let b = EngineBytes::new(arch, batch, threads, lanes, records);
        let extra = lanes.saturating_sub(threads);
        let fits = |n: usize, t: usize| total(n, t, t + extra) <= self.limit;
        // The largest batch that fits on these threads, else the most threads that fit this
        // batch (the sizes grow with each, so a bisection finds the edge).
        let largest = |ok: &dyn Fn(usize) -> bool, hi: usize| {
            let (mut lo, mut hi) = (0, hi);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if ok(mid) {
                    lo = mid
                } else {
                    hi = mid - 1
                }
            }
            lo
        };
        let advice = match largest(&|n| fits(n, threads), batch) {
            0 => match largest(&|t| t >= 1 && fits(batch, t), threads) {
                0 => "nothing fits: the dataset and what is kept beside it are too large".to_string(),
                t => format!("at most {t} thread{} fit at this batch", if t == 1 { "" } else { "s" }),
            },
            n => format!("batch {n} fits on these threads"),
        };
        let mib = |v: u64| v >> 20;
        let beside = if self.beside > 0 { format!(", {} MiB of {}", mib(self.beside), self.beside_what) } else { String::new() };
        Err(EngineError::limits(format!(
            "batch {batch} of the {} network on {threads} thread{} needs {} MiB in {} ({} MiB of activations, {} MiB of the lanes' gradients and scratch, {} MiB of evaluation lanes, {} MiB of weights, {} MiB of images{beside}), more than the {} MiB it may use: {advice}",
            arch.name(),
            if threads == 1 { "" } else { "s" },
            mib(b.total() + self.beside),
            self.holder,
            mib(b.acts),
            mib(b.lanes),
            mib(b.eval),
            mib(b.state),
            mib(b.data),
            mib(self.limit)
        )))
    }
}

/// `Budget::ENGINE.check`: the CPU engine alone within MAX_CPU_ENGINE_BYTES.
pub fn check_engine_memory(arch: Arch, batch: usize, threads: usize, lanes: usize, records: usize) -> Result<(), EngineError> {
    Budget::ENGINE.check(arch, batch, threads, lanes, records)
}

/// A batch must be at least 1 and at most the training set.
fn check_batch(batch: usize, train_len: usize) -> Result<(), EngineError> {
    if batch == 0 || batch > train_len {
        return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {train_len} training records")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a lane's buffers hold (its activations counted as `acts_bytes`, which
    /// tests/engine.rs checks against Acts' own vectors).
    fn held(l: &Lane) -> u64 {
        reference::acts_bytes(l.acts.n, l.acts.arch) + 4 * (l.grads.capacity() + l.cols.capacity() + l.dout.capacity()) as u64
    }

    #[test]
    fn the_engines_budget_counts_what_it_allocates() {
        let d = crate::data::load_path(&crate::data::sample_dir()).unwrap();
        for (net, batch, threads) in [(Arch::LENET, 4, 1), (Arch::WIDE, 64, 3), (Arch { c1: 7, c2: 9, f1: 11, f2: 13 }, 37, 2)] {
            let hyper = Hyper { batch, net, ..Hyper::default() };
            let e = CpuEngine::new(&init_params(&Layout::new(net), 0), &hyper, &d.train, &d.test, threads).unwrap();
            let records = d.train.len() + d.test.len();
            let b = EngineBytes::new(net, batch, e.threads.count, e.lanes.len(), records);
            let lanes: u64 = e.lanes.iter().map(held).sum();
            let eval: u64 = e.eval.lanes.lock().unwrap().iter().map(held).sum();
            let state = 4 * (e.params.capacity() + e.momentum.capacity()) as u64;
            let data = (e.train.images.len() + e.train.labels.len() + e.test.images.len() + e.test.labels.len()) as u64 + 4 * e.order.capacity() as u64;
            println!("{} batch {batch}, {threads} threads: counted {b:?}; held: lanes {lanes}, eval {eval}, state {state}, data {data}", net.name());
            assert_eq!(b.acts + b.lanes, lanes, "the training lanes");
            assert_eq!(b.eval, eval, "the evaluation lanes (forward only: no gradient buffers)");
            assert_eq!(b.state, state);
            assert!(data <= b.data && b.data - data <= 4 * d.test.len() as u64, "the data: held {data}, counted {}", b.data);
        }
    }

    #[test]
    fn a_wide_network_predicts_fewer_images_a_piece() {
        use super::super::predict::{predict_piece, PREDICT_BYTES};
        let widest = Arch { c1: 256, c2: 256, f1: 256, f2: 256 };
        assert_eq!((predict_piece(Arch::LENET), predict_piece(Arch::WIDE)), (PREDICT_BATCH, PREDICT_BATCH), "the tutorial's networks keep their pieces");
        let n = predict_piece(widest);
        println!("the widest network predicts {n} images a piece ({} MiB of activations)", reference::acts_bytes(n, widest) >> 20);
        assert!(n >= 1 && reference::acts_bytes(n, widest) <= PREDICT_BYTES && reference::acts_bytes(n + 1, widest) > PREDICT_BYTES);
    }

    #[test]
    fn an_engine_past_its_budget_is_refused_with_what_fits() {
        let widest = Arch { c1: 256, c2: 256, f1: 256, f2: 256 };
        // Threads alone: each lane's gradient share of 3.4 M weights (13 MiB) and scratch, and
        // the evaluation lanes' scratch, 1,024 of them.
        let e = check_engine_memory(widest, 64, 1024, 1024, 3000).unwrap_err();
        println!("{e}");
        assert_eq!(e.kind, crate::outputs::ErrorKind::Limits);
        assert!(
            e.message.contains("batch 64 of the 256-256-256-256 network on 1024 threads needs") && e.message.contains("MiB in the CPU engine (") && e.message.contains("at most"),
            "{e}"
        );
        let t: usize = e.message.rsplit("at most ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(check_engine_memory(widest, 64, t, t, 3000).is_ok() && check_engine_memory(widest, 64, t + 1, t + 1, 3000).is_err(), "{t} threads is the edge");
        // A batch past the budget on a few threads: the largest that fits is named, and fits.
        let e = check_engine_memory(widest, 420, 16, 16, 60_000).unwrap_err();
        println!("{e}");
        let n: usize = e.message.rsplit("batch ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(check_engine_memory(widest, n, 16, 16, 60_000).is_ok() && check_engine_memory(widest, n + 1, 16, 16, 60_000).is_err(), "batch {n} is the edge");
        // What the tutorial's LeNet asks for is far inside it.
        assert!(check_engine_memory(Arch::LENET, 1024, 64, 65, 60_000).is_ok());
        // A holder's own bytes count too, and are named.
        let worker = Budget { limit: 2 << 30, beside: 800 << 20, beside_what: "the views' weights", holder: "this tab's worker" };
        let e = worker.check(widest, 428, 2, 2, 60_000).unwrap_err();
        println!("{e}");
        assert!(e.message.contains("MiB in this tab's worker (") && e.message.contains(", 800 MiB of the views' weights), more than the 2048 MiB"), "{e}");
        let n: usize = e.message.rsplit("batch ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(worker.check(widest, n, 2, 2, 60_000).is_ok() && worker.check(widest, n + 1, 2, 2, 60_000).is_err(), "batch {n} is the edge");
    }
}
