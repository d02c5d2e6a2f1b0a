//! The training loop, in the worker. One task, the runner, owns the session; the message
//! handler only changes the shared `Control` and wakes it. Between chunks of steps the runner
//! applies those changes, sends what changed to the page, and yields to the worker's event loop
//! (so the next message is read). GPU work is queued a chunk at a time and its metrics come
//! back through the engine's async readback (map_async).

use super::engines::Engines;
use super::views::LooksTarget;
use super::{error, note, post, wait, Shared, Want};
use crate::store;
use std::rc::Rc;
use tabcnn::app::{grid_records, Curves};
use tabcnn::data::Cifar;
use tabcnn::model::{init_params, Layout, IMG_LEN};
use tabcnn::outputs::{EngineError, EvalResult};
use tabcnn::recipe::{DatasetChoice, Hyper, Settings};
use tabcnn::saved::SavedRun;
use tabcnn::timeline::{max_snapshots, Timeline, MAX_SNAPSHOTS};
use tabcnn::train::{Checkpoint, Session, TrainError};
use tabcnn::wire::{FromWorker, RunState, Shares};
use web_time::Instant;

/// Wall time one chunk of steps aims at: long enough that the readback between chunks costs
/// little, short enough that a control is answered within it (the worker reads messages
/// between chunks; the page itself never waits for one).
const GPU_CHUNK_MS: f64 = 60.0;
const CPU_CHUNK_MS: f64 = 40.0;
/// The prediction grid, the filters and the resume point are refreshed this often while training.
const REFRESH_MS: f64 = 2000.0;
/// Test-set evaluations per epoch (the last one at the epoch's end).
pub(super) const EVALS_PER_EPOCH: usize = 4;
/// Test images per class in the prediction grid.
const GRID_PER_CLASS: usize = 2;
/// A run is saved this often while it trains (and whenever it pauses or ends).
pub(super) const AUTOSAVE_MS: f64 = 3000.0;

/// The worker's wasm memory in bytes (a wasm memory never shrinks: this is its peak).
fn heap_bytes() -> f64 {
    use wasm_bindgen::JsCast;
    wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>().buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
}

/// The training loop's own state: only the runner task touches it.
pub(crate) struct Runner {
    pub(super) ctl: Shared,
    pub(super) engines: Engines,
    pub(super) data: Option<Rc<Cifar>>,
    /// The running session, if any; its hyperparameters are `run_hyper`.
    pub(super) session: Option<Session>,
    pub(super) run_hyper: Hyper,
    /// The last good point of the run: a lost device or a divergence continues from here.
    pub(super) resume: Option<Checkpoint>,
    /// The one before it: a divergence right after `resume` was taken continues from this one
    /// (`Checkpoint::before_divergence`).
    pub(super) resume_before: Option<Checkpoint>,
    pub(super) curves: Curves,
    pub(super) last_eval: Option<EvalResult>,
    pub(super) grid: Vec<u32>,
    pub(super) chunk_steps: usize,
    pub(super) state: RunState,
    last_refresh: Instant,
    /// The weights a new run starts from instead of the seed's (an uploaded model).
    pub(super) start_params: Option<Vec<f32>>,
    /// The test record followed through the network (a clicked grid image).
    pub(super) picked: Option<u32>,
    /// What the looks view shows (the followed test image or the visitor's picture), and for
    /// which class (None: the predicted one).
    pub(super) looks_target: Option<LooksTarget>,
    pub(super) looks_class: Option<usize>,
    /// When the looks view may refresh again while training (its cost kept to a share).
    pub(super) looks_next: Option<Instant>,
    /// The run's weights through training, and the kept step the views show (None: live).
    pub(super) timeline: Timeline,
    pub(super) scrubbed: Option<u64>,
    /// The live weights the views use when no kept step is shown (network, weights, step).
    pub(super) live_params: Option<(tabcnn::model::Arch, Rc<Vec<f32>>, u64)>,
    /// The timeline's steps stored with the saved run (in the browser's "snapshots" store).
    pub(super) stored_snaps: Vec<u64>,
    /// Where the worker's time goes (training, evaluation, views, saves).
    pub(super) shares: Shares,
    started: Instant,
    /// The browser's storage (None where it is unavailable: runs are then not kept).
    pub(super) db: Option<web_sys::IdbDatabase>,
    /// The run being trained, as it is saved: its id and when it started.
    pub(super) run_id: Option<String>,
    pub(super) run_started_ms: f64,
    /// The step of the last save of this run, and when it was.
    pub(super) saved_step: Option<u64>,
    /// Which runs another tab of this page trains and saves (this tab then saves them no more).
    pub(super) claims: Option<store::Claims>,
    pub(super) last_save: Instant,
    /// Summaries of the saved runs, newest first.
    pub(super) runs: Vec<SavedRun>,
    /// A saved run to continue once its dataset is loaded.
    pub(super) pending_resume: Option<SavedRun>,
    /// (dataset, limit) of the data in use.
    pub(super) data_key: Option<(DatasetChoice, Option<usize>)>,
    /// Training's evaluation was given up for a Pause or Reset: it runs before the next step.
    pub(super) eval_owed: bool,
    /// Saved runs whose timelines could not be dropped (not tried again until a reload), and
    /// those whose snapshots went while the store was full (their lists are rewritten after
    /// the next save).
    pub(super) history_kept: Vec<String>,
    pub(super) stale_lists: Vec<String>,
}

impl Runner {
    pub(crate) fn new(ctl: Shared) -> Runner {
        Runner {
            ctl,
            engines: Engines::default(),
            data: None,
            session: None,
            run_hyper: Hyper::default(),
            resume: None,
            resume_before: None,
            curves: Curves::default(),
            last_eval: None,
            grid: Vec::new(),
            chunk_steps: 4,
            state: RunState::Idle,
            last_refresh: Instant::now(),
            start_params: None,
            picked: None,
            looks_target: None,
            looks_class: None,
            looks_next: None,
            timeline: Timeline::new(MAX_SNAPSHOTS),
            scrubbed: None,
            live_params: None,
            stored_snaps: Vec::new(),
            shares: Shares::default(),
            started: Instant::now(),
            db: None,
            run_id: None,
            run_started_ms: 0.0,
            saved_step: None,
            claims: store::Claims::new(),
            last_save: Instant::now(),
            runs: Vec::new(),
            pending_resume: None,
            data_key: None,
            eval_owed: false,
            history_kept: Vec::new(),
            stale_lists: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, settings: Settings) {
        self.engines.find(settings.engine).await;
        self.open_store().await;
        super::dataset::load_data(&self.ctl, super::dataset::Source::Sample).await;
        match settings.dataset {
            DatasetChoice::Full => super::dataset::load_data(&self.ctl, super::dataset::Source::Full).await,
            DatasetChoice::File => note("data=file names an archive dropped on the page: drop one here (the sample is loaded meanwhile)"),
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
                tabcnn::timer::yield_now().await;
            } else {
                self.state = match (want, self.state) {
                    (_, RunState::Error) => RunState::Error,
                    (Want::Pause, _) if self.session.is_some() => RunState::Paused,
                    (_, RunState::Done) => RunState::Done,
                    _ => RunState::Idle,
                };
                // Paused (or stopped) is shown as soon as the chunk in flight is done; the save
                // that follows takes its own readbacks.
                if let Some(s) = &mut self.session {
                    s.settle().await;
                }
                self.show_metrics();
                if let Err(e) = self.save_if_behind().await {
                    self.fail(e).await;
                }
                wait(&self.ctl).await;
            }
        }
    }

    /// Apply what the messages changed since the last chunk.
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
        let (pick, upload, download, resume_run, delete_run) = {
            let mut k = self.ctl.borrow_mut();
            (k.pick.take(), k.upload.take(), std::mem::take(&mut k.download), k.resume_run.take(), k.delete_run.take())
        };
        let (looks_own, looks_class, scrub) = {
            let mut k = self.ctl.borrow_mut();
            (k.looks_own.take(), k.looks_class.take(), k.scrub.take())
        };
        if load_failed {
            self.state = RunState::Error;
        } else if want == Want::Train && self.state == RunState::Error {
            // Start after an error: the visitor has read it, training goes on.
            error("");
            self.state = RunState::Idle;
        }
        if let Some((d, origin)) = new_data {
            self.use_data(d, origin, &settings).await;
        }
        if reset {
            self.end_run().await;
            error("");
            self.state = RunState::Idle;
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
                    post(FromWorker::Settings { settings: k.settings.clone() });
                }
                self.state = RunState::Idle;
                post(FromWorker::ModelStatus { text: format!("{name} loaded ({} network): press Start to continue training from it, or try your own images", arch.name()) });
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
            self.looks_target = Some(LooksTarget::Test(r));
            if let Err(e) = self.inspect_now().await {
                self.view_failed(e).await;
            }
        }
        let own_picture = looks_own.is_some();
        if let Some((source, record)) = looks_own {
            self.looks_target = Some(LooksTarget::Own(source, record));
        }
        if let Some(class) = looks_class {
            self.looks_class = class;
        }
        if pick.is_some() || own_picture || looks_class.is_some() {
            if let Err(e) = self.looks_now(true).await {
                self.view_failed(e).await;
            }
        }
        if let Some(step) = scrub {
            if let Err(e) = self.scrub(step).await {
                self.view_failed(e).await;
            }
        }
        if download {
            if let Err(e) = self.download_now().await {
                self.view_failed(e).await;
            }
        }
        if let Some(id) = resume_run {
            self.load_saved(&id).await;
        }
        if load_failed && self.pending_resume.take().is_some() {
            note("the saved run was not resumed: its dataset did not load");
        }
        let ready = self.pending_resume.as_ref().map(|r| {
            let (s, _) = Settings::from_query(&r.query);
            self.data_key == Some((s.dataset, s.limit)) && !self.ctl.borrow().loading
        });
        if ready == Some(true) {
            self.resume_saved().await;
        }
        if let Some(id) = delete_run {
            self.delete_saved(&id).await;
        }
    }

    /// Switch to a freshly loaded dataset: the run so far is saved with the dataset it trained
    /// on, then left.
    async fn use_data(&mut self, d: Rc<Cifar>, origin: DatasetChoice, settings: &Settings) {
        self.end_run().await;
        // The settings, the select and the link name the data in use, whatever the select
        // showed while it loaded (runs are recorded with it).
        {
            let mut k = self.ctl.borrow_mut();
            k.settings.dataset = origin;
            post(FromWorker::Settings { settings: k.settings.clone() });
        }
        // Copied only where another holder keeps it (the kept sample): the full archive's
        // 184 MB is not doubled in the worker.
        let mut d = Rc::try_unwrap(d).unwrap_or_else(|shared| (*shared).clone());
        if let Some(n) = settings.limit {
            d.train.truncate(n);
            d.description += &format!(" (training on the first {} images: limit={n} in the link)", d.train.len());
        }
        post(FromWorker::Data { description: d.description.clone(), classes: d.classes.clone(), test_len: d.test.len() });
        let d = Rc::new(d);
        self.data_key = Some((origin, settings.limit));
        self.ctl.borrow_mut().views.data = Some(d.clone());
        self.data = Some(d);
        self.engines.spare = None; // its GPU buffers hold the old dataset
        self.picked = None;
        self.looks_target = None;
        self.clear_run();
        if self.state == RunState::Done {
            self.state = RunState::Idle;
        }
    }

    /// The session to train, made on first use: a new run, or the resume point after an error.
    pub(super) async fn session(&mut self) -> Result<&mut Session, TrainError> {
        if self.session.is_none() {
            let data = self.data.clone().expect("a dataset");
            let resume = self.resume.clone();
            if resume.is_none() {
                self.run_hyper = self.ctl.borrow().settings.hyper.clone();
                // A new run: it is saved under a new id.
                self.run_started_ms = js_sys::Date::now();
                self.run_id = Some(format!("run-{}", self.run_started_ms as u64));
                self.saved_step = None;
                self.stored_snaps.clear();
            }
            let hyper = self.run_hyper.clone();
            if hyper.batch > data.train.len() {
                return Err(TrainError::Engine(EngineError::settings(format!("batch {} is larger than the {} training images", hyper.batch, data.train.len()))));
            }
            let params = self.start_params.clone().unwrap_or_else(|| init_params(&Layout::new(hyper.net), hyper.seed));
            let engine = self.engines.make(&params, &hyper, &data).await?;
            if resume.is_none() {
                // The timeline starts with the weights the run starts from.
                self.timeline = Timeline::new(max_snapshots(params.len()));
                self.offer_snapshot(0, &params);
            }
            note("");
            self.chunk_steps = if engine.is_gpu() { 8 } else { 1 };
            let mut session = match resume {
                Some(ck) => Session::resume(engine, &hyper, ck)?,
                None => Session::new(engine, &hyper),
            };
            // The GPU trains the next chunk while this thread reads and encodes.
            session.set_overlap(true);
            self.session = Some(session);
            if let (Some(c), Some(id)) = (&self.claims, &self.run_id) {
                c.claim(id);
            }
            error("");
        }
        Ok(self.session.as_mut().expect("made above"))
    }

    async fn train_chunk(&mut self) -> Result<(), TrainError> {
        let steps = self.chunk_steps;
        self.session().await?;
        let s = self.session.as_mut().expect("made above");
        if self.eval_owed {
            // A Pause stopped the last evaluation: it goes first, on the weights it was of (at
            // the run's end, not to be given up again).
            let last = s.done();
            return self.evaluate(!last).await;
        }
        if s.done() {
            self.state = RunState::Done;
            self.ctl.borrow_mut().want = Want::Idle;
            return Ok(());
        }
        let s = self.session.as_mut().expect("made above");
        let quarter_before = (s.epochs_done() * EVALS_PER_EPOCH as f64 + 1e-9).floor();
        let t = Instant::now();
        let c = s.run_chunk(steps).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.shares.train_ms += ms;
        self.engines.mend_helpers(&mut s.engine).await;
        let s = self.session.as_mut().expect("made above");
        let gpu = s.engine.is_gpu();
        let x = s.epochs_done();
        let quarter_after = (x * EVALS_PER_EPOCH as f64 + 1e-9).floor();
        self.state = RunState::Training;
        // Aim each chunk at the target wall time (a 2x step at most either way).
        let target = if gpu { GPU_CHUNK_MS } else { CPU_CHUNK_MS };
        self.chunk_steps = ((steps as f64 * (target / ms.max(1.0)).clamp(0.5, 2.0)) as usize).clamp(1, 4096);
        let point = Curves { loss: vec![(x, c.progress.loss as f64)], train_accuracy: vec![(x, c.progress.train_accuracy)], test_accuracy: vec![] };
        self.curves.loss.extend(&point.loss);
        self.curves.train_accuracy.extend(&point.train_accuracy);
        // Bounded however long the run: when thinned, the page gets the curves anew.
        if self.curves.thin(tabcnn::app::MAX_CURVE_POINTS) {
            self.send_curves(None);
        } else {
            self.send_curves(Some(point));
        }
        let refresh = self.last_refresh.elapsed().as_secs_f64() * 1e3 > REFRESH_MS;
        if quarter_after > quarter_before || c.epoch_end {
            // The run's last evaluation is never given up (nothing would run it again).
            self.evaluate(!c.done).await?;
        } else if refresh {
            self.refresh_grid().await?;
        }
        if c.done {
            self.state = RunState::Done;
            self.ctl.borrow_mut().want = Want::Idle;
        }
        self.show_metrics();
        Ok(())
    }

    /// The curves to the page: `added` points, or (None) all of them.
    pub(super) fn send_curves(&self, added: Option<Curves>) {
        let epochs = self.session.as_ref().map(|s| s.hyper.epochs).unwrap_or(self.run_hyper.epochs).max(1);
        let steps_per_epoch = self.session.as_ref().map(|s| s.steps_per_epoch()).unwrap_or(0);
        let append = added.is_some();
        post(FromWorker::Curves { curves: added.unwrap_or_else(|| self.curves.clone()), epochs, steps_per_epoch, append });
    }

    /// Save the resume point and predict the grid's images with the current weights.
    pub(super) async fn refresh_grid(&mut self) -> Result<(), TrainError> {
        self.last_refresh = Instant::now();
        let Some(s) = &mut self.session else { return Ok(()) };
        let ck = s.checkpoint().await?;
        let arch = super::page_arch(&s.engine);
        let t = Instant::now();
        let data = self.data.clone().expect("a dataset");
        // Scrubbed to a kept step, the grid shows that step's weights until live again.
        let probs = match self.scrubbed {
            None => Some(self.ctl.borrow_mut().views.predict(arch, &ck.params, |net| net.probabilities(&data.test.images, &self.grid))?),
            Some(_) => None,
        };
        // The views' weights are the live ones unless a kept step is shown (cells and the
        // visitor's picture then use that step's: nothing mixes the two).
        self.live_params = Some((arch, Rc::new(ck.params.clone()), ck.global_step));
        if self.scrubbed.is_none() {
            self.ctl.borrow_mut().views.params = self.live_params.clone();
        }
        // The layers' weights and last gradients, for the gradient norms and histograms.
        let grads = s.engine.read_grads().await?;
        let epochs = ck.global_step as f64 / s.steps_per_epoch().max(1) as f64;
        if probs.is_some() {
            self.send_grid(probs);
        }
        post(FromWorker::Stats { step: ck.global_step, epochs, layers: tabcnn::stats::layer_stats(&Layout::new(arch), &ck.params, &grads) });
        self.shares.view_ms += t.elapsed().as_secs_f64() * 1e3;
        // Kept before the save, so the save holds it; only while training (a resumed run's
        // timeline is the one it saved, whatever step it paused at).
        if self.state == RunState::Training {
            self.offer_snapshot(ck.global_step, &ck.params);
        }
        if self.last_save.elapsed().as_secs_f64() * 1e3 >= AUTOSAVE_MS && self.saved_step != Some(ck.global_step) {
            self.save(&ck).await;
        }
        self.resume_before = self.resume.replace(ck);
        if self.scrubbed.is_none() {
            self.send_filters();
            self.inspect_now().await?;
            self.looks_now(false).await?;
        }
        post(FromWorker::Shares { shares: Shares { wall_ms: self.started.elapsed().as_secs_f64() * 1e3, heap_bytes: heap_bytes(), ..self.shares } });
        Ok(())
    }

    /// The grid's images and labels, and their probabilities if predicted.
    pub(super) fn send_grid(&self, probs: Option<Vec<[f32; tabcnn::model::CLASSES]>>) {
        let Some(d) = &self.data else { return };
        let images = self.grid.iter().flat_map(|&r| d.test.images[r as usize * IMG_LEN..(r as usize + 1) * IMG_LEN].iter().copied()).collect();
        let labels = self.grid.iter().map(|&r| d.test.labels[r as usize]).collect();
        post(FromWorker::Grid { records: self.grid.clone(), images, labels, probs });
    }

    /// The whole test set on the engine: a point of the test curve, the per-class bars.
    pub(super) async fn evaluate_now(&mut self) -> Result<(), TrainError> {
        self.evaluate(false).await
    }

    /// `evaluate_now`; an `interruptible` one (training's own) is given up at its next piece
    /// when Pause or Reset is pressed, and is owed: it runs before the next step.
    async fn evaluate(&mut self, interruptible: bool) -> Result<(), TrainError> {
        self.session().await?;
        let s = self.session.as_mut().expect("made above");
        // The evaluation is of the weights at the position it is drawn at.
        s.settle().await;
        let t = Instant::now();
        let prev = self.state;
        self.state = RunState::Training;
        self.show_metrics();
        note(&format!("evaluating on the {} test images", self.data.as_ref().map(|d| d.test.len()).unwrap_or(0)));
        let s = self.session.as_mut().expect("made above");
        let ctl = self.ctl.clone();
        let stop = move || interruptible && ctl.try_borrow().is_ok_and(|k| k.reset || k.want != Want::Train);
        let r = s.engine.evaluate_unless(&stop).await?;
        note("");
        self.state = prev;
        self.shares.eval_ms += t.elapsed().as_secs_f64() * 1e3;
        self.eval_owed = r.is_none();
        let Some(r) = r else { return Ok(()) };
        let point = (s.epochs_done(), r.accuracy());
        self.curves.test_accuracy.push(point);
        if self.curves.thin(tabcnn::app::MAX_CURVE_POINTS) {
            self.send_curves(None);
        } else {
            self.send_curves(Some(Curves { test_accuracy: vec![point], ..Curves::default() }));
        }
        // Scrubbed to a kept step, the matrix shown stays that step's; this one is shown live.
        if self.scrubbed.is_none() {
            self.ctl.borrow_mut().views.eval = Some(Rc::new(r.clone()));
            post(FromWorker::Eval { eval: Some(r.clone()) });
        }
        self.last_eval = Some(r);
        self.refresh_grid().await?;
        self.show_metrics();
        Ok(())
    }

    /// An error during training: say what happened and keep the last good point to continue.
    pub(super) async fn fail(&mut self, e: TrainError) {
        // The run goes back to a kept point: an evaluation owed was of weights now gone.
        self.eval_owed = false;
        if let TrainError::Diverged { step, .. } = e {
            // A point taken after the update that blew up holds its weights: use the one before.
            if self.resume.as_ref().is_some_and(|c| !c.before_divergence(step)) {
                self.resume = self.resume_before.take();
            }
        }
        let at = self.resume.as_ref().map(|c| format!("step {}", c.global_step)).unwrap_or_else(|| "the start".into());
        self.roll_back_history().await;
        let msg = match &e {
            TrainError::Diverged { .. } => format!("{e}. The weights from {at} are kept: lower the learning rate and press Start to continue from there, or Reset."),
            TrainError::Engine(m) if m.ends_the_device() && self.engines.gpu.is_some() && self.session.as_ref().map(|s| s.engine.is_gpu()).unwrap_or(true) => {
                // The device is gone or broken: continue on the CPU engine from the last good
                // point. (Bad settings and limits keep the GPU: they are the user's to change.)
                self.engines.lose_gpu();
                format!("{}. The weights from {at} are kept: press Start to continue from there on the CPU engine.", m.message.trim_end_matches('.'))
            }
            TrainError::Engine(m) => m.message.clone(),
        };
        self.session = None;
        self.state = RunState::Error;
        self.ctl.borrow_mut().want = Want::Idle;
        error(&msg);
        self.show_metrics();
    }

    /// A view that failed (the followed image, where it looks, a scrub, a download): its error is
    /// shown and the run goes on, on the same engine. Only a device that cannot go on ends the
    /// session (its next chunk would fail the same way), as a training error does.
    async fn view_failed(&mut self, e: TrainError) {
        match &e {
            TrainError::Engine(m) if m.ends_the_device() => self.fail(e).await,
            _ => error(&format!("a view could not be shown: {e} (training is not affected)")),
        }
    }

    /// Roll the run's history back with its weights to the resume point (the start where there
    /// is none): the timeline's later snapshots (their stored copies go at the next save), the
    /// curves' later points, an evaluation of weights the run no longer has, a scrub to a step
    /// that is gone; and a save made past it is replaced by the resume point's. What is shown
    /// and saved is then one consistent run, which the steps trained again continue.
    async fn roll_back_history(&mut self) {
        let Some(s) = &self.session else { return };
        let (step, x) = match &self.resume {
            Some(c) => (c.global_step, (c.epoch - 1) as f64 + c.epoch_step as f64 / s.steps_per_epoch().max(1) as f64),
            None => (0, 0.0),
        };
        self.timeline.roll_back(step);
        if self.curves.roll_back(x) {
            self.last_eval = None;
            self.ctl.borrow_mut().views.eval = None;
            post(FromWorker::Eval { eval: None });
        }
        let unscrubbed = self.scrubbed.is_some_and(|shown| shown > step);
        if unscrubbed {
            self.scrubbed = None;
        }
        // The views' live weights are the resume point's (the start's where there is none).
        let arch = super::page_arch(&s.engine);
        let start = || self.start_params.clone().unwrap_or_else(|| init_params(&Layout::new(arch), self.run_hyper.seed));
        let params = self.resume.as_ref().map_or_else(start, |c| c.params.clone());
        self.live_params = Some((arch, Rc::new(params), step));
        if self.scrubbed.is_none() {
            self.ctl.borrow_mut().views.params = self.live_params.clone();
            self.send_filters();
            // The grid predicted with the resume point's weights, not those rolled back.
            if let (Some(d), Some((arch, params, _))) = (self.data.clone(), self.live_params.clone()) {
                let probs = self.ctl.borrow_mut().views.predict(arch, &params, |net| net.probabilities(&d.test.images, &self.grid)).ok();
                self.send_grid(probs);
            }
        }
        if unscrubbed {
            // Live again: the matrix shown is the last evaluation the run still has.
            self.ctl.borrow_mut().views.eval = self.last_eval.clone().map(Rc::new);
            post(FromWorker::Eval { eval: self.last_eval.clone() });
        }
        self.send_timeline();
        self.send_curves(None);
        match self.resume.clone() {
            Some(ck) if self.saved_step.is_some_and(|saved| saved > step) => self.save(&ck).await,
            // Diverged before its first good point: its save holds nothing worth resuming.
            None if self.saved_step.is_some() => self.forget_saved_run().await,
            _ => {}
        }
        // Kept steps past the resume point are no longer this run's (a step kept again is
        // stored anew; those left in the store go with the run).
        self.stored_snaps.retain(|&s| s <= step);
    }

    /// Leave the current run for another: it is saved where it got to first (kept in the
    /// run list), then forgotten.
    pub(super) async fn end_run(&mut self) {
        if let Err(e) = self.save_if_behind().await {
            post(FromWorker::RunsStatus { text: format!("the last steps of the run were not saved: {e}"), saved: None });
        }
        self.clear_run();
    }

    /// Forget the run (its engine is kept as a spare).
    pub(super) fn clear_run(&mut self) {
        if let Some(s) = self.session.take() {
            self.engines.spare = Some(s.engine);
        }
        self.resume = None;
        self.resume_before = None;
        self.start_params = None;
        self.run_id = None;
        self.saved_step = None;
        self.curves = Curves::default();
        self.last_eval = None;
        self.eval_owed = false;
        self.timeline = Timeline::new(MAX_SNAPSHOTS);
        self.scrubbed = None;
        self.stored_snaps.clear();
        self.send_timeline();
        note("");
        if let Some(d) = &self.data {
            self.grid = grid_records(&d.test, GRID_PER_CLASS);
        }
        {
            let mut k = self.ctl.borrow_mut();
            k.views.eval = None;
            k.views.params = None;
        }
        self.live_params = None;
        post(FromWorker::Eval { eval: None });
        self.send_grid(None);
        self.send_curves(None);
        self.send_filters();
    }
}
