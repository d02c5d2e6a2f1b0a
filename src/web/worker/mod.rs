//! The worker that owns the run: the dataset (download, decompression), the engines (WebGPU
//! through the worker's own `navigator.gpu`, or the CPU engine in wasm), the session, the
//! evaluations, the saves to IndexedDB and the inspection pass. The page's main thread only
//! draws and sends the visitor's controls (`tabcnn::wire::ToWorker`); this thread answers in
//! `FromWorker` messages. A worker is not throttled like a tab's timers, and its long work never
//! holds up the page's input or painting.
//!
//! - `runner`: the training loop (session lifecycle, chunks, evaluation, errors, what to show).
//! - `engines`: which engine trains, measured, and the engine panel.
//! - `dataset`: loading the sample, the full set or a dropped archive.
//! - `saves`: the runs kept in IndexedDB (save, list, resume, delete).
//! - `status`: the run's figures as the page shows them.
//! - `views`: the classroom views' answers (a cell's images, your picture, the feature maps,
//!   the filters, the model file).

mod dataset;
mod engines;
mod helpers;
mod runner;
mod saves;
mod status;
mod timeline;
mod views;

use crate::bridge;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::data::Cifar;
use tabcnn::model::Arch;
use tabcnn::outputs::EvalResult;
use tabcnn::recipe::{DatasetChoice, Settings};
use tabcnn::wire::{FromWorker, ToWorker};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// What the visitor asked for, shared by the message handler (writer) and the runner (reader).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Want {
    Idle,
    Train,
    Pause,
}

/// The state the message handler answers from at once, without waiting for the runner.
#[derive(Default)]
pub(crate) struct Views {
    pub(crate) data: Option<Rc<Cifar>>,
    /// The last evaluation on the whole test set.
    pub(crate) eval: Option<Rc<EvalResult>>,
    /// The latest weights read from the engine and the step they are from (None: the run has
    /// not started; its weights are the seed's initial ones).
    pub(crate) params: Option<(Arch, Rc<Vec<f32>>, u64)>,
    /// What the grid, a scrubbed step's confusion matrix and a confusion cell are predicted
    /// with: one predictor for all of them (its lanes, `cpu::predict_piece` images of activations,
    /// made once; a fresh one per click once doubled the worker's memory on a wide network).
    pub(crate) predictor: tabcnn::cpu::KeptPredictor,
}

impl Views {
    /// `f` on the kept predictor under the network `arch` with `params` (borrowed for `f`
    /// only: never across an await, so the message handler may use it meanwhile).
    pub(crate) fn predict<T>(&mut self, arch: Arch, params: &[f32], f: impl FnOnce(&tabcnn::cpu::Predictor) -> T) -> Result<T, tabcnn::outputs::EngineError> {
        self.predictor.set(arch, params, 1)?;
        Ok(f(self.predictor.get().expect("set above")))
    }
}

pub(crate) struct Control {
    pub(crate) want: Want,
    pub(crate) settings: Settings,
    /// The page's address: its files (the sample, the full archive) are relative to it.
    pub(crate) base: String,
    /// lr, momentum, weight decay or epochs changed: apply to the running session.
    pub(crate) hyper_changed: bool,
    pub(crate) reset: bool,
    pub(crate) evaluate: bool,
    /// A freshly loaded dataset for the runner to switch to, and which it is.
    pub(crate) new_data: Option<(Rc<Cifar>, DatasetChoice)>,
    /// Counts the datasets asked for: a load that finishes after another was asked for is
    /// not used (choosing "full" then "sample" while the full set downloads ends on the sample).
    pub(crate) data_wanted: u64,
    pub(crate) loading: bool,
    /// Loading a dataset failed (the page shows the error): the runner shows the error state.
    pub(crate) load_failed: bool,
    /// The sample, kept once loaded, for switching back to it.
    pub(crate) sample: Option<Rc<Cifar>>,
    pub(crate) views: Views,
    /// A grid image was clicked: follow this test record through the network.
    pub(crate) pick: Option<u32>,
    /// Where the network looks: in the visitor's latest picture (source, record), or for
    /// another class (None: the predicted one).
    pub(crate) looks_own: Option<(String, Vec<u8>)>,
    pub(crate) looks_class: Option<Option<usize>>,
    /// A kept step to show (Some(step)) or live (None), asked for since the runner looked.
    pub(crate) scrub: Option<Option<u64>>,
    /// A model the visitor uploaded: (network, packed parameters, file name).
    pub(crate) upload: Option<(Arch, Vec<f32>, String)>,
    pub(crate) download: bool,
    /// A saved run to continue (its id), and one to delete.
    pub(crate) resume_run: Option<String>,
    pub(crate) delete_run: Option<String>,
    pub(crate) wake: Option<oneshot::Sender<()>>,
    /// A wake came while the runner was not waiting.
    pub(crate) woken: bool,
}

pub(crate) type Shared = Rc<RefCell<Control>>;

/// Wake the runner; if it is not waiting (it is busy with a chunk or a save), its next wait
/// returns at once, so no change is left unapplied.
pub(crate) fn wake(ctl: &Shared) {
    let mut k = ctl.borrow_mut();
    match k.wake.take() {
        Some(tx) => {
            let _ = tx.send(());
        }
        None => k.woken = true,
    }
}

/// Wait until a message wakes the runner (at once if one came since the last wait).
pub(crate) async fn wait(ctl: &Shared) {
    let rx = {
        let mut k = ctl.borrow_mut();
        if std::mem::take(&mut k.woken) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        k.wake = Some(tx);
        rx
    };
    let _ = rx.await;
}

/// The network of an engine the page made: LeNet-shaped, as every engine the page makes is
/// (web/control.rs refuses other networks before a run can start).
pub(crate) fn page_arch(e: &tabcnn::train::Engine) -> Arch {
    e.arch().expect("the page makes engines of LeNet-shaped networks only")
}

pub(crate) fn post(msg: FromWorker) {
    bridge::to_page(&msg);
}

pub(crate) fn note(text: &str) {
    post(FromWorker::Note { text: text.into() });
}

pub(crate) fn error(text: &str) {
    post(FromWorker::Error { text: text.into() });
}

/// A panic is a bug: the page says so (the worker's console has the details).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(FromWorker::Panic { text: info.to_string() });
    }));
}

/// The worker's entry point: answer the page's messages; `Begin` starts the runner.
pub fn run() {
    install_panic_hook();
    let ctl: Shared = Rc::new(RefCell::new(Control {
        want: Want::Idle,
        settings: Settings::default(),
        base: String::new(),
        hyper_changed: false,
        reset: false,
        evaluate: false,
        new_data: None,
        data_wanted: 0,
        loading: false,
        load_failed: false,
        sample: None,
        views: Views::default(),
        pick: None,
        looks_own: None,
        looks_class: None,
        scrub: None,
        upload: None,
        download: false,
        resume_run: None,
        delete_run: None,
        wake: None,
        woken: false,
    }));
    let c = ctl.clone();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| match bridge::from_js::<ToWorker>(&e.data()) {
        Ok((msg, file)) => handle(&c, msg, file),
        Err(e) => error(&format!("internal error: {e}")),
    });
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget(); // the worker lives as long as its handler
    post(FromWorker::Ready);
}

/// One message from the page: a change for the runner (it is woken), or an answer at once.
fn handle(ctl: &Shared, msg: ToWorker, file: Option<JsValue>) {
    let mut k = ctl.borrow_mut();
    match msg {
        ToWorker::Begin { settings, base } => {
            k.settings = settings.clone();
            k.base = base;
            drop(k);
            wasm_bindgen_futures::spawn_local(runner::Runner::new(ctl.clone()).run(settings));
            return;
        }
        ToWorker::Start => k.want = Want::Train,
        ToWorker::Pause => {
            k.want = match k.want {
                Want::Train => Want::Pause,
                Want::Pause => Want::Train,
                w => w,
            }
        }
        ToWorker::Evaluate => k.evaluate = true,
        ToWorker::Reset => {
            k.reset = true;
            k.want = Want::Idle;
        }
        ToWorker::Settings { settings } => {
            k.settings = settings;
            k.hyper_changed = true;
        }
        ToWorker::Dataset { full } => {
            drop(k);
            return dataset::choose(ctl, full);
        }
        ToWorker::DatasetFile { name, .. } => {
            drop(k);
            match file.and_then(|f| f.dyn_into::<web_sys::File>().ok()) {
                Some(f) => {
                    let c = ctl.clone();
                    wasm_bindgen_futures::spawn_local(async move { dataset::load_data(&c, dataset::Source::File(f)).await });
                }
                None => error(&format!("internal error: the file {name} did not come with its message")),
            }
            return;
        }
        ToWorker::Pick { record } => k.pick = Some(record),
        ToWorker::LooksClass { class } => k.looks_class = Some(class),
        ToWorker::Scrub { step } => k.scrub = Some(step),
        ToWorker::Cell { truth, pred } => {
            drop(k);
            return views::cell(ctl, truth, pred);
        }
        ToWorker::Own { source, record } => {
            if record.len() == tabcnn::model::IMG_LEN {
                k.looks_own = Some((source.clone(), record.clone()));
            }
            drop(k);
            views::own(ctl, source, record);
            // The runner computes where the network looks in it.
            return wake(ctl);
        }
        ToWorker::Upload { name, bytes } => match tabcnn::checkpoint::from_safetensors_any(&bytes, &name) {
            Ok((arch, p)) => k.upload = Some((arch, p, name)),
            Err(e) => {
                post(FromWorker::ModelStatus { text: String::new() });
                return error(&format!("{e} (the model in use and the training so far are unchanged)"));
            }
        },
        ToWorker::Download => k.download = true,
        ToWorker::ResumeRun { id } => k.resume_run = Some(id),
        ToWorker::DeleteRun { id } => k.delete_run = Some(id),
    }
    drop(k);
    wake(ctl);
}
