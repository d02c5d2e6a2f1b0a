//! The classroom views' answers. Given at once between chunks, from the weights of this moment
//! (the last read from the engine, or the run's initial ones): a confusion cell's images with
//! their probabilities, the visitor's own picture. From the runner: a test image followed
//! through the engine, the filters' weights, the model file to download.

use super::runner::Runner;
use super::{error, post, Control, Shared};
use std::rc::Rc;
use tabcnn::checkpoint;
use tabcnn::cpu;
use tabcnn::model::{init_params, Arch, Layout, IMG_LEN};
use tabcnn::train::TrainError;
use tabcnn::views;
use tabcnn::wire::FromWorker;
use web_time::Instant;

/// The most of the worker's time the looks view's refreshes take while it trains.
const LOOKS_SHARE: f64 = 0.02;

/// Images of a confusion cell the page lists (the first that fit its canvas).
pub(crate) const CELL_SHOWN: usize = 40;

/// The network and weights the views use now, and their step.
pub(crate) fn view_params(k: &Control) -> (Arch, Rc<Vec<f32>>, u64) {
    k.views.params.clone().unwrap_or_else(|| {
        let h = &k.settings.hyper;
        (h.net, Rc::new(init_params(&Layout::new(h.net), h.seed)), 0)
    })
}

/// The records of confusion cell (truth, pred), and the first ones' images and probabilities.
pub(crate) fn cell(ctl: &Shared, truth: usize, pred: usize) {
    let mut k = ctl.borrow_mut();
    let (Some(d), Some(ev)) = (k.views.data.clone(), k.views.eval.clone()) else { return };
    let records = views::confusion_records(&ev.preds, &d.test.labels, truth, pred);
    let shown = &records[..records.len().min(CELL_SHOWN)];
    let (arch, params, _) = view_params(&k);
    let probs = match k.views.predict(arch, &params, |net| net.probabilities(&d.test.images, shown)) {
        Ok(p) => p,
        Err(e) => return error(&e.message),
    };
    let images = shown.iter().flat_map(|&r| d.test.images[r as usize * IMG_LEN..(r as usize + 1) * IMG_LEN].iter().copied()).collect();
    post(FromWorker::Cell { truth, pred, records, images, probs });
}

/// The visitor's picture (a [3,32,32] record) through the network with the weights of this moment.
pub(crate) fn own(ctl: &Shared, source: String, record: Vec<u8>) {
    let k = ctl.borrow();
    if k.views.data.is_none() {
        return error("the dataset is still loading: try again in a moment");
    }
    if record.len() != IMG_LEN {
        return error(&format!("{source}: {} bytes, not a 32x32 picture", record.len()));
    }
    let (arch, params, step) = view_params(&k);
    let probs = cpu::inspect(arch, &params, &record).probabilities();
    post(FromWorker::Own { source, record, probs, step });
}

/// What the looks view shows: a test record, or the visitor's picture (its name, its record).
#[derive(Clone, Debug)]
pub(crate) enum LooksTarget {
    Test(u32),
    Own(String, Vec<u8>),
}

impl Runner {
    /// Where the network looks in the looks view's image, for its class (or the predicted
    /// one): computed by the run's engine (the GPU's looks pass, or the CPU engine), by the
    /// reference on the weights of this moment when no run is under way. Asked for by the
    /// visitor (`asked`) it runs at once; as a refresh while training, only when its own cost
    /// stays within LOOKS_SHARE of the time since the last one (a software GPU's backward pass
    /// takes a training step's time).
    pub(super) async fn looks_now(&mut self, asked: bool) -> Result<(), TrainError> {
        if !asked && self.looks_next.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let (Some(target), Some(d)) = (self.looks_target.clone(), self.data.clone()) else { return Ok(()) };
        let (image, what, own) = match &target {
            LooksTarget::Test(r) if (*r as usize) < d.test.len() => {
                let r = *r as usize;
                (d.test.images[r * IMG_LEN..(r + 1) * IMG_LEN].to_vec(), format!("test image {r} (a {})", d.classes[d.test.labels[r] as usize]), false)
            }
            LooksTarget::Test(_) => return Ok(()),
            LooksTarget::Own(source, record) => (record.clone(), source.clone(), true),
        };
        let t = Instant::now();
        let (arch, params, at) = view_params(&self.ctl.borrow());
        let predicted = |p: &[f32]| tabcnn::app::top_k(&cpu::inspect(arch, p, &image).probabilities(), 1)[0].0;
        // Scrubbed to a kept step, the views' weights are that step's: the reference computes.
        let scrubbed = self.scrubbed.is_some();
        let (looks, step, source) = match &mut self.session {
            Some(s) if !scrubbed => {
                let step = s.global_step();
                // The predicted class from the weights of this step where the views have them
                // (a refresh), else from the engine's own logits (a second pass if not class 0).
                let class = self.looks_class.or_else(|| (at == step).then(|| predicted(&params)));
                let e = &s.settle().await.engine;
                let mut looks = e.looks(&image, class.unwrap_or(0)).await?;
                let best = tabcnn::app::top_k(&cpu::softmax(&looks.logits), 1)[0].0;
                if class.is_none() && best != looks.class {
                    looks = e.looks(&image, best).await?;
                }
                (looks, step, if s.engine.is_gpu() { "the GPU engine's looks pass" } else { "the CPU engine" })
            }
            _ => {
                let class = self.looks_class.unwrap_or_else(|| predicted(&params));
                let source = if scrubbed { "the CPU reference (the kept step's weights)" } else { "the CPU reference (no run yet)" };
                (cpu::looks(arch, &params, &image, class), at, source)
            }
        };
        let took = t.elapsed();
        self.looks_next = Some(Instant::now() + took.mul_f64(1.0 / LOOKS_SHARE));
        post(FromWorker::Looks { what, own, step, image, looks, source: source.to_string() });
        self.shares.view_ms += t.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    /// Follow the picked test record through the network: every activation read from the
    /// engine (the GPU engine's own buffers), for the page to draw.
    pub(super) async fn inspect_now(&mut self) -> Result<(), TrainError> {
        let (Some(r), Some(d)) = (self.picked, self.data.clone()) else { return Ok(()) };
        let r = r as usize;
        if r >= d.test.len() {
            return Ok(());
        }
        let t = Instant::now();
        let record = &d.test.images[r * IMG_LEN..(r + 1) * IMG_LEN];
        let scrubbed = self.scrubbed.is_some();
        let (inside, step, source, arch, params) = match &mut self.session {
            Some(s) if !scrubbed => {
                let inside = s.settle().await.engine.inspect(r).await?;
                let step = s.global_step();
                // The weights of this very step: those the grid was just predicted with, or read.
                let cached = {
                    let (_, p, at) = view_params(&self.ctl.borrow());
                    (at == step).then_some(p)
                };
                let params = match cached {
                    Some(p) => p.to_vec(),
                    None => s.engine.read_params().await?,
                };
                (inside, step, if s.engine.is_gpu() { "read from the GPU's buffers" } else { "CPU engine" }, super::page_arch(&s.engine), params)
            }
            _ => {
                let (arch, params, step) = view_params(&self.ctl.borrow());
                let source = if scrubbed { "the timeline" } else { "untrained" };
                (cpu::inspect(arch, &params, record), step, source, arch, params.to_vec())
            }
        };
        let truth = d.classes[d.test.labels[r] as usize].clone();
        let title = format!("Test image {r} (a {truth}) through the network at step {step} ({source})");
        post(FromWorker::Features { record: r as u32, step, arch, image: record.to_vec(), inside, params, truth, title });
        self.shares.view_ms += t.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    /// The filters from the latest weights, for the page to draw.
    pub(super) fn send_filters(&mut self) {
        let (arch, params, step) = view_params(&self.ctl.borrow());
        let what = if self.ctl.borrow().views.params.is_some() { format!("weights of step {step}") } else { "the initial weights (the run has not started)".to_string() };
        post(FromWorker::Filters { arch, params: params.to_vec(), what });
    }

    /// Offer the current weights as a .safetensors download (PyTorch's state_dict names).
    pub(super) async fn download_now(&mut self) -> Result<(), TrainError> {
        let (arch, params, step) = match &self.session {
            Some(s) => (super::page_arch(&s.engine), s.engine.read_params().await?, s.global_step()),
            None => {
                let (arch, params, _) = view_params(&self.ctl.borrow());
                (arch, self.start_params.clone().unwrap_or_else(|| params.to_vec()), 0)
            }
        };
        let bytes = checkpoint::to_safetensors(&params, &Layout::new(arch));
        let name = format!("tabcnn-{}-step{step}.safetensors", arch.name());
        let text = format!(
            "{name} ({} bytes): the weights of step {step}, with PyTorch's state_dict names; it loads into the tutorial's Net with load_state_dict(safetensors.torch.load_file(path))",
            bytes.len()
        );
        post(FromWorker::Download { name, bytes, text });
        Ok(())
    }
}
