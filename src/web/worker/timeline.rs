//! How it learned: the run's weights kept through training (tabcnn::timeline) and the views
//! of a kept step on demand. Scrubbed to a step, the filters, the followed image's maps, the
//! prediction grid and the confusion matrix show that step's weights: the grid and the matrix
//! through the CPU engine's fast layers (cpu::Predictor), the maps through the reference's
//! batch-1 pass. The confusion matrix comes first on a subset of the test set, then (between
//! yields, unless another step is asked for) on all of it. Back to live, the views follow
//! training again. Nothing of it runs in a training step.

use super::runner::Runner;
use super::{post, Shared};
use tabcnn::cpu;
use tabcnn::model::IMG_LEN;
use tabcnn::outputs::EvalResult;
use tabcnn::train::TrainError;
use tabcnn::wire::FromWorker;
use web_time::Instant;

/// Test images of the confusion matrix's first answer for a scrubbed step.
pub(crate) const SUBSET: usize = 500;

/// A step asked for (Some(step)) or live (None) since the runner last looked.
fn scrub_pending(ctl: &Shared) -> bool {
    ctl.borrow().scrub.is_some()
}

impl Runner {
    /// Keep the weights of `step` if the timeline takes them; tell the page its steps.
    pub(super) fn offer_snapshot(&mut self, step: u64, params: &[f32]) {
        if self.timeline.offer(step, params) {
            self.send_timeline();
        }
    }

    pub(super) fn send_timeline(&self) {
        let steps_per_epoch = self.session.as_ref().map(|s| s.steps_per_epoch()).unwrap_or(0);
        post(FromWorker::Timeline { steps: self.timeline.steps(), steps_per_epoch, shown: self.scrubbed });
    }

    /// Show the views of kept step `step` (None: live again).
    pub(super) async fn scrub(&mut self, step: Option<u64>) -> Result<(), TrainError> {
        self.scrubbed = step.filter(|s| self.timeline.at(*s).is_some());
        self.send_timeline();
        match self.scrubbed {
            Some(s) => self.scrub_views(s).await,
            None => {
                // Live: the last evaluation and the current weights' views.
                {
                    let mut k = self.ctl.borrow_mut();
                    k.views.eval = self.last_eval.clone().map(std::rc::Rc::new);
                    k.views.params = self.live_params.clone();
                }
                post(FromWorker::Eval { eval: self.last_eval.clone() });
                if self.session.is_some() {
                    self.refresh_grid().await
                } else {
                    self.send_filters();
                    self.inspect_now().await
                }
            }
        }
    }

    async fn scrub_views(&mut self, step: u64) -> Result<(), TrainError> {
        let (Some(snap), Some(d)) = (self.timeline.at(step).cloned(), self.data.clone()) else { return Ok(()) };
        let arch = self.session.as_ref().and_then(|s| s.engine.arch()).unwrap_or(self.run_hyper.net);
        let t = Instant::now();
        // Cells and the visitor's picture use this step's weights while it is shown.
        self.ctl.borrow_mut().views.params = Some((arch, std::rc::Rc::new(snap.params.clone()), step));
        // The views' one predictor, under this step's weights for each piece (a cell clicked
        // between the pieces may have used it).
        let predict = |ctl: &Shared, f: &mut dyn FnMut(&cpu::Predictor)| ctl.borrow_mut().views.predict(arch, &snap.params, |net| f(net));
        let mut probs = Vec::new();
        predict(&self.ctl, &mut |net| probs = net.probabilities(&d.test.images, &self.grid))?;
        self.send_grid(Some(probs));
        post(FromWorker::Filters { arch, params: snap.params.clone(), what: format!("weights of step {step} (the timeline)") });
        if let Some(r) = self.picked.map(|r| r as usize).filter(|&r| r < d.test.len()) {
            let image = d.test.images[r * IMG_LEN..(r + 1) * IMG_LEN].to_vec();
            let inside = cpu::inspect(arch, &snap.params, &image);
            let truth = d.classes[d.test.labels[r] as usize].clone();
            let title = format!("Test image {r} (a {truth}) through the network at step {step} (the timeline)");
            post(FromWorker::Features { record: r as u32, step, arch, image, inside, params: snap.params.clone(), truth, title });
        }
        let n = d.test.len();
        let mut preds = Vec::with_capacity(n);
        predict(&self.ctl, &mut |net| preds.extend(net.predict_range(&d.test.images, 0, SUBSET.min(n))))?;
        self.show_eval(&preds, &d.test.labels);
        self.shares.view_ms += t.elapsed().as_secs_f64() * 1e3;
        // Then all of it, a piece at a time, unless the visitor moves on.
        while preds.len() < n {
            tabcnn::timer::yield_now().await;
            if scrub_pending(&self.ctl) {
                return Ok(());
            }
            let t = Instant::now();
            let start = preds.len();
            predict(&self.ctl, &mut |net| preds.extend(net.predict_range(&d.test.images, start, SUBSET.min(n - start))))?;
            self.shares.view_ms += t.elapsed().as_secs_f64() * 1e3;
        }
        if n > SUBSET {
            self.show_eval(&preds, &d.test.labels);
        }
        Ok(())
    }

    /// The confusion matrix of the first `preds.len()` test images (the page and the cells).
    fn show_eval(&self, preds: &[u32], labels: &[u8]) {
        let r = EvalResult::from_preds(preds.to_vec(), &labels[..preds.len()]);
        self.ctl.borrow_mut().views.eval = Some(std::rc::Rc::new(r.clone()));
        post(FromWorker::Eval { eval: Some(r) });
    }
}
