//! The page: wires the controls of index.html, keeps the #metrics element's attributes in step
//! with training, and runs the training loop on the browser's event loop.
//!
//! One task, the runner, owns the training session; the button and input handlers only change
//! a shared `Control` and wake it. Between chunks of steps the runner applies those changes,
//! draws, and yields, so the tab stays responsive. GPU work is queued a chunk at a time and the
//! metrics come back through the engine's async readback (map_async), so nothing waits on the
//! GPU on the main thread.

use crate::draw::{self, Series, BLUE, GREEN, ORANGE, RED};
use crate::io;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tabcnn::app::{grid_records, Curves, DatasetChoice, EngineChoice, Settings};
use tabcnn::cpu::CpuEngine;
use tabcnn::data::{self, Cifar, Unpacker};
use tabcnn::gpu::{EvalResult, Gpu, GpuEngine};
use tabcnn::model::{init_params, Hyper, Layout, CLASSES, REFERENCE_ACCURACY, REFERENCE_CLASS_ACCURACY};
use tabcnn::train::{Checkpoint, CpuTrainer, Engine, Session, TrainError};
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

fn doc() -> Document {
    web_sys::window().and_then(|w| w.document()).expect("a document")
}

fn el(id: &str) -> Element {
    doc().get_element_by_id(id).unwrap_or_else(|| panic!("index.html has no #{id}"))
}

fn canvas(id: &str) -> HtmlCanvasElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not a canvas"))
}

fn input(id: &str) -> HtmlInputElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not an input"))
}

fn set_text(id: &str, s: &str) {
    el(id).set_text_content(Some(s));
}

fn set_attr(e: &Element, k: &str, v: &str) {
    let _ = e.set_attribute(k, v);
}

/// Show an error in #error (and the console); an empty message hides it.
fn show_error(msg: &str) {
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
enum Want {
    Idle,
    Train,
    Pause,
}

struct Control {
    want: Want,
    settings: Settings,
    /// lr, momentum, weight decay or epochs changed: apply to the running session.
    hyper_changed: bool,
    reset: bool,
    evaluate: bool,
    /// A freshly loaded dataset for the runner to switch to.
    new_data: Option<Rc<Cifar>>,
    loading: bool,
    /// Loading a dataset failed (the message is in #error): the runner shows the error state.
    load_failed: bool,
    /// The sample, kept once loaded, for switching back to it.
    sample: Option<Rc<Cifar>>,
    wake: Option<oneshot::Sender<()>>,
}

type Shared = Rc<RefCell<Control>>;

fn wake(ctl: &Shared) {
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

fn on(id: &str, event: &str, f: impl FnMut(web_sys::Event) + 'static) {
    let c = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    el(id).add_event_listener_with_callback(event, c.as_ref().unchecked_ref()).expect("addEventListener");
    c.forget(); // the page lives as long as the handlers
}

/// The hyperparameter inputs: (element id, settings key).
const FIELDS: [&str; 6] = ["epochs", "batch", "lr", "momentum", "weight-decay", "seed"];

fn field_value(s: &Settings, key: &str) -> String {
    let h = &s.hyper;
    match key {
        "epochs" => h.epochs.to_string(),
        "batch" => h.batch.to_string(),
        "lr" => h.lr.to_string(),
        "momentum" => h.momentum.to_string(),
        "weight-decay" => h.weight_decay.to_string(),
        "seed" => h.seed.to_string(),
        _ => unreachable!(),
    }
}

fn show_settings(s: &Settings) {
    for key in FIELDS {
        input(key).set_value(&field_value(s, key));
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
        loading: false,
        load_failed: false,
        sample: None,
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
            let v = input(key).value();
            match k.settings.set(key, &v) {
                Ok(()) => {
                    show_error("");
                    k.hyper_changed = true;
                    if matches!(key, "batch" | "seed") {
                        set_text("note", &format!("{key} applies from the next Reset (or the first Start)"));
                    }
                }
                Err(e) => {
                    show_error(&e);
                    input(key).set_value(&field_value(&k.settings, key));
                }
            }
            set_attr(&el("share"), "href", &k.settings.to_query());
            drop(k);
            wake(&c);
        });
    }
    let c = ctl.clone();
    on("dataset", "change", move |_| {
        let sel: HtmlSelectElement = el("dataset").dyn_into().expect("select");
        let full = sel.value() == "full";
        c.borrow_mut().settings.dataset = if full { DatasetChoice::Full } else { DatasetChoice::Sample };
        set_attr(&el("share"), "href", &c.borrow().settings.to_query());
        let c = c.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let sample = c.borrow().sample.clone();
            match (full, sample) {
                (false, Some(s)) => {
                    c.borrow_mut().new_data = Some(s);
                    wake(&c);
                }
                _ => load_data(&c, if full { Source::Full } else { Source::Sample }).await,
            }
        });
    });
    let c = ctl.clone();
    on("file", "change", move |_| {
        if let Some(f) = input("file").files().and_then(|l| l.get(0)) {
            let c = c.clone();
            wasm_bindgen_futures::spawn_local(async move { load_data(&c, Source::File(f)).await });
        }
    });
    on("drop", "dragover", |e| e.prevent_default());
    let c = ctl.clone();
    on("drop", "drop", move |e| {
        e.prevent_default();
        let file = e.dyn_ref::<web_sys::DragEvent>().and_then(|d| d.data_transfer()).and_then(|t| t.files()).and_then(|l| l.get(0));
        if let Some(f) = file {
            let c = c.clone();
            wasm_bindgen_futures::spawn_local(async move { load_data(&c, Source::File(f)).await });
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
    {
        let mut k = ctl.borrow_mut();
        k.loading = true;
        if k.want == Want::Train {
            k.want = Want::Pause;
        }
    }
    wake(ctl);
    set_attr(&el("metrics"), "data-state", "loading");
    show_error("");
    let result = load(src).await;
    let mut k = ctl.borrow_mut();
    k.loading = false;
    match result {
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
            k.new_data = Some(d);
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
    curves: Curves,
    last_eval: Option<EvalResult>,
    grid: Vec<u32>,
    probs: Option<Vec<[f32; CLASSES]>>,
    chunk_steps: usize,
    state: &'static str,
    last_refresh: Instant,
}

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
            curves: Curves::default(),
            last_eval: None,
            grid: Vec::new(),
            probs: None,
            chunk_steps: 4,
            state: "idle",
            last_refresh: Instant::now(),
        }
    }

    async fn run(mut self, settings: Settings) {
        self.find_gpu(settings.engine).await;
        load_data(&self.ctl, Source::Sample).await;
        if settings.dataset == DatasetChoice::Full {
            load_data(&self.ctl, Source::Full).await;
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
                io::sleep_ms(0).await;
            } else {
                self.state = match (want, self.state) {
                    (_, "error") => "error",
                    (Want::Pause, _) if self.session.is_some() => "paused",
                    (_, "done") => "done",
                    _ => "idle",
                };
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
                // Emulated WebGPU (SwiftShader on a machine without a GPU) runs our kernels
                // about 5x slower than the CPU engine does in wasm (BENCHMARKS.md): Auto picks
                // the faster one and says so; engine=gpu in the link insists on WebGPU.
                Ok(g) if g.software && choice == EngineChoice::Auto => {
                    set_text(
                        "adapter",
                        &format!(
                            "CPU engine (wasm): this browser's WebGPU is a software renderer ({}), about 5x slower here; add engine=gpu to the link to train through it anyway",
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
            let r = (
                std::mem::take(&mut k.reset),
                k.new_data.take(),
                std::mem::take(&mut k.hyper_changed),
                std::mem::take(&mut k.evaluate),
                k.settings.clone(),
                std::mem::take(&mut k.load_failed),
                k.want,
            );
            r
        };
        if load_failed {
            self.state = "error";
        } else if want == Want::Train && self.state == "error" {
            // Start after an error: the visitor has read it, training goes on.
            show_error("");
            self.state = "idle";
        }
        if let Some(d) = new_data {
            let mut d = (*d).clone();
            if let Some(n) = settings.limit {
                d.train.truncate(n);
                d.description += &format!(" (training on the first {} images: limit={n} in the link)", d.train.len());
                set_text("data-status", &d.description);
            }
            self.data = Some(Rc::new(d));
            self.spare = None; // its GPU buffers hold the old dataset
            self.clear_run();
            if self.state == "done" {
                self.state = "idle";
            }
        }
        if reset {
            self.clear_run();
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
            }
        }
        if evaluate && self.data.is_some() {
            if let Err(e) = self.evaluate_now().await {
                self.fail(e).await;
            }
        }
    }

    /// Forget the run (its engine is kept as a spare).
    fn clear_run(&mut self) {
        if let Some(s) = self.session.take() {
            self.spare = Some(s.engine);
        }
        self.resume = None;
        self.curves = Curves::default();
        self.last_eval = None;
        self.probs = None;
        set_text("note", "");
        if let Some(d) = &self.data {
            self.grid = grid_records(&d.test, GRID_PER_CLASS);
        }
        self.draw_all();
    }

    /// The session to train, made on first use: a new run, or the resume point after an error.
    async fn session(&mut self) -> Result<&mut Session, TrainError> {
        if self.session.is_none() {
            let data = self.data.clone().expect("a dataset");
            let resume = self.resume.clone();
            if resume.is_none() {
                self.run_hyper = self.ctl.borrow().settings.hyper.clone();
            }
            let hyper = self.run_hyper.clone();
            if hyper.batch > data.train.len() {
                return Err(TrainError::Gpu(format!("batch {} is larger than the {} training images", hyper.batch, data.train.len())));
            }
            let params = init_params(&Layout::lenet(), hyper.seed);
            let engine = match (self.spare.take(), &self.gpu) {
                (Some(mut e), _) if e.is_gpu() == self.gpu.is_some() => {
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
                (_, None) => Engine::Cpu(CpuTrainer::new(params, &hyper, &data.train, &data.test)),
            };
            set_text("note", "");
            self.chunk_steps = if engine.is_gpu() { 8 } else { 1 };
            self.session = Some(match resume {
                Some(ck) => Session::resume(engine, &hyper, ck)?,
                None => Session::new(engine, &hyper),
            });
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
        self.show_metrics();
        self.draw_curves();
        Ok(())
    }

    /// Save the resume point and predict the grid's images with the current weights.
    async fn refresh_grid(&mut self) -> Result<(), TrainError> {
        self.last_refresh = Instant::now();
        let Some(s) = &self.session else { return Ok(()) };
        let ck = s.checkpoint().await?;
        let data = self.data.clone().expect("a dataset");
        let cpu = CpuEngine::new(ck.params.clone(), 1);
        self.probs = Some(cpu.probabilities(&data.test.images, &self.grid));
        self.resume = Some(ck);
        self.draw_grid();
        Ok(())
    }

    /// The whole test set on the engine: a point of the test curve, the per-class bars.
    async fn evaluate_now(&mut self) -> Result<(), TrainError> {
        self.session().await?;
        let s = self.session.as_ref().expect("made above");
        let prev = self.state;
        set_attr(&self.metrics, "data-state", "training");
        set_text("note", &format!("evaluating on the {} test images", self.data.as_ref().map(|d| d.test.len()).unwrap_or(0)));
        let r = s.engine.evaluate().await?;
        set_text("note", "");
        self.state = prev;
        self.curves.test_accuracy.push((s.epochs_done(), r.accuracy()));
        self.last_eval = Some(r);
        self.refresh_grid().await?;
        self.draw_all();
        self.show_metrics();
        Ok(())
    }

    /// An error during training: say what happened and keep the last good point to continue.
    async fn fail(&mut self, e: TrainError) {
        let at = self.resume.as_ref().map(|c| format!("step {}", c.global_step)).unwrap_or_else(|| "the start".into());
        let msg = match &e {
            TrainError::Diverged { .. } => format!("{e}. The weights from {at} are kept: lower the learning rate and press Start to continue from there, or Reset."),
            TrainError::Gpu(m) if self.gpu.is_some() && self.session.as_ref().map(|s| s.engine.is_gpu()).unwrap_or(true) => {
                // The device is gone or broken: continue on the CPU engine from the last good point.
                self.gpu = None;
                self.spare = None;
                set_attr(&self.metrics, "data-engine", "cpu");
                set_text("adapter", "the GPU failed: training continues on the CPU engine (wasm, one thread)");
                format!("{m}. The weights from {at} are kept: press Start to continue from there on the CPU engine.")
            }
            TrainError::Gpu(m) => m.clone(),
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
        let (epoch, epoch_step, step, ips) = match &self.session {
            Some(s) => (s.epoch().min(s.hyper.epochs), s.epoch_step(), s.global_step(), s.images_per_second()),
            None => (0, 0, 0, 0.0),
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
            None => draw::ProgressView { fraction: 0.0, label: format!("{} · press Start to train", self.state) },
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
        draw::line_chart(&canvas("loss-chart"), "Training loss", &[Series { name: "loss", colour: BLUE, points: &self.curves.loss, dots: false }], epochs, 0.0, max_loss, false);
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
    }
}
