//! The page: wires the controls of index.html, keeps the #metrics element's attributes in step
//! with training, and runs the training loop on the browser's event loop.
//!
//! One task, the runner, owns the training session; the button and input handlers only change
//! a shared `Control` and wake it. Between chunks of steps the runner applies those changes,
//! draws, and yields, so the tab stays responsive. GPU work is queued a chunk at a time and the
//! metrics come back through the engine's async readback (map_async), so nothing waits on the
//! GPU on the main thread.

use crate::classroom::{self, escape, local_time, show_cell, view_params, Views};
use crate::draw::{self, Series, BLUE, GREEN, ORANGE, RED};
use crate::io;
use crate::store;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tabcnn::app::{grid_records, Curves};
use tabcnn::checkpoint;
use tabcnn::cpu::{self, CpuEngine};
use tabcnn::data::{self, Cifar, Unpacker};
use tabcnn::gpu::{Gpu, GpuEngine};
use tabcnn::model::{init_params, Arch, Layout, CLASSES, IMG_LEN};
use tabcnn::outputs::{EngineError, EvalResult};
use tabcnn::recipe::{DatasetChoice, EngineChoice, Settings};
use tabcnn::recipe::{Hyper, REFERENCE_ACCURACY, REFERENCE_CLASS_ACCURACY};
use tabcnn::saved::SavedRun;
use tabcnn::train::{Checkpoint, CpuTrainer, Engine, Session, TrainError};
use tabcnn::views;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Document, Element, HtmlCanvasElement, HtmlInputElement, HtmlSelectElement};
use web_time::Instant;

/// Where the full dataset is fetched from, relative to the page.
const FULL_URL: &str = "data/cifar-10-binary.tar.gz";
/// The bundled sample, relative to the page (trunk copies data/sample there).
const SAMPLE_DIR: &str = "sample/cifar-10-batches-bin";
/// Wall time one chunk of steps aims at: long enough that the readback between chunks costs
/// little, short enough that a click is answered at once. The CPU engine runs on this thread,
/// so its chunks are shorter.
const GPU_CHUNK_MS: f64 = 250.0;
const CPU_CHUNK_MS: f64 = 60.0;
/// The prediction grid and the resume point are refreshed this often while training.
const REFRESH_MS: f64 = 2000.0;
/// Test-set evaluations per epoch (the last one at the epoch's end).
const EVALS_PER_EPOCH: usize = 4;
/// Test images per class in the prediction grid.
const GRID_PER_CLASS: usize = 2;

pub(crate) fn doc() -> Document {
    web_sys::window().and_then(|w| w.document()).expect("a document")
}

pub(crate) fn el(id: &str) -> Element {
    doc().get_element_by_id(id).unwrap_or_else(|| panic!("index.html has no #{id}"))
}

pub(crate) fn canvas(id: &str) -> HtmlCanvasElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not a canvas"))
}

pub(crate) fn input(id: &str) -> HtmlInputElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not an input"))
}

pub(crate) fn set_text(id: &str, s: &str) {
    el(id).set_text_content(Some(s));
}

pub(crate) fn set_attr(e: &Element, k: &str, v: &str) {
    let _ = e.set_attribute(k, v);
}

/// Show an error in #error (and the console); an empty message hides it.
pub(crate) fn show_error(msg: &str) {
    let e = el("error");
    e.set_text_content(Some(msg));
    if msg.is_empty() {
        set_attr(&e, "hidden", "");
    } else {
        let _ = e.remove_attribute("hidden");
        web_sys::console::warn_1(&format!("tabcnn: {msg}").into());
    }
}

/// A panic is a bug: say so in the page rather than leave a dead tab without a word.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        if let Some(e) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("error")) {
            e.set_text_content(Some(&format!("internal error, please reload the page: {info}")));
            let _ = e.remove_attribute("hidden");
        }
        if let Some(m) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("metrics")) {
            let _ = m.set_attribute("data-state", "error");
        }
    }));
}

/// What the visitor asked for, shared by the handlers (writers) and the runner (reader).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Want {
    Idle,
    Train,
    Pause,
}

pub(crate) struct Control {
    pub(crate) want: Want,
    pub(crate) settings: Settings,
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
    /// Loading a dataset failed (the message is in #error): the runner shows the error state.
    pub(crate) load_failed: bool,
    /// The sample, kept once loaded, for switching back to it.
    pub(crate) sample: Option<Rc<Cifar>>,
    /// What the views' handlers read (kept current by the runner).
    pub(crate) views: Views,
    /// A grid image was clicked: follow this test record through the network.
    pub(crate) pick: Option<u32>,
    /// A model the visitor uploaded: (packed parameters, file name).
    pub(crate) upload: Option<(Arch, Vec<f32>, String)>,
    pub(crate) download: bool,
    /// A saved run to continue (its id), asked for by a button.
    pub(crate) resume_run: Option<String>,
    /// Overlay a saved run's loss curve (true) or stop (false).
    /// The saved runs whose loss curves are overlaid: changed by the checkboxes at once (so a
    /// re-rendered list shows them as ticked), drawn by the runner when `overlay_changed`.
    pub(crate) overlays: Vec<String>,
    pub(crate) overlay_changed: bool,
    pub(crate) delete_run: Option<String>,
    pub(crate) wake: Option<oneshot::Sender<()>>,
}

pub(crate) type Shared = Rc<RefCell<Control>>;

pub(crate) fn wake(ctl: &Shared) {
    if let Some(tx) = ctl.borrow_mut().wake.take() {
        let _ = tx.send(());
    }
}

/// Wait until a handler wakes the runner.
async fn wait(ctl: &Shared) {
    let (tx, rx) = oneshot::channel();
    ctl.borrow_mut().wake = Some(tx);
    let _ = rx.await;
}

pub(crate) fn on(id: &str, event: &str, f: impl FnMut(web_sys::Event) + 'static) {
    let c = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    el(id).add_event_listener_with_callback(event, c.as_ref().unchecked_ref()).expect("addEventListener");
    c.forget(); // the page lives as long as the handlers
}

/// The hyperparameter controls: each id is its settings key.
const FIELDS: [&str; 9] = ["epochs", "batch", "lr", "momentum", "weight-decay", "seed", "augment", "schedule", "net"];
/// The settings that apply when a run starts (Reset, or the first Start), not to a running one.
const AT_START: [&str; 5] = ["batch", "seed", "augment", "schedule", "net"];

/// The value of an input or select.
fn control_value(id: &str) -> String {
    let e = el(id);
    match e.dyn_ref::<HtmlSelectElement>() {
        Some(sel) => sel.value(),
        None => input(id).value(),
    }
}

fn set_control(id: &str, v: &str) {
    let e = el(id);
    match e.dyn_ref::<HtmlSelectElement>() {
        Some(sel) => sel.set_value(v),
        None => input(id).set_value(v),
    }
}

/// The presets: (name, link query applied on top of the recipe). The last two train on the
/// full CIFAR-10.
const PRESETS: [(&str, &str); 3] = [
    ("recipe", ""),
    // README "Past the recipe": 69.91 % in 20 epochs (seed 0, CPU engine, 370 s).
    ("beyond", "batch=32&lr=0.02&weight-decay=5e-4&schedule=cosine&augment=flip,crop&epochs=20"),
    // README "Past the recipe": the wider network, 30 epochs.
    ("wide", "batch=32&lr=0.02&weight-decay=5e-4&schedule=cosine&augment=flip,crop&epochs=30&net=wide"),
];

fn field_value(s: &Settings, key: &str) -> String {
    let h = &s.hyper;
    match key {
        "epochs" => h.epochs.to_string(),
        "batch" => h.batch.to_string(),
        "lr" => h.lr.to_string(),
        "momentum" => h.momentum.to_string(),
        "weight-decay" => h.weight_decay.to_string(),
        "seed" => h.seed.to_string(),
        "augment" => tabcnn::recipe::augment_name(h.flip, h.crop).to_string(),
        "schedule" => h.schedule.to_string(),
        "net" => h.net.name(),
        _ => unreachable!(),
    }
}

fn show_settings(s: &Settings) {
    for key in FIELDS {
        set_control(key, &field_value(s, key));
    }
    let sel: HtmlSelectElement = el("dataset").dyn_into().expect("select");
    sel.set_value(if s.dataset == DatasetChoice::Full { "full" } else { "sample" });
    set_attr(&el("share"), "href", &s.to_query());
}

/// Set up the handlers, then run the training loop forever.
pub async fn run() {
    let query = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    let (settings, problems) = Settings::from_query(&query);
    show_settings(&settings);
    if !problems.is_empty() {
        show_error(&format!("some settings in the link were not used: {}", problems.join("; ")));
    }
    let ctl: Shared = Rc::new(RefCell::new(Control {
        want: Want::Idle,
        settings: settings.clone(),
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
        upload: None,
        download: false,
        resume_run: None,
        overlays: Vec::new(),
        overlay_changed: false,
        delete_run: None,
        wake: None,
    }));
    wire(&ctl);
    Runner::new(ctl).run(settings).await;
}

fn wire(ctl: &Shared) {
    let c = ctl.clone();
    on("start", "click", move |_| {
        c.borrow_mut().want = Want::Train;
        wake(&c);
    });
    let c = ctl.clone();
    on("pause", "click", move |_| {
        let mut k = c.borrow_mut();
        k.want = match k.want {
            Want::Train => Want::Pause,
            Want::Pause => Want::Train,
            w => w,
        };
        drop(k);
        wake(&c);
    });
    let c = ctl.clone();
    on("evaluate", "click", move |_| {
        c.borrow_mut().evaluate = true;
        wake(&c);
    });
    let c = ctl.clone();
    on("reset", "click", move |_| {
        let mut k = c.borrow_mut();
        k.reset = true;
        k.want = Want::Idle;
        drop(k);
        wake(&c);
    });
    for key in FIELDS {
        let c = ctl.clone();
        on(key, "change", move |_| {
            let mut k = c.borrow_mut();
            let v = control_value(key);
            match k.settings.set(key, &v) {
                Ok(()) => {
                    show_error("");
                    k.hyper_changed = true;
                    if AT_START.contains(&key) {
                        set_text("note", &format!("{key} applies from the next Reset (or the first Start)"));
                    }
                    set_control("preset", "");
                }
                Err(e) => {
                    show_error(&e);
                    set_control(key, &field_value(&k.settings, key));
                }
            }
            set_attr(&el("share"), "href", &k.settings.to_query());
            drop(k);
            wake(&c);
        });
    }
    let c = ctl.clone();
    on("dataset", "change", move |_| choose_dataset(&c, control_value("dataset") == "full"));
    let c = ctl.clone();
    on("preset", "change", move |_| {
        let name = control_value("preset");
        let Some(&(_, query)) = PRESETS.iter().find(|(n, _)| *n == name) else { return };
        let full = {
            let mut k = c.borrow_mut();
            let (mut s, _) = Settings::from_query(query);
            // The preset sets the recipe's knobs; the dataset, engine and limit stay.
            (s.dataset, s.engine, s.limit, s.autostart) = (k.settings.dataset, k.settings.engine, k.settings.limit, false);
            if name != "recipe" {
                s.dataset = DatasetChoice::Full;
            }
            let full = s.dataset == DatasetChoice::Full && k.settings.dataset != DatasetChoice::Full;
            k.settings = s;
            k.hyper_changed = true;
            show_settings(&k.settings);
            set_control("preset", &name);
            full
        };
        set_text("note", "the preset applies from the next Reset (or the first Start)");
        if full {
            set_control("dataset", "full");
            choose_dataset(&c, true);
        }
        wake(&c);
    });
    let c = ctl.clone();
    on_file("file", "drop", move |f| {
        let c = c.clone();
        wasm_bindgen_futures::spawn_local(async move { load_data(&c, Source::File(f)).await });
    });
    classroom::wire_views(ctl);
    classroom::wire_runs(ctl);
}

/// A file picked in the input `input_id` or dropped on `drop_id`, handed to `f`.
pub(crate) fn on_file(input_id: &'static str, drop_id: &str, f: impl Fn(web_sys::File) + Clone + 'static) {
    let g = f.clone();
    on(input_id, "change", move |_| {
        if let Some(file) = input(input_id).files().and_then(|l| l.get(0)) {
            g(file);
        }
    });
    on(drop_id, "dragover", |e| e.prevent_default());
    on(drop_id, "drop", move |e| {
        e.prevent_default();
        if let Some(file) = e.dyn_ref::<web_sys::DragEvent>().and_then(|d| d.data_transfer()).and_then(|t| t.files()).and_then(|l| l.get(0)) {
            f(file);
        }
    });
}

/// Switch to the sample or the full dataset (loading it if needed).
pub(crate) fn choose_dataset(c: &Shared, full: bool) {
    c.borrow_mut().settings.dataset = if full { DatasetChoice::Full } else { DatasetChoice::Sample };
    set_attr(&el("share"), "href", &c.borrow().settings.to_query());
    let c = c.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let sample = c.borrow().sample.clone();
        match (full, sample) {
            (false, Some(s)) => {
                let mut k = c.borrow_mut();
                k.data_wanted += 1;
                k.new_data = Some((s, DatasetChoice::Sample));
                drop(k);
                wake(&c);
            }
            _ => load_data(&c, if full { Source::Full } else { Source::Sample }).await,
        }
    });
}

enum Source {
    Sample,
    Full,
    File(web_sys::File),
}

fn data_progress(label: &str, done: u64, total: Option<u64>) {
    let mb = |b: u64| b as f64 / 1e6;
    let text = match total {
        Some(t) => format!("{label}: {:.1} of {:.1} MB", mb(done), mb(t)),
        None => format!("{label}: {:.1} MB", mb(done)),
    };
    let frac = total.map(|t| done as f64 / t.max(1) as f64).unwrap_or(0.0);
    draw::progress(&canvas("data-progress"), &draw::ProgressView { fraction: frac, label: text }, "#8ab4f8");
}

/// Load a dataset (download or file, decompressed as it arrives) and hand it to the runner. A
/// bad file leaves the current dataset, the model and its progress as they were.
async fn load_data(ctl: &Shared, src: Source) {
    if ctl.borrow().loading {
        show_error("a dataset is already loading");
        return;
    }
    let origin = match src {
        Source::Sample => DatasetChoice::Sample,
        Source::Full => DatasetChoice::Full,
        Source::File(_) => DatasetChoice::File,
    };
    let wanted = {
        let mut k = ctl.borrow_mut();
        k.loading = true;
        if k.want == Want::Train {
            k.want = Want::Pause;
        }
        k.data_wanted += 1;
        k.data_wanted
    };
    wake(ctl);
    set_attr(&el("metrics"), "data-state", "loading");
    show_error("");
    let result = load(src).await;
    let mut k = ctl.borrow_mut();
    k.loading = false;
    match result {
        Ok(d) if k.data_wanted != wanted => {
            // Another dataset was chosen while this one loaded: it stays in use.
            set_text("note", &format!("{} finished loading after another dataset was chosen: it is not used", d.description));
            if d.description.starts_with("sample") {
                k.sample = Some(Rc::new(d));
            }
        }
        Ok(d) => {
            set_text("data-status", &d.description);
            draw::progress(
                &canvas("data-progress"),
                &draw::ProgressView { fraction: 1.0, label: format!("loaded: {} training and {} test images", d.train.len(), d.test.len()) },
                "#8ab4f8",
            );
            let d = Rc::new(d);
            if d.description.starts_with("sample") {
                k.sample = Some(d.clone());
            }
            k.new_data = Some((d, origin));
        }
        Err(e) => {
            data_progress("failed", 0, Some(1));
            show_error(&format!("{e} (the dataset in use and the training so far are unchanged)"));
            k.load_failed = true;
        }
    }
    drop(k);
    wake(ctl);
}

async fn load(src: Source) -> Result<Cifar, String> {
    match src {
        Source::Sample => {
            let mut files = BTreeMap::new();
            for name in ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt"] {
                data_progress(&format!("downloading the sample ({name})"), 0, None);
                files.insert(name.to_string(), io::fetch_bytes(&format!("{SAMPLE_DIR}/{name}")).await?);
            }
            data::assemble(&files, "sample").map_err(|e| e.to_string())
        }
        Source::Full => {
            let mut u = Unpacker::new(FULL_URL);
            io::fetch_stream(FULL_URL, |b, got, total| {
                data_progress("downloading and decompressing CIFAR-10", got, total);
                u.feed(b).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("{e}: put the official cifar-10-binary.tar.gz there (see the README), or drop it on the page"))?;
            data_progress("reading the batch files", 1, Some(1));
            io::sleep_ms(0).await;
            u.finish().map_err(|e| e.to_string())
        }
        Source::File(f) => {
            let name = f.name();
            // refused by its size before a byte is read (the unpacker holds the same bound)
            if f.size() > data::MAX_ARCHIVE_BYTES as f64 {
                return Err(format!("{name}: {} bytes, more than the {} of CIFAR-10's archive: not the CIFAR-10 archive", f.size(), data::MAX_ARCHIVE_BYTES));
            }
            let mut u = Unpacker::new(&name);
            io::read_file(&f, |b, got, size| {
                data_progress(&format!("decompressing {name}"), got, Some(size));
                u.feed(b).map_err(|e| e.to_string())
            })
            .await?;
            io::sleep_ms(0).await;
            u.finish().map_err(|e| e.to_string())
        }
    }
}

/// The training loop's own state: only the runner task touches it.
struct Runner {
    ctl: Shared,
    metrics: Element,
    gpu: Option<Gpu>,
    data: Option<Rc<Cifar>>,
    /// The running session, if any; its hyperparameters are `run_hyper`.
    session: Option<Session>,
    run_hyper: Hyper,
    /// An engine from a reset session, kept so a new run reuses the data already on the GPU.
    spare: Option<Engine>,
    /// The last good point of the run: a lost device or a divergence continues from here.
    resume: Option<Checkpoint>,
    /// The one before it: a divergence right after `resume` was taken continues from this one
    /// (`Checkpoint::before_divergence`).
    resume_before: Option<Checkpoint>,
    curves: Curves,
    last_eval: Option<EvalResult>,
    grid: Vec<u32>,
    probs: Option<Vec<[f32; CLASSES]>>,
    chunk_steps: usize,
    state: &'static str,
    last_refresh: Instant,
    /// The weights a new run starts from instead of the seed's (an uploaded model).
    start_params: Option<Vec<f32>>,
    /// The test record followed through the network (a clicked grid image).
    picked: Option<u32>,
    /// Wall time spent on the views (filters, feature maps) and on training chunks, to report
    /// what the views cost.
    view_ms: f64,
    busy_ms: f64,
    /// Wall time spent saving the run in the browser (serialising and IndexedDB).
    save_ms: f64,
    /// The browser's storage (None where it is unavailable: runs are then not kept).
    db: Option<web_sys::IdbDatabase>,
    /// The run being trained, as it is saved: its id and when it started.
    run_id: Option<String>,
    run_started_ms: f64,
    /// The step of the last save of this run, and when it was.
    saved_step: Option<u64>,
    /// Which runs another tab of this page trains and saves (this tab then saves them no more).
    claims: Option<store::Claims>,
    last_save: Instant,
    /// Summaries of the saved runs, newest first, and those overlaid on the loss chart.
    runs: Vec<SavedRun>,
    /// The rows "Your runs" shows: (run id, is the current run), in order.
    runs_shown: Vec<(String, bool)>,
    /// A saved run to continue once its dataset is loaded.
    pending_resume: Option<SavedRun>,
    /// (dataset, limit) of the data in use.
    data_key: Option<(DatasetChoice, Option<usize>)>,
}

/// A run is saved this often while it trains (and whenever it pauses or ends).
const AUTOSAVE_MS: f64 = 3000.0;
/// Colours of the overlaid past runs' loss curves.
/// (The first is a darker grey than the axes' #9aa0a6, so a past run is not taken for a frame.)
const OVERLAY_COLOURS: [&str; 4] = ["#80868b", "#a142f4", "#12b5cb", "#e52592"];

impl Runner {
    fn new(ctl: Shared) -> Runner {
        Runner {
            ctl,
            metrics: el("metrics"),
            gpu: None,
            data: None,
            session: None,
            run_hyper: Hyper::default(),
            spare: None,
            resume: None,
            resume_before: None,
            curves: Curves::default(),
            last_eval: None,
            grid: Vec::new(),
            probs: None,
            chunk_steps: 4,
            state: "idle",
            last_refresh: Instant::now(),
            start_params: None,
            picked: None,
            view_ms: 0.0,
            busy_ms: 0.0,
            save_ms: 0.0,
            db: None,
            run_id: None,
            run_started_ms: 0.0,
            saved_step: None,
            claims: store::Claims::new(),
            last_save: Instant::now(),
            runs: Vec::new(),
            runs_shown: Vec::new(),
            pending_resume: None,
            data_key: None,
        }
    }

    async fn run(mut self, settings: Settings) {
        self.find_gpu(settings.engine).await;
        self.open_store().await;
        load_data(&self.ctl, Source::Sample).await;
        match settings.dataset {
            DatasetChoice::Full => load_data(&self.ctl, Source::Full).await,
            DatasetChoice::File => set_text("note", "data=file names an archive dropped on the page: drop one here (the sample is loaded meanwhile)"),
            DatasetChoice::Sample => {}
        }
        if settings.autostart {
            self.ctl.borrow_mut().want = Want::Train;
        }
        loop {
            self.apply_control().await;
            let want = self.ctl.borrow().want;
            if want == Want::Train && self.data.is_some() && !self.ctl.borrow().loading {
                if let Err(e) = self.train_chunk().await {
                    self.fail(e).await;
                }
                io::yield_now().await;
            } else {
                self.state = match (want, self.state) {
                    (_, "error") => "error",
                    (Want::Pause, _) if self.session.is_some() => "paused",
                    (_, "done") => "done",
                    _ => "idle",
                };
                if let Err(e) = self.save_if_behind().await {
                    self.fail(e).await;
                }
                self.show_metrics();
                wait(&self.ctl).await;
            }
        }
    }

    /// WebGPU when the browser has it and the link did not ask for the CPU.
    async fn find_gpu(&mut self, choice: EngineChoice) {
        let m = &self.metrics;
        if choice != EngineChoice::Cpu {
            match Gpu::new().await {
                // Emulated WebGPU (SwiftShader on a machine without a GPU) runs our kernels,
                // shaped for real GPUs, tens of times slower than the CPU engine does in wasm
                // (BENCHMARKS.md): Auto picks the faster one and says so; engine=gpu in the link
                // insists on WebGPU.
                Ok(g) if g.software && choice == EngineChoice::Auto => {
                    set_text(
                        "adapter",
                        &format!(
                            "CPU engine (wasm): this browser's WebGPU is a software renderer ({}), far slower here; add engine=gpu to the link to train through it anyway",
                            g.adapter
                        ),
                    );
                }
                Ok(g) => {
                    set_text("adapter", &format!("WebGPU: {}", g.adapter));
                    set_attr(m, "data-engine", "gpu");
                    set_attr(m, "data-adapter", &g.adapter);
                    self.gpu = Some(g);
                    return;
                }
                Err(e) => {
                    let why = if web_sys::window().map(|w| js_sys::Reflect::has(&w.navigator(), &"gpu".into()).unwrap_or(false)).unwrap_or(false) {
                        format!("WebGPU is there but gave no usable GPU ({e})")
                    } else {
                        "this browser has no WebGPU".to_string()
                    };
                    set_text("adapter", &format!("{why}: training on the CPU engine (compiled to wasm, one thread)"));
                }
            }
        } else {
            set_text("adapter", "CPU engine (asked for in the link): the reference engine compiled to wasm, one thread");
        }
        set_attr(m, "data-engine", "cpu");
        set_attr(m, "data-adapter", "cpu");
    }

    /// Apply what the handlers changed since the last chunk.
    async fn apply_control(&mut self) {
        let (reset, new_data, hyper_changed, evaluate, settings, load_failed, want) = {
            let mut k = self.ctl.borrow_mut();
            (
                std::mem::take(&mut k.reset),
                k.new_data.take(),
                std::mem::take(&mut k.hyper_changed),
                std::mem::take(&mut k.evaluate),
                k.settings.clone(),
                std::mem::take(&mut k.load_failed),
                k.want,
            )
        };
        let (pick, upload, download, resume_run, overlay_changed, delete_run) = {
            let mut k = self.ctl.borrow_mut();
            (k.pick.take(), k.upload.take(), std::mem::take(&mut k.download), k.resume_run.take(), std::mem::take(&mut k.overlay_changed), k.delete_run.take())
        };
        if load_failed {
            self.state = "error";
        } else if want == Want::Train && self.state == "error" {
            // Start after an error: the visitor has read it, training goes on.
            show_error("");
            self.state = "idle";
        }
        if let Some((d, origin)) = new_data {
            // The run so far is saved with the dataset it trained on, then left.
            self.end_run().await;
            // The settings, the select and the link name the data in use, whatever the select
            // showed while it loaded (runs are recorded with it).
            {
                let mut k = self.ctl.borrow_mut();
                k.settings.dataset = origin;
                set_attr(&el("share"), "href", &k.settings.to_query());
            }
            if origin != DatasetChoice::File {
                set_control("dataset", origin.name());
            }
            let mut d = (*d).clone();
            if let Some(n) = settings.limit {
                d.train.truncate(n);
                d.description += &format!(" (training on the first {} images: limit={n} in the link)", d.train.len());
                set_text("data-status", &d.description);
            }
            let d = Rc::new(d);
            self.data_key = Some((origin, settings.limit));
            self.ctl.borrow_mut().views.data = Some(d.clone());
            self.data = Some(d);
            self.spare = None; // its GPU buffers hold the old dataset
            self.picked = None;
            self.clear_run();
            if self.state == "done" {
                self.state = "idle";
            }
        }
        if reset {
            self.end_run().await;
            show_error("");
            self.state = "idle";
        }
        if hyper_changed {
            let h = &settings.hyper;
            self.run_hyper.lr = h.lr;
            self.run_hyper.momentum = h.momentum;
            self.run_hyper.weight_decay = h.weight_decay;
            self.run_hyper.epochs = h.epochs;
            if let Some(s) = &mut self.session {
                s.set_hyper(h.lr, h.momentum, h.weight_decay);
                // Fewer epochs than the one running ends the run with it.
                s.hyper.epochs = h.epochs.max(s.epoch());
                self.run_hyper.epochs = s.hyper.epochs;
            }
        }
        if let Some((arch, params, name)) = upload {
            if self.data.is_some() {
                self.end_run().await;
                self.start_params = Some(params);
                {
                    // The run continues the uploaded network.
                    let mut k = self.ctl.borrow_mut();
                    k.settings.hyper.net = arch;
                    show_settings(&k.settings);
                }
                self.state = "idle";
                set_text("model-status", &format!("{name} loaded ({} network): press Start to continue training from it, or try your own images", arch.name()));
                if let Err(e) = self.evaluate_now().await {
                    self.fail(e).await;
                }
            }
        }
        if evaluate && self.data.is_some() {
            if let Err(e) = self.evaluate_now().await {
                self.fail(e).await;
            }
        }
        if let Some(r) = pick {
            self.picked = Some(r);
            if let Err(e) = self.inspect_now().await {
                self.fail(e).await;
            }
        }
        if download {
            if let Err(e) = self.download_now().await {
                self.fail(e).await;
            }
        }
        if let Some(id) = resume_run {
            self.load_saved(&id).await;
        }
        if load_failed && self.pending_resume.take().is_some() {
            set_text("note", "the saved run was not resumed: its dataset did not load");
        }
        let ready = self.pending_resume.as_ref().map(|r| {
            let (s, _) = Settings::from_query(&r.query);
            self.data_key == Some((s.dataset, s.limit)) && !self.ctl.borrow().loading
        });
        if ready == Some(true) {
            self.resume_saved().await;
        }
        if overlay_changed {
            self.draw_curves();
        }
        if let Some(id) = delete_run {
            if let Some(db) = &self.db {
                match store::delete(db, &id).await {
                    Ok(()) => {
                        self.runs.retain(|r| r.id != id);
                        self.ctl.borrow_mut().overlays.retain(|i| *i != id);
                        if self.run_id.as_deref() == Some(id.as_str()) {
                            // Deleted while it trains: it is no longer kept.
                            self.run_id = None;
                        }
                        self.render_runs();
                        self.draw_curves();
                    }
                    Err(e) => show_error(&format!("deleting run {id} failed: {e}")),
                }
            }
        }
    }

    /// Open the browser's storage and list the saved runs; offer to resume the newest
    /// unfinished one.
    async fn open_store(&mut self) {
        let db = match store::open().await {
            Ok(db) => db,
            Err(e) => {
                set_text("runs-status", &format!("{e}: runs are not kept in this browser"));
                return;
            }
        };
        match store::all(&db, store::RUNS).await {
            Ok(list) => {
                let mut bad = Vec::new();
                for (id, bytes) in list {
                    match SavedRun::from_bytes(&bytes, &id) {
                        Ok(r) => self.runs.push(r),
                        Err(e) => bad.push(e),
                    }
                }
                if !bad.is_empty() {
                    set_text("runs-status", &format!("{} saved run(s) could not be read and are not listed: {}", bad.len(), bad.join("; ")));
                }
            }
            Err(e) => set_text("runs-status", &format!("reading the saved runs failed: {e}")),
        }
        self.runs.sort_by(|a, b| b.saved_ms.total_cmp(&a.saved_ms));
        self.db = Some(db);
        self.render_runs();
        if let Some(r) = self.runs.iter().find(|r| !r.done) {
            set_text(
                "resume-text",
                &format!("Your run from {} ({}) stopped at epoch {}/{}, step {}.", local_time(r.started_ms), r.label(), r.at.0.min(r.epochs), r.epochs, r.at.2),
            );
            set_attr(&el("resume-last"), "data-run", &r.id);
            let _ = el("resume-offer").remove_attribute("hidden");
        }
    }

    /// The run list, from the summaries in memory.
    fn render_runs(&mut self) {
        let overlays = self.ctl.borrow().overlays.clone();
        let body = el("runs-body");
        let current = |r: &SavedRun| self.run_id.as_deref() == Some(r.id.as_str());
        // The text cells of a row: started, settings, where it got to, test accuracy.
        let cells = |r: &SavedRun| {
            let acc = r.curves.test_accuracy.last().map(|p| format!("{:.1} %", p.1 * 100.0)).unwrap_or_else(|| "-".into());
            let at = if r.done { format!("done: {} epochs, step {}", r.epochs, r.at.2) } else { format!("epoch {}/{}, step {}", r.at.0.min(r.epochs), r.epochs, r.at.2) };
            [local_time(r.started_ms), r.label(), at, acc]
        };
        const CELLS: [&str; 4] = ["started", "settings", "where", "accuracy"];
        let shape: Vec<(String, bool)> = self.runs.iter().map(|r| (r.id.clone(), current(r))).collect();
        if !shape.is_empty() && shape == self.runs_shown {
            // The same rows with the same buttons: only their text changes (each save moves the
            // current run on). Rebuilding them would swap the buttons under a visitor's pointer
            // every few seconds, and a click pressed on the old button is lost.
            for r in &self.runs {
                let row = format!("#runs-body tr[data-run=\"{}\"]", r.id);
                for (class, text) in CELLS.iter().zip(cells(r)) {
                    if let Ok(Some(td)) = body.query_selector(&format!("{row} td.{class}")) {
                        if td.text_content().as_deref() != Some(text.as_str()) {
                            td.set_text_content(Some(&text));
                        }
                    }
                }
                if let Ok(Some(b)) = body.query_selector(&format!("{row} input[data-action=\"overlay\"]")) {
                    if let Some(b) = b.dyn_ref::<HtmlInputElement>() {
                        b.set_checked(overlays.contains(&r.id));
                    }
                }
            }
        } else {
            let mut html = String::new();
            for r in &self.runs {
                let id = escape(&r.id);
                let tds: String = CELLS.iter().zip(cells(r)).map(|(class, text)| format!("<td class=\"{class}\">{}</td>", escape(&text))).collect();
                html += &format!(
                    "<tr data-run=\"{id}\"{}><td><input type=\"checkbox\" data-action=\"overlay\" data-run=\"{id}\"{}></td>{tds}<td>{}<button data-action=\"delete\" data-run=\"{id}\">Delete</button></td></tr>",
                    if current(r) { " class=\"current\"" } else { "" },
                    if overlays.contains(&r.id) { " checked" } else { "" },
                    if current(r) { String::new() } else { format!("<button data-action=\"resume\" data-run=\"{id}\">Resume</button> ") },
                );
            }
            if self.runs.is_empty() {
                html = "<tr><td colspan=\"6\">no runs yet: press Start</td></tr>".into();
            }
            body.set_inner_html(&html);
            self.runs_shown = shape;
        }
        set_attr(&el("runs-status"), "data-count", &self.runs.len().to_string());
    }

    /// Save the run if it has trained since its last save (it paused, ended or failed).
    async fn save_if_behind(&mut self) -> Result<(), TrainError> {
        let behind = match (&self.session, &self.run_id) {
            (Some(s), Some(_)) => self.saved_step != Some(s.global_step()),
            _ => false,
        };
        if behind {
            let ck = self.session.as_mut().expect("checked").checkpoint().await?;
            self.save(&ck).await;
        }
        Ok(())
    }

    /// Keep the run in the browser: summary and whole state in one transaction. A failure
    /// (storage full, private window) is reported; training goes on.
    async fn save(&mut self, ck: &Checkpoint) {
        let (Some(db), Some(id), Some(s), Some(d)) = (&self.db, self.run_id.clone(), &self.session, &self.data) else { return };
        if self.claims.as_ref().is_some_and(|c| c.elsewhere(&id)) {
            set_text("runs-status", &format!("{id} is being trained and saved in another tab of this page: this tab no longer saves it (its training here goes on, unsaved)"));
            return;
        }
        // Never save what a resume would refuse (weights gone non-finite right after a diverging
        // update, before the divergence is read back): the last good save stays.
        if let Err(why) = ck.check(s.engine.arch(), s.engine.batch(), s.engine.train_len()) {
            set_text("runs-status", &format!("not saved at step {}: {why} (the save before it is kept)", ck.global_step));
            return;
        }
        let mut settings = self.ctl.borrow().settings.clone();
        settings.hyper = self.run_hyper.clone();
        settings.hyper.epochs = s.hyper.epochs;
        if let Some((dataset, limit)) = self.data_key {
            (settings.dataset, settings.limit) = (dataset, limit);
        }
        settings.autostart = false;
        let run = SavedRun {
            id,
            query: settings.to_query(),
            dataset: d.description.clone(),
            started_ms: self.run_started_ms,
            saved_ms: js_sys::Date::now(),
            epochs: s.hyper.epochs,
            curves: self.curves.clone(),
            checkpoint: Some(ck.clone()),
            at: (ck.epoch, ck.epoch_step, ck.global_step),
            done: s.done(),
        };
        self.last_save = Instant::now();
        let put = store::put(db, &run.id, &run.to_bytes(false), &run.to_bytes(true)).await;
        self.save_ms += self.last_save.elapsed().as_secs_f64() * 1e3;
        set_attr(&el("runs-status"), "data-save-ms", &format!("{:.1}", self.save_ms));
        set_attr(&el("runs-status"), "data-save-share", &format!("{:.4}", self.save_ms / self.busy_ms.max(1.0)));
        match put {
            Ok(()) => {
                self.saved_step = Some(ck.global_step);
                let st = el("runs-status");
                set_attr(&st, "data-run", &run.id);
                set_attr(&st, "data-saved-step", &ck.global_step.to_string());
                st.set_text_content(Some(&format!("saved in this browser at step {} ({})", ck.global_step, local_time(run.saved_ms))));
                let summary = SavedRun { checkpoint: None, ..run };
                self.runs.retain(|r| r.id != summary.id);
                self.runs.insert(0, summary);
                self.render_runs();
            }
            Err(e) => set_text("runs-status", &format!("{e}: this run is not kept (training goes on)")),
        }
    }

    /// Read a saved run and switch the page to its settings and dataset; it resumes once that
    /// dataset is loaded (at once when it already is).
    async fn load_saved(&mut self, id: &str) {
        let Some(db) = &self.db else { return };
        let run = match store::get(db, store::STATES, id).await {
            Ok(Some(b)) => SavedRun::from_bytes(&b, id),
            Ok(None) => Err(format!("run {id} is no longer saved in this browser")),
            Err(e) => Err(format!("reading run {id} failed: {e}")),
        };
        let run = match run {
            Ok(r) if r.checkpoint.is_some() => r,
            Ok(_) => return show_error(&format!("run {id}: its training state is missing")),
            Err(e) => return show_error(&e),
        };
        let (settings, _) = Settings::from_query(&run.query);
        {
            let mut k = self.ctl.borrow_mut();
            let engine = k.settings.engine;
            k.settings = Settings { engine, ..settings.clone() };
            show_settings(&k.settings);
        }
        let _ = el("resume-offer").set_attribute("hidden", "");
        if settings.dataset == DatasetChoice::File && self.data_key != Some((settings.dataset, settings.limit)) {
            // A dropped archive cannot be fetched: the visitor drops it again, and the run
            // resumes once it is loaded (if its images are the run's).
            show_error(&format!("run {id} trained on an archive dropped on the page ({}): drop that file here to resume it", run.dataset));
        } else if self.data_key != Some((settings.dataset, settings.limit)) {
            set_text("note", "loading the saved run's dataset");
            set_control("dataset", if settings.dataset == DatasetChoice::Full { "full" } else { "sample" });
            choose_dataset(&self.ctl, settings.dataset == DatasetChoice::Full);
        }
        self.pending_resume = Some(run);
    }

    /// Continue the pending saved run from where it was saved: weights, momentum, epoch and
    /// step, order and shuffle stream, curves. It waits paused for Resume.
    async fn resume_saved(&mut self) {
        let Some(run) = self.pending_resume.take() else { return };
        let Some(ck) = run.checkpoint.clone() else { return };
        let Some(d) = self.data.clone() else { return };
        if ck.order.len() != d.train.len() {
            show_error(&format!("run {}: it trained on {} images, the dataset loaded has {}: load the one it used ({})", run.id, ck.order.len(), d.train.len(), run.dataset));
            return;
        }
        self.end_run().await;
        let (settings, _) = Settings::from_query(&run.query);
        self.run_hyper = Hyper { epochs: run.epochs, ..settings.hyper };
        self.resume = Some(ck);
        self.resume_before = None;
        self.curves = run.curves.clone();
        self.run_id = Some(run.id.clone());
        self.run_started_ms = run.started_ms;
        self.saved_step = Some(run.at.2);
        if let Err(e) = self.session().await {
            return self.fail(e).await;
        }
        self.state = "paused";
        self.ctl.borrow_mut().want = Want::Pause;
        set_text("note", &format!("resumed {} at epoch {}, step {}: press Resume to go on", run.label(), run.at.0.min(run.epochs), run.at.2));
        self.render_runs();
        if let Err(e) = self.refresh_grid().await {
            return self.fail(e).await;
        }
        self.draw_all();
        self.show_metrics();
    }

    /// Follow the picked test record through the network: every activation read from the
    /// engine (the GPU engine's own buffers), drawn; #inspect carries the probabilities.
    async fn inspect_now(&mut self) -> Result<(), TrainError> {
        let (Some(r), Some(d)) = (self.picked, self.data.clone()) else { return Ok(()) };
        let r = r as usize;
        if r >= d.test.len() {
            return Ok(());
        }
        let t = Instant::now();
        let record = &d.test.images[r * IMG_LEN..(r + 1) * IMG_LEN];
        let (inside, step, source) = match &mut self.session {
            Some(s) => (s.settle().await.engine.inspect(r).await?, s.global_step(), if s.engine.is_gpu() { "read from the GPU's buffers" } else { "CPU engine" }),
            None => {
                let (arch, params, step) = view_params(&self.ctl.borrow());
                (cpu::inspect(arch, &params, record), step, "untrained")
            }
        };
        let truth = &d.classes[d.test.labels[r] as usize];
        let p = inside.probabilities();
        let arch = self.session.as_ref().map(|s| s.engine.arch()).unwrap_or_else(|| view_params(&self.ctl.borrow()).0);
        draw::features(&canvas("features"), arch, record, &inside, &d.classes, &format!("Test image {r} (a {truth}) through the network at step {step} ({source})"));
        let e = el("inspect");
        set_attr(&e, "data-record", &r.to_string());
        set_attr(&e, "data-step", &step.to_string());
        set_attr(&e, "data-probs", &p.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(","));
        e.set_text_content(Some(&format!("test image {r}, a {truth}: {}", views::top_lines(&p, &d.classes, 3).join(", "))));
        self.view_ms += t.elapsed().as_secs_f64() * 1e3;
        Ok(())
    }

    /// Redraw the filters from the latest weights (timed with the views).
    fn draw_filters(&mut self) {
        let t = Instant::now();
        let (arch, params, step) = view_params(&self.ctl.borrow());
        let what = if self.ctl.borrow().views.params.is_some() { format!("weights of step {step}") } else { "the initial weights (the run has not started)".to_string() };
        draw::filters(&canvas("filters"), arch, &params, &what);
        self.view_ms += t.elapsed().as_secs_f64() * 1e3;
        let e = el("inspect");
        set_attr(&e, "data-view-ms", &format!("{:.1}", self.view_ms));
        set_attr(&e, "data-view-share", &format!("{:.4}", self.view_ms / self.busy_ms.max(1.0)));
    }

    /// Offer the current weights as a .safetensors download (PyTorch's state_dict names).
    async fn download_now(&mut self) -> Result<(), TrainError> {
        let (arch, params, step) = match &self.session {
            Some(s) => (s.engine.arch(), s.engine.read_params().await?, s.global_step()),
            None => {
                let (arch, params, _) = view_params(&self.ctl.borrow());
                (arch, self.start_params.clone().unwrap_or_else(|| params.to_vec()), 0)
            }
        };
        let bytes = checkpoint::to_safetensors(&params, &Layout::new(arch));
        let name = format!("tabcnn-{}-step{step}.safetensors", arch.name());
        match io::download(&bytes, &name, "application/octet-stream") {
            Ok(()) => set_text(
                "model-status",
                &format!("{name} ({} bytes): the weights of step {step}, with PyTorch's state_dict names; it loads into the tutorial's Net with load_state_dict(safetensors.torch.load_file(path))", bytes.len()),
            ),
            Err(e) => show_error(&format!("the download failed: {e}")),
        }
        Ok(())
    }

    /// Leave the current run for another: it is saved where it got to first (kept in the
    /// run list), then forgotten.
    async fn end_run(&mut self) {
        if let Err(e) = self.save_if_behind().await {
            set_text("runs-status", &format!("the last steps of the run were not saved: {e}"));
        }
        self.clear_run();
    }

    /// Forget the run (its engine is kept as a spare).
    fn clear_run(&mut self) {
        if let Some(s) = self.session.take() {
            self.spare = Some(s.engine);
        }
        self.resume = None;
        self.resume_before = None;
        self.start_params = None;
        self.run_id = None;
        self.saved_step = None;
        self.curves = Curves::default();
        self.last_eval = None;
        self.probs = None;
        set_text("note", "");
        if let Some(d) = &self.data {
            self.grid = grid_records(&d.test, GRID_PER_CLASS);
        }
        {
            let mut k = self.ctl.borrow_mut();
            k.views.grid = self.grid.clone();
            k.views.eval = None;
            k.views.params = None;
            k.views.cell = None;
        }
        draw::context(&canvas("cell-images"));
        for a in ["data-true", "data-pred", "data-count", "data-records", "data-shown-preds"] {
            set_attr(&el("cell"), a, "");
        }
        self.draw_filters();
        self.draw_all();
    }

    /// The session to train, made on first use: a new run, or the resume point after an error.
    async fn session(&mut self) -> Result<&mut Session, TrainError> {
        if self.session.is_none() {
            let data = self.data.clone().expect("a dataset");
            let resume = self.resume.clone();
            if resume.is_none() {
                self.run_hyper = self.ctl.borrow().settings.hyper.clone();
                // A new run: it is saved under a new id.
                self.run_started_ms = js_sys::Date::now();
                self.run_id = Some(format!("run-{}", self.run_started_ms as u64));
                self.saved_step = None;
            }
            let hyper = self.run_hyper.clone();
            if hyper.batch > data.train.len() {
                return Err(TrainError::Engine(EngineError::settings(format!("batch {} is larger than the {} training images", hyper.batch, data.train.len()))));
            }
            let params = self.start_params.clone().unwrap_or_else(|| init_params(&Layout::new(hyper.net), hyper.seed));
            let engine = match (self.spare.take(), &self.gpu) {
                (Some(mut e), _) if e.is_gpu() == self.gpu.is_some() && e.arch() == hyper.net => {
                    e.set_batch(hyper.batch).await?;
                    e.write_state(&params, &vec![0.0; params.len()])?;
                    e.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
                    e
                }
                (_, Some(g)) => {
                    set_attr(&self.metrics, "data-state", "loading");
                    set_text("note", "uploading the dataset to the GPU");
                    Engine::Gpu(GpuEngine::new(g, &params, hyper.batch, &hyper, &data.train, &data.test).await?)
                }
                (_, None) => {
                    cpu::check_memory(hyper.net, hyper.batch)?;
                    Engine::Cpu(CpuTrainer::new(params, &hyper, &data.train, &data.test))
                }
            };
            set_text("note", "");
            self.chunk_steps = if engine.is_gpu() { 8 } else { 1 };
            let mut session = match resume {
                Some(ck) => Session::resume(engine, &hyper, ck)?,
                None => Session::new(engine, &hyper),
            };
            // The GPU trains the next chunk while this thread reads, draws and encodes.
            session.set_overlap(true);
            self.session = Some(session);
            if let (Some(c), Some(id)) = (&self.claims, &self.run_id) {
                c.claim(id);
            }
            show_error("");
        }
        Ok(self.session.as_mut().expect("made above"))
    }

    async fn train_chunk(&mut self) -> Result<(), TrainError> {
        let steps = self.chunk_steps;
        self.session().await?;
        let s = self.session.as_mut().expect("made above");
        if s.done() {
            self.state = "done";
            self.ctl.borrow_mut().want = Want::Idle;
            return Ok(());
        }
        let quarter_before = (s.epochs_done() * EVALS_PER_EPOCH as f64 + 1e-9).floor();
        let busy = Instant::now();
        let t = Instant::now();
        let c = s.run_chunk(steps).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let gpu = s.engine.is_gpu();
        let x = s.epochs_done();
        let quarter_after = (x * EVALS_PER_EPOCH as f64 + 1e-9).floor();
        self.state = "training";
        // Aim each chunk at the target wall time (a 2x step at most either way).
        let target = if gpu { GPU_CHUNK_MS } else { CPU_CHUNK_MS };
        self.chunk_steps = ((steps as f64 * (target / ms.max(1.0)).clamp(0.5, 2.0)) as usize).clamp(1, 4096);
        self.curves.loss.push((x, c.progress.loss as f64));
        self.curves.train_accuracy.push((x, c.progress.train_accuracy));
        let refresh = self.last_refresh.elapsed().as_secs_f64() * 1e3 > REFRESH_MS;
        if quarter_after > quarter_before || c.epoch_end {
            self.evaluate_now().await?;
        } else if refresh {
            self.refresh_grid().await?;
        }
        if c.done {
            self.state = "done";
            self.ctl.borrow_mut().want = Want::Idle;
        }
        self.busy_ms += busy.elapsed().as_secs_f64() * 1e3;
        self.show_metrics();
        self.draw_curves();
        Ok(())
    }

    /// Save the resume point and predict the grid's images with the current weights.
    async fn refresh_grid(&mut self) -> Result<(), TrainError> {
        self.last_refresh = Instant::now();
        let Some(s) = &mut self.session else { return Ok(()) };
        let ck = s.checkpoint().await?;
        let data = self.data.clone().expect("a dataset");
        let arch = s.engine.arch();
        let cpu = CpuEngine::new(arch, ck.params.clone(), 1);
        self.probs = Some(cpu.probabilities(&data.test.images, &self.grid));
        self.ctl.borrow_mut().views.params = Some((arch, Rc::new(ck.params.clone()), ck.global_step));
        if self.last_save.elapsed().as_secs_f64() * 1e3 >= AUTOSAVE_MS && self.saved_step != Some(ck.global_step) {
            self.save(&ck).await;
        }
        self.resume_before = self.resume.replace(ck);
        self.draw_grid();
        self.draw_filters();
        self.inspect_now().await?;
        Ok(())
    }

    /// The whole test set on the engine: a point of the test curve, the per-class bars.
    async fn evaluate_now(&mut self) -> Result<(), TrainError> {
        self.session().await?;
        let s = self.session.as_mut().expect("made above");
        // The evaluation is of the weights at the position it is drawn at.
        s.settle().await;
        let prev = self.state;
        set_attr(&self.metrics, "data-state", "training");
        set_text("note", &format!("evaluating on the {} test images", self.data.as_ref().map(|d| d.test.len()).unwrap_or(0)));
        let r = s.engine.evaluate().await?;
        set_text("note", "");
        self.state = prev;
        self.curves.test_accuracy.push((s.epochs_done(), r.accuracy()));
        self.ctl.borrow_mut().views.eval = Some(Rc::new(r.clone()));
        self.last_eval = Some(r);
        self.refresh_grid().await?;
        if self.ctl.borrow().views.cell.is_some() {
            show_cell(&self.ctl);
        }
        self.draw_all();
        self.show_metrics();
        Ok(())
    }

    /// An error during training: say what happened and keep the last good point to continue.
    async fn fail(&mut self, e: TrainError) {
        if let TrainError::Diverged { step, .. } = e {
            // A point taken after the update that blew up holds its weights: use the one before.
            if self.resume.as_ref().is_some_and(|c| !c.before_divergence(step)) {
                self.resume = self.resume_before.take();
            }
        }
        let at = self.resume.as_ref().map(|c| format!("step {}", c.global_step)).unwrap_or_else(|| "the start".into());
        let msg = match &e {
            TrainError::Diverged { .. } => format!("{e}. The weights from {at} are kept: lower the learning rate and press Start to continue from there, or Reset."),
            TrainError::Engine(m) if m.ends_the_device() && self.gpu.is_some() && self.session.as_ref().map(|s| s.engine.is_gpu()).unwrap_or(true) => {
                // The device is gone or broken: continue on the CPU engine from the last good
                // point. (Bad settings and limits keep the GPU: they are the user's to change.)
                self.gpu = None;
                self.spare = None;
                set_attr(&self.metrics, "data-engine", "cpu");
                set_text("adapter", "the GPU failed: training continues on the CPU engine (wasm, one thread)");
                format!("{}. The weights from {at} are kept: press Start to continue from there on the CPU engine.", m.message.trim_end_matches('.'))
            }
            TrainError::Engine(m) => m.message.clone(),
        };
        self.session = None;
        self.state = "error";
        self.ctl.borrow_mut().want = Want::Idle;
        show_error(&msg);
        self.show_metrics();
    }

    fn show_metrics(&self) {
        let m = &self.metrics;
        let loading = self.ctl.borrow().loading;
        set_attr(m, "data-state", if loading { "loading" } else { self.state });
        // Without a session (after a divergence or a lost device) the run is where its kept
        // point is: Start continues from there.
        let kept = self.resume.as_ref().filter(|_| self.session.is_none());
        let (epoch, epoch_step, step, ips) = match (&self.session, kept) {
            (Some(s), _) => (s.epoch().min(s.hyper.epochs), s.epoch_step(), s.global_step(), s.images_per_second()),
            (None, Some(ck)) => (ck.epoch, ck.epoch_step, ck.global_step, ck.images as f64 / ck.seconds.max(1e-9)),
            (None, None) => (0, 0, 0, 0.0),
        };
        set_attr(m, "data-epoch", &epoch.to_string());
        set_attr(m, "data-epoch-step", &epoch_step.to_string());
        set_attr(m, "data-step", &step.to_string());
        set_attr(m, "data-images-per-second", &format!("{ips:.1}"));
        let last = |v: &Vec<(f64, f64)>, digits: usize| v.last().map(|p| format!("{:.*}", digits, p.1)).unwrap_or_default();
        set_attr(m, "data-loss", &last(&self.curves.loss, 4));
        set_attr(m, "data-train-accuracy", &last(&self.curves.train_accuracy, 4));
        set_attr(m, "data-test-accuracy", &last(&self.curves.test_accuracy, 4));
        let pct = |v: &Vec<(f64, f64)>| v.last().map(|p| format!("{:.1} %", p.1 * 100.0)).unwrap_or("-".into());
        m.set_text_content(Some(&format!(
            "{} · step {} · loss {} · train accuracy {} · test accuracy {} · {:.0} images/s",
            if loading { "loading" } else { self.state },
            step,
            self.curves.loss.last().map(|p| format!("{:.3}", p.1)).unwrap_or("-".into()),
            pct(&self.curves.train_accuracy),
            pct(&self.curves.test_accuracy),
            ips
        )));
        let pause = el("pause");
        pause.set_text_content(Some(if self.state == "paused" { "Resume" } else { "Pause" }));
        let progress = match &self.session {
            Some(s) => {
                let total = (s.hyper.epochs * s.steps_per_epoch()).max(1) as f64;
                let done = s.epochs_done() * s.steps_per_epoch() as f64;
                draw::ProgressView {
                    fraction: done / total,
                    label: draw::progress_label(s.epoch(), s.hyper.epochs, s.epoch_step(), s.steps_per_epoch(), ips, s.seconds_left(), self.state),
                }
            }
            None => match kept {
                Some(ck) => {
                    // The run's epochs as Session::resume will see them (a lowered count ends
                    // the run with the kept epoch).
                    let epochs = self.run_hyper.epochs.max(ck.epoch);
                    let per_epoch = (ck.order.len() / self.run_hyper.batch.max(1)).max(1);
                    let done = ck.epoch.saturating_sub(1) * per_epoch + ck.epoch_step;
                    draw::ProgressView {
                        fraction: done as f64 / (epochs * per_epoch) as f64,
                        label: format!("{} · kept: epoch {}/{epochs} · step {}/{per_epoch} · press Start to continue from there", self.state, ck.epoch, ck.epoch_step),
                    }
                }
                None => draw::ProgressView { fraction: 0.0, label: format!("{} · press Start to train", self.state) },
            },
        };
        let colour = match self.state {
            "error" => RED,
            "done" => GREEN,
            _ => BLUE,
        };
        draw::progress(&canvas("progress"), &progress, colour);
    }

    fn draw_curves(&self) {
        let epochs = self.session.as_ref().map(|s| s.hyper.epochs).unwrap_or(self.run_hyper.epochs).max(1) as f64;
        let max_loss = self.curves.loss.iter().map(|p| p.1).fold(2.5f64, f64::max).min(10.0);
        // The current run, then the overlaid saved runs (each with its recipe as its name).
        let overlays = self.ctl.borrow().overlays.clone();
        let past: Vec<(String, &SavedRun)> =
            overlays.iter().filter_map(|id| self.runs.iter().find(|r| &r.id == id)).map(|r| (format!("{} ({})", r.label(), local_time(r.started_ms)), r)).collect();
        let mut loss = vec![Series { name: "loss", colour: BLUE, points: &self.curves.loss, dots: false }];
        for (i, (name, r)) in past.iter().enumerate() {
            // Not the current run again: its own curve is the blue one.
            if self.run_id.as_deref() != Some(r.id.as_str()) {
                loss.push(Series { name, colour: OVERLAY_COLOURS[i % OVERLAY_COLOURS.len()], points: &r.curves.loss, dots: false });
            }
        }
        if loss.len() > 1 {
            // An empty placeholder keeps the overlays' legends in the plot (series 2 on).
            loss.insert(1, Series { name: "", colour: BLUE, points: &[], dots: false });
        }
        let x_max = past.iter().map(|(_, r)| r.epochs as f64).fold(epochs, f64::max);
        let max_loss = past.iter().flat_map(|(_, r)| r.curves.loss.iter().map(|p| p.1)).fold(max_loss, f64::max).min(10.0);
        draw::line_chart(&canvas("loss-chart"), "Training loss", &loss, x_max, 0.0, max_loss, false);
        draw::line_chart(
            &canvas("accuracy-chart"),
            "Accuracy",
            &[
                Series { name: "train", colour: ORANGE, points: &self.curves.train_accuracy, dots: false },
                Series { name: "test", colour: GREEN, points: &self.curves.test_accuracy, dots: true },
            ],
            epochs,
            0.0,
            1.0,
            true,
        );
    }

    fn draw_grid(&self) {
        if let Some(d) = &self.data {
            draw::predictions(&canvas("predictions"), &d.test, &self.grid, self.probs.as_deref(), &d.classes);
        }
    }

    fn draw_all(&self) {
        self.draw_curves();
        self.draw_grid();
        let Some(d) = &self.data else { return };
        let ours = self.last_eval.as_ref().map(|r| r.class_accuracy());
        let title = match &self.last_eval {
            Some(r) => format!(
                "Test accuracy per class: this run {:.1} % on {} images (blue), PyTorch recipe {:.1}-{:.1} % (grey, seed 0 per class)",
                100.0 * r.accuracy(),
                r.total(),
                REFERENCE_ACCURACY[0],
                REFERENCE_ACCURACY[1]
            ),
            None => format!("Test accuracy per class: PyTorch recipe, 2 epochs on the full set (grey); yours after each evaluation ({} test images)", d.test.len()),
        };
        draw::class_bars(&canvas("class-accuracy"), ours.as_ref(), &REFERENCE_CLASS_ACCURACY, &d.classes, &title);
        let cell = self.ctl.borrow().views.cell;
        draw::confusion(&canvas("confusion"), self.last_eval.as_ref(), &d.classes, cell);
    }
}
