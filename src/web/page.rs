//! The page's main thread: it starts the worker that owns the run (src/web/worker) and shows
//! what the worker sends: #metrics and the progress bar, the engine panel, the grid, the
//! per-class bars and the confusion matrix, and hands the rest to the views (`classroom`,
//! `runs`, `charts`). Nothing here trains, evaluates or waits on a GPU, so input and painting
//! never wait for the run.

use crate::bridge;
use crate::charts::curves_soon;
use crate::dom::{canvas, doc, el, set_attr, set_text, show_error, show_internal_error};
use crate::draw::{self, BLUE, GREEN, RED};
use crate::ui::{send, send_with, Page, Ui};
use crate::{classroom, compute_view, control, gradients_view, looks_view, runs, timeline_view};
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::app::Curves;
use tabcnn::data::Split;
use tabcnn::recipe::{Settings, REFERENCE_ACCURACY, REFERENCE_CLASS_ACCURACY};
use tabcnn::wire::{EnginePanel, FromWorker, RunState, Shares, Status, ToWorker};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_internal_error(&info.to_string());
    }));
}

/// Show the link's settings, wire the controls, start the worker.
pub fn run() {
    let query = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    let (mut settings, mut problems) = Settings::from_query(&query);
    problems.extend(control::lenet_only(&mut settings).err());
    control::show_settings(&settings);
    if !problems.is_empty() {
        show_error(&format!("some settings in the link were not used: {}", problems.join("; ")));
    }
    let ui: Ui = Rc::new(RefCell::new(Page {
        worker: None,
        ready: false,
        queue: vec![(ToWorker::Begin { settings: settings.clone(), base: doc().base_uri().ok().flatten().unwrap_or_default() }, None)],
        settings,
        state: RunState::Idle,
        classes: Vec::new(),
        test_len: 0,
        grid: Vec::new(),
        grid_split: Split { images: Vec::new(), labels: Vec::new() },
        grid_probs: None,
        eval: None,
        cell: None,
        curves: Curves::default(),
        epochs: 1,
        steps_per_epoch: 0,
        runs: Vec::new(),
        current: None,
        overlays: Vec::new(),
        runs_shown: Vec::new(),
        storage: None,
        persisted: None,
        persist_asked: false,
        panel: EnginePanel::default(),
        shares: Shares::default(),
        images_per_second: 0.0,
        wait_note: false,
        curves_due: false,
        followed: None,
        explained: None,
        playing: None,
        grad_history: Vec::new(),
        layer_stats: None,
        timeline_steps: Vec::new(),
        timeline_shown: None,
        timeline_playing: None,
    }));
    control::wire(&ui);
    classroom::wire(&ui);
    compute_view::wire(&ui);
    looks_view::wire(&ui);
    timeline_view::wire(&ui);
    runs::wire(&ui);
    match start_worker(&ui) {
        Ok(w) => ui.borrow_mut().worker = Some(w),
        Err(e) => {
            set_text("adapter", "the page could not start its worker, so it cannot train");
            show_error(&format!("{e}: this browser cannot run the page's worker (a module worker); try a recent Chrome, Edge, Firefox or Safari"));
            set_attr(&el("metrics"), "data-state", "error");
        }
    }
}

/// The app's script and wasm, as trunk's index.html preloads them.
fn app_urls() -> Result<(String, String), String> {
    let href = |sel: &str| -> Option<String> { doc().query_selector(sel).ok().flatten()?.dyn_into::<web_sys::HtmlLinkElement>().ok().map(|l| l.href()) };
    let js = href("link[rel=modulepreload][href$='.js']").ok_or("index.html names no app script (link rel=modulepreload)")?;
    let wasm = href("link[rel=preload][href$='.wasm']").ok_or("index.html names no app wasm (link rel=preload)")?;
    Ok((js, wasm))
}

/// A module worker running this same app (its entry point sees a worker and runs
/// `worker::run`), with the test build's prelude first.
fn start_worker(ui: &Ui) -> Result<web_sys::Worker, String> {
    let (js, wasm) = app_urls()?;
    let prelude = test_prelude();
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    // tabcnnBoot: how the worker starts its CPU engine's helper workers the same way (with the
    // test build's prelude first there too).
    let src = format!(
        "{prelude}\nself.tabcnnBoot = {{ js: {0}, wasm: {1}, prelude: {2} }};\nconst app = await import({0});\nawait app.default({{ module_or_path: {1} }});\n",
        quote(&js),
        quote(&wasm),
        quote(&prelude)
    );
    let parts = js_sys::Array::of1(&JsValue::from_str(&src));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts).map_err(crate::io::js_error)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(crate::io::js_error)?;
    let wo = web_sys::WorkerOptions::new();
    wo.set_type(web_sys::WorkerType::Module);
    wo.set_name("tabcnn-run");
    let w = web_sys::Worker::new_with_options(&url, &wo).map_err(crate::io::js_error)?;
    let u = ui.clone();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| match bridge::from_js::<FromWorker>(&e.data()) {
        Ok((msg, _)) => receive(&u, msg),
        Err(e) => show_error(&format!("internal error: {e}")),
    });
    w.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        e.prevent_default();
        show_internal_error(&format!("the worker that trains stopped: {}", e.message()));
    });
    w.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    Ok(w)
}

/// In the tests' build (feature `test-hooks`): `window.tabcnnWorkerPrelude`, where a script set
/// it (the tests do, to fake faults in the worker's WebGPU or storage), to run in the worker
/// first. The build visitors get has none.
#[cfg(feature = "test-hooks")]
fn test_prelude() -> String {
    let window = web_sys::window().expect("the page's window");
    js_sys::Reflect::get(&window, &"tabcnnWorkerPrelude".into()).ok().and_then(|p| p.as_string()).unwrap_or_default()
}

#[cfg(not(feature = "test-hooks"))]
fn test_prelude() -> String {
    String::new()
}

/// One message from the worker, shown.
fn receive(ui: &Ui, msg: FromWorker) {
    match msg {
        FromWorker::Ready => {
            let queue = {
                let mut p = ui.borrow_mut();
                p.ready = true;
                std::mem::take(&mut p.queue)
            };
            for (m, f) in queue {
                send_with(ui, m, f);
            }
        }
        FromWorker::Engine { panel } => {
            let m = el("metrics");
            set_attr(&m, "data-engine", &panel.engine);
            set_attr(&m, "data-adapter", &panel.adapter);
            set_text("adapter", &panel.text);
            ui.borrow_mut().panel = panel;
            show_panel(&ui.borrow());
        }
        FromWorker::Status { status } => show_status(ui, &status),
        FromWorker::Settings { mut settings } => {
            // The layout is the page's own: a resumed run's settings do not change it.
            settings.projector = ui.borrow().settings.projector;
            control::show_settings(&settings);
            ui.borrow_mut().settings = settings;
        }
        FromWorker::Note { text } => set_text("note", &text),
        FromWorker::Error { text } => show_error(&text),
        FromWorker::ModelStatus { text } => set_text("model-status", &text),
        FromWorker::DataProgress { label, fraction } => draw::progress(&canvas("data-progress"), &draw::ProgressView { fraction, label }, "#8ab4f8"),
        FromWorker::Data { description, classes, test_len } => {
            set_text("data-status", &description);
            looks_view::fill_classes(&classes);
            let mut p = ui.borrow_mut();
            (p.classes, p.test_len) = (classes, test_len);
        }
        FromWorker::Curves { curves, epochs, steps_per_epoch, append } => {
            let mut p = ui.borrow_mut();
            (p.epochs, p.steps_per_epoch) = (epochs, steps_per_epoch);
            if append {
                p.curves.loss.extend(curves.loss);
                p.curves.train_accuracy.extend(curves.train_accuracy);
                p.curves.test_accuracy.extend(curves.test_accuracy);
            } else {
                p.curves = curves;
            }
            drop(p);
            curves_soon(ui);
        }
        FromWorker::Grid { records, images, labels, probs } => {
            let mut p = ui.borrow_mut();
            (p.grid, p.grid_split, p.grid_probs) = (records, Split { images, labels }, probs);
            draw_grid(&p);
        }
        FromWorker::Eval { eval } => {
            let cell = {
                let mut p = ui.borrow_mut();
                p.eval = eval;
                if p.eval.is_none() {
                    p.cell = None;
                    classroom::clear_cell();
                }
                draw_results(&p);
                p.cell.filter(|_| p.eval.is_some())
            };
            // The selected cell's images under the new evaluation.
            if let Some((truth, pred)) = cell {
                send(ui, ToWorker::Cell { truth, pred });
            }
        }
        FromWorker::Cell { truth, pred, records, images, probs } => classroom::show_cell(&ui.borrow(), truth, pred, &records, images, &probs),
        FromWorker::Filters { arch, params, what } => {
            draw::filters(&canvas("filters"), arch, &params, &what);
            // Which weights are shown: a script can tell one step's from another's.
            let f = el("filters");
            set_attr(&f, "data-what", &what);
            set_attr(&f, "data-checksum", &format!("{:e}", params.iter().map(|&v| v as f64).sum::<f64>()));
        }
        FromWorker::Timeline { steps, steps_per_epoch, shown } => timeline_view::show(ui, steps, steps_per_epoch, shown),
        FromWorker::Stats { step, epochs, layers } => gradients_view::show(ui, step, epochs, layers),
        FromWorker::Looks { what, own, step, image, looks, source } => looks_view::show(&ui.borrow(), &what, own, step, &image, &looks, &source),
        FromWorker::Features { record, step, arch, image, inside, params, truth, title } => classroom::show_features(ui, record, step, arch, image, inside, params, &truth, title),
        FromWorker::Own { source, record, probs, step } => classroom::show_own(&ui.borrow(), &source, &record, &probs, step),
        FromWorker::RunsStatus { text, saved } => {
            let st = el("runs-status");
            st.set_text_content(Some(&text));
            if let Some((id, step)) = saved {
                set_attr(&st, "data-run", &id);
                set_attr(&st, "data-saved-step", &step.to_string());
            }
        }
        FromWorker::Runs { runs, current } => {
            {
                let mut p = ui.borrow_mut();
                p.overlays.retain(|id| runs.iter().any(|r| &r.id == id));
                (p.runs, p.current) = (runs, current);
            }
            runs::render(ui);
            curves_soon(ui);
        }
        FromWorker::RunSaved { run, current } => {
            {
                let mut p = ui.borrow_mut();
                // In its place (a timeline dropped) or first (a save), newest save first.
                match p.runs.iter_mut().find(|r| r.id == run.id) {
                    Some(old) => *old = run,
                    None => p.runs.insert(0, run),
                }
                p.runs.sort_by(|a, b| b.saved_ms.total_cmp(&a.saved_ms));
                p.current = current;
            }
            runs::render(ui);
            curves_soon(ui);
        }
        FromWorker::Storage { usage } => {
            ui.borrow_mut().storage = usage;
            runs::ask_to_persist(ui);
            runs::render(ui);
        }
        FromWorker::ResumeOffer { offer } => runs::offer(offer),
        FromWorker::Download { name, bytes, text } => match crate::io::download(&bytes, &name, "application/octet-stream") {
            Ok(()) => set_text("model-status", &text),
            Err(e) => show_error(&format!("the download failed: {e}")),
        },
        FromWorker::Shares { shares } => {
            ui.borrow_mut().shares = shares;
            show_shares(&shares);
            show_panel(&ui.borrow());
        }
        FromWorker::Panic { text } => show_internal_error(&text),
    }
}

/// #metrics, the Pause button and the progress bar.
fn show_status(ui: &Ui, s: &Status) {
    let m = el("metrics");
    set_attr(&m, "data-state", s.state.name());
    set_attr(&m, "data-epoch", &s.epoch.to_string());
    set_attr(&m, "data-epoch-step", &s.epoch_step.to_string());
    set_attr(&m, "data-step", &s.step.to_string());
    set_attr(&m, "data-images-per-second", &format!("{:.1}", s.images_per_second));
    let fixed = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    set_attr(&m, "data-loss", &fixed(s.loss));
    set_attr(&m, "data-train-accuracy", &fixed(s.train_accuracy));
    set_attr(&m, "data-test-accuracy", &fixed(s.test_accuracy));
    set_attr(&m, "data-loss-points", &s.loss_points.to_string());
    let pct = |v: Option<f64>| v.map(|v| format!("{:.1} %", v * 100.0)).unwrap_or("-".into());
    m.set_text_content(Some(&format!(
        "{} · step {} · loss {} · train accuracy {} · test accuracy {} · {:.0} images/s",
        s.state.name(),
        s.step,
        s.loss.map(|l| format!("{l:.3}")).unwrap_or("-".into()),
        pct(s.train_accuracy),
        pct(s.test_accuracy),
        s.images_per_second
    )));
    set_text("pause", if s.state == RunState::Paused { "Resume" } else { "Pause" });
    let colour = match s.state {
        RunState::Error => RED,
        RunState::Done => GREEN,
        _ => BLUE,
    };
    draw::progress(&canvas("progress"), &draw::ProgressView { fraction: s.progress, label: s.label.clone() }, colour);
    let mut p = ui.borrow_mut();
    p.state = s.state;
    if p.wait_note && s.state != RunState::Training {
        p.wait_note = false;
        set_text("note", "");
    }
    if (p.images_per_second - s.images_per_second).abs() > 0.5 {
        p.images_per_second = s.images_per_second;
        show_panel(&p);
    }
}

/// The views' and saves' cost beside the training time (as #inspect's and #runs-status's
/// attributes, which the tests and BENCHMARKS.md read).
fn show_shares(s: &Shares) {
    let busy = (s.train_ms + s.eval_ms).max(1.0);
    let e = el("inspect");
    set_attr(&e, "data-view-ms", &format!("{:.1}", s.view_ms));
    set_attr(&e, "data-view-share", &format!("{:.4}", s.view_ms / busy));
    // The worker's wasm memory (its peak: it never shrinks), for BENCHMARKS.md.
    set_attr(&el("engine-panel"), "data-heap-mb", &format!("{:.0}", s.heap_bytes / 1048576.0));
    let st = el("runs-status");
    set_attr(&st, "data-save-ms", &format!("{:.1}", s.save_ms));
    set_attr(&st, "data-save-share", &format!("{:.4}", s.save_ms / busy));
}

/// The engine panel: what trains and why, its speed, its step, and where the worker's time goes.
fn show_panel(p: &Page) {
    let e = el("engine-panel");
    let k = &p.panel;
    let mut parts = vec![format!("{:.0} images/s", p.images_per_second)];
    if let (Some(g), Some(c)) = (k.measured_gpu, k.measured_cpu) {
        parts.push(format!("measured at batch {}: WebGPU {g:.0}, CPU engine {c:.0} images/s", k.batch));
    }
    if let (Some(d), Some(n)) = (k.dispatches, k.passes) {
        parts.push(format!("GPU step: {d} dispatches in {n} compute pass{}", if n == 1 { "" } else { "es" }));
    }
    if k.engine == "cpu" && k.cpu_threads > 0 {
        let t = k.cpu_threads;
        let why = if k.cpu_threads_why.is_empty() { String::new() } else { format!(" ({})", k.cpu_threads_why) };
        parts.push(format!("CPU engine on {t} thread{}{why}", if t == 1 { "" } else { "s" }));
    }
    if k.helpers_replaced > 0 {
        parts.push(format!("{} helper worker(s) replaced by fresh ones, the last because {}", k.helpers_replaced, k.helpers_replaced_why));
    }
    match k.gpu_ms_per_step {
        Some(ms) => parts.push(format!("{ms:.3} ms of GPU time per step (timestamps)")),
        None if k.dispatches.is_some() && !k.gpu_ms_why.is_empty() => parts.push(format!("GPU time per step: not shown, {}", k.gpu_ms_why)),
        None => {}
    }
    let s = &p.shares;
    let wall = s.wall_ms.max(1.0);
    let share = |v: f64| 100.0 * v / wall;
    if s.wall_ms > 0.0 {
        parts.push(format!(
            "the worker's time: training {:.0} %, evaluation {:.0} %, views {:.1} %, saves {:.1} %",
            share(s.train_ms),
            share(s.eval_ms),
            share(s.view_ms),
            share(s.save_ms)
        ));
    }
    set_text("engine-panel", &parts.join(" · "));
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    set_attr(&e, "data-engine", &k.engine);
    set_attr(&e, "data-software", if k.software { "true" } else { "false" });
    set_attr(&e, "data-measured-gpu", &opt(k.measured_gpu));
    set_attr(&e, "data-measured-cpu", &opt(k.measured_cpu));
    set_attr(&e, "data-dispatches", &k.dispatches.map(|d| d.to_string()).unwrap_or_default());
    set_attr(&e, "data-passes", &k.passes.map(|d| d.to_string()).unwrap_or_default());
    set_attr(&e, "data-gpu-ms", &k.gpu_ms_per_step.map(|v| format!("{v:.4}")).unwrap_or_default());
    set_attr(&e, "data-cpu-threads", &k.cpu_threads.to_string());
    set_attr(&e, "data-cpu-threads-why", &k.cpu_threads_why);
    set_attr(&e, "data-helpers-replaced", &k.helpers_replaced.to_string());
    set_attr(&e, "data-train-share", &format!("{:.4}", s.train_ms / wall));
    set_attr(&e, "data-eval-share", &format!("{:.4}", s.eval_ms / wall));
    set_attr(&e, "data-view-share", &format!("{:.4}", s.view_ms / wall));
    set_attr(&e, "data-save-share", &format!("{:.4}", s.save_ms / wall));
}

fn draw_grid(p: &Page) {
    if p.classes.is_empty() {
        return;
    }
    let order: Vec<u32> = (0..p.grid.len() as u32).collect();
    draw::predictions(&canvas("predictions"), &p.grid_split, &order, p.grid_probs.as_deref(), &p.classes);
    // How many of the grid's images have outputs that overflowed (for scripts).
    let overflowed = p.grid_probs.as_ref().map_or(0, |probs| probs.iter().filter(|q| !tabcnn::views::finite_probs(q)).count());
    set_attr(&el("predictions"), "data-overflowed", &overflowed.to_string());
}

/// The per-class bars and the confusion matrix of the last evaluation.
fn draw_results(p: &Page) {
    if p.classes.is_empty() {
        return;
    }
    // The test images the confusion matrix counts, and how many are right (for scripts).
    let c = el("confusion");
    set_attr(&c, "data-total", &p.eval.as_ref().map_or(String::new(), |r| r.total().to_string()));
    set_attr(&c, "data-correct", &p.eval.as_ref().map_or(String::new(), |r| r.correct().to_string()));
    set_attr(&c, "data-not-finite", &p.eval.as_ref().map_or(String::new(), |r| r.not_finite.to_string()));
    // The counts, row-major [true][predicted], for scripts.
    let counts = p.eval.as_ref().map_or(String::new(), |r| r.confusion.iter().flatten().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
    set_attr(&c, "data-counts", &counts);
    // An evaluation whose outputs overflowed: say so where the accuracy is shown.
    if let Some(problem) = p.eval.as_ref().and_then(|r| r.problem()) {
        set_text("eval-problem", &problem);
    } else {
        set_text("eval-problem", "");
    }
    let ours = p.eval.as_ref().map(|r| r.class_accuracy());
    let title = match &p.eval {
        Some(r) => format!(
            "Test accuracy per class: this run {:.1} % on {} images (blue), PyTorch recipe {:.1}-{:.1} % (grey, seed 0 per class)",
            100.0 * r.accuracy(),
            r.total(),
            REFERENCE_ACCURACY[0],
            REFERENCE_ACCURACY[1]
        ),
        None => format!("Test accuracy per class: PyTorch recipe, 2 epochs on the full set (grey); yours after each evaluation ({} test images)", p.test_len),
    };
    draw::class_bars(&canvas("class-accuracy"), ours.as_ref(), &REFERENCE_CLASS_ACCURACY, &p.classes, &title);
    draw::confusion(&canvas("confusion"), p.eval.as_ref(), &p.classes, p.cell);
}
