//! The main thread's state and its channel to the worker: what the page keeps to draw and to
//! answer clicks without asking the worker (`Page`), and `send`, which every control uses.

use crate::bridge;
use crate::dom::show_error;
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::app::Curves;
use tabcnn::data::Split;
use tabcnn::model::CLASSES;
use tabcnn::outputs::EvalResult;
use tabcnn::recipe::Settings;
use tabcnn::saved::SavedRun;
use tabcnn::wire::{EnginePanel, RunState, Shares, ToWorker};
use wasm_bindgen::JsValue;

/// What the main thread keeps to draw and to answer clicks without asking the worker.
pub(crate) struct Page {
    pub(crate) worker: Option<web_sys::Worker>,
    /// The worker has installed its app; until then messages wait in `queue`.
    pub(crate) ready: bool,
    pub(crate) queue: Vec<(ToWorker, Option<JsValue>)>,
    pub(crate) settings: Settings,
    pub(crate) state: RunState,
    pub(crate) classes: Vec<String>,
    pub(crate) test_len: usize,
    /// The prediction grid: its test records (in drawing order), their images and labels.
    pub(crate) grid: Vec<u32>,
    pub(crate) grid_split: Split,
    pub(crate) grid_probs: Option<Vec<[f32; CLASSES]>>,
    pub(crate) eval: Option<EvalResult>,
    /// The selected confusion cell (true, predicted).
    pub(crate) cell: Option<(usize, usize)>,
    pub(crate) curves: Curves,
    pub(crate) epochs: usize,
    /// Steps in an epoch of the current run (0 until a run says), for the charts' step axis.
    pub(crate) steps_per_epoch: usize,
    /// The saved runs (summaries), the current run's id, and those overlaid on the loss chart.
    pub(crate) runs: Vec<SavedRun>,
    pub(crate) current: Option<String>,
    pub(crate) overlays: Vec<String>,
    /// The rows "Your runs" shows: (run id, is the current run), in order.
    pub(crate) runs_shown: Vec<(String, bool)>,
    /// The page's storage (used, allowed) as the browser last said, and whether it granted
    /// persistent storage (None: not asked yet, or no answer).
    pub(crate) storage: Option<(f64, f64)>,
    pub(crate) persisted: Option<bool>,
    pub(crate) persist_asked: bool,
    pub(crate) panel: EnginePanel,
    pub(crate) shares: Shares,
    pub(crate) images_per_second: f64,
    /// #note says a Pause or Reset waits for the step in flight (cleared once it is answered).
    pub(crate) wait_note: bool,
    /// A frame is requested to draw the curves.
    pub(crate) curves_due: bool,
    /// The followed test image (its activations and weights), the output whose arithmetic
    /// the convolution view shows, and Play's interval.
    pub(crate) followed: Option<crate::compute_view::Followed>,
    pub(crate) explained: Option<(tabcnn::explain::Layer, (usize, usize, usize))>,
    pub(crate) playing: Option<i32>,
    /// Each refresh's per-layer gradient norms (step, epochs done, norms), and the latest
    /// statistics (step, layers).
    pub(crate) grad_history: Vec<(u64, f64, Vec<f32>)>,
    pub(crate) layer_stats: Option<(u64, Vec<tabcnn::stats::LayerStats>)>,
    /// The steps whose weights the run keeps, the one the views show (None: live), and Play's
    /// interval.
    pub(crate) timeline_steps: Vec<u64>,
    pub(crate) timeline_shown: Option<u64>,
    pub(crate) timeline_playing: Option<i32>,
}

pub(crate) type Ui = Rc<RefCell<Page>>;

/// Send a message to the worker (queued until it is ready).
pub(crate) fn send(ui: &Ui, msg: ToWorker) {
    send_with(ui, msg, None);
}

/// Send a message with a File beside it (a dropped archive).
pub(crate) fn send_with(ui: &Ui, msg: ToWorker, file: Option<JsValue>) {
    let mut p = ui.borrow_mut();
    match (&p.worker, p.ready) {
        (Some(w), true) => {
            if let Err(e) = bridge::to_worker(w, &msg, file.as_ref()) {
                show_error(&format!("internal error: {e}"));
            }
        }
        _ => p.queue.push((msg, file)),
    }
}
