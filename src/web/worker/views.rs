//! The answers that need the weights but not the engine, given at once between chunks: a
//! confusion cell's images with their probabilities, the visitor's own picture. Both use the
//! weights of this moment (the last read from the engine, or the run's initial ones).

use super::{error, post, Control, Shared};
use std::rc::Rc;
use tabcnn::cpu::{self, CpuEngine};
use tabcnn::model::{init_params, Arch, Layout, IMG_LEN};
use tabcnn::views;
use tabcnn::wire::FromWorker;

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
    let k = ctl.borrow();
    let (Some(d), Some(ev)) = (&k.views.data, &k.views.eval) else { return };
    let records = views::confusion_records(&ev.preds, &d.test.labels, truth, pred);
    let shown = &records[..records.len().min(CELL_SHOWN)];
    let (arch, params, _) = view_params(&k);
    let probs = CpuEngine::new(arch, params.to_vec(), 1).probabilities(&d.test.images, shown);
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
