//! What the page shows of the run: the figures of #metrics and the progress bar.

use super::post;
use super::runner::Runner;
use tabcnn::app::progress_label;
use tabcnn::wire::{FromWorker, RunState, Status};

impl Runner {
    /// The run's figures for #metrics and the progress bar.
    pub(super) fn status(&self) -> Status {
        let loading = self.ctl.borrow().loading;
        let state = if loading { RunState::Loading } else { self.state };
        // Without a session (after a divergence or a lost device) the run is where its kept
        // point is: Start continues from there.
        let kept = self.resume.as_ref().filter(|_| self.session.is_none());
        let (epoch, epoch_step, step, ips) = match (&self.session, kept) {
            (Some(s), _) => (s.epoch().min(s.hyper.epochs), s.epoch_step(), s.global_step(), s.images_per_second()),
            (None, Some(ck)) => (ck.epoch, ck.epoch_step, ck.global_step, ck.images as f64 / ck.seconds.max(1e-9)),
            (None, None) => (0, 0, 0, 0.0),
        };
        let (progress, label) = match (&self.session, kept) {
            (Some(s), _) => {
                let total = (s.hyper.epochs * s.steps_per_epoch()).max(1) as f64;
                let done = s.epochs_done() * s.steps_per_epoch() as f64;
                (done / total, progress_label(s.epoch(), s.hyper.epochs, s.epoch_step(), s.steps_per_epoch(), ips, s.seconds_left(), self.state.name()))
            }
            (None, Some(ck)) => {
                // The run's epochs as Session::resume will see them (a lowered count ends the
                // run with the kept epoch).
                let epochs = self.run_hyper.epochs.max(ck.epoch);
                let per_epoch = (ck.order.len() / self.run_hyper.batch.max(1)).max(1);
                let done = ck.epoch.saturating_sub(1) * per_epoch + ck.epoch_step;
                let label = format!("{} · kept: epoch {}/{epochs} · step {}/{per_epoch} · press Start to continue from there", self.state.name(), ck.epoch, ck.epoch_step);
                (done as f64 / (epochs * per_epoch) as f64, label)
            }
            (None, None) => (0.0, format!("{} · press Start to train", self.state.name())),
        };
        let last = |v: &Vec<(f64, f64)>| v.last().map(|p| p.1);
        Status {
            state,
            epoch,
            epoch_step,
            step,
            images_per_second: ips,
            loss: last(&self.curves.loss),
            train_accuracy: last(&self.curves.train_accuracy),
            test_accuracy: last(&self.curves.test_accuracy),
            loss_points: self.curves.loss.len(),
            progress,
            label,
        }
    }

    pub(super) fn show_metrics(&self) {
        post(FromWorker::Status { status: self.status() });
    }
}
