//! Which engine trains, and the page's honest panel of it. The worker asks its own
//! `navigator.gpu` for an adapter; the link may insist on one engine (engine=gpu, engine=cpu).
//! Otherwise (auto) the choice is measured, not guessed: at the run's batch size each engine
//! trains for about a second on the run's data, and the faster one trains the run, with both
//! figures shown (an emulated WebGPU such as SwiftShader, or a weak integrated GPU at batch 4,
//! loses to the CPU engine in wasm). The panel also gives the GPU engine's step shape
//! (dispatches and passes per step) and its GPU time per step where the browser gives
//! timestamps.

use super::helpers::{self, Helpers};
use super::post;
use std::collections::HashMap;
use std::time::Duration;
use tabcnn::cpu::{self, CpuEngine};
use tabcnn::data::Cifar;
use tabcnn::gpu::{Clock, Gpu, GpuEngine};
use tabcnn::model::Arch;
use tabcnn::recipe::{EngineChoice, Hyper};
use tabcnn::train::{Engine, Session, TrainError};
use tabcnn::wire::{EnginePanel, FromWorker};
use web_time::Instant;

/// How long each engine trains when both are measured (after a first chunk that warms it up).
const MEASURE_MS: f64 = 800.0;
/// The least WebGPU is given to build its engine, and again to finish its first step, when
/// both engines are measured (more when the CPU engine's measurement took longer).
const GPU_MIN_MS: f64 = 1500.0;

#[derive(Default)]
pub(crate) struct Engines {
    /// The WebGPU device, while it may train (None without one, or once it failed).
    pub(crate) gpu: Option<Gpu>,
    choice: Option<EngineChoice>,
    /// An engine from a reset session, kept so a new run reuses the data already on the GPU.
    pub(crate) spare: Option<Engine>,
    /// Auto's measured choice per (batch, network): GPU or not, with both figures.
    /// Auto's measured choice per (batch, network): GPU or not, both figures, and why WebGPU
    /// has none where it has none.
    decided: HashMap<(usize, Arch), (bool, f64, f64, String)>,
    panel: EnginePanel,
    /// The CPU engine's helper workers once asked for: started, or why there are none.
    helpers: Option<Result<Helpers, String>>,
}

/// How many times a session's helper workers are replaced before the CPU engine keeps to this
/// thread (helpers that keep missing their deadline are slower than none).
const MAX_HELPER_RENEWALS: usize = 3;

impl Engines {
    /// Look for WebGPU (unless the link asked for the CPU) and say what will train.
    pub(crate) async fn find(&mut self, choice: EngineChoice) {
        self.choice = Some(choice);
        self.panel = EnginePanel { engine: "cpu".into(), adapter: "cpu".into(), ..EnginePanel::default() };
        if choice == EngineChoice::Cpu {
            self.panel.text = "CPU engine, as the link asks (engine=cpu): the network trains in this tab's own code, on the processor".into();
            return self.show();
        }
        match Gpu::new().await {
            Ok(g) => {
                self.panel.adapter = g.adapter.clone();
                self.panel.software = g.software;
                let kind = if g.software { "a software renderer: the GPU is emulated on the processor" } else { "a GPU" };
                self.panel.text = match choice {
                    EngineChoice::Gpu => format!("WebGPU on {} ({kind}), as the link asks (engine=gpu)", g.adapter),
                    _ => format!("WebGPU on {} ({kind}): when a run starts, both engines are measured at its batch size and the faster trains it", g.adapter),
                };
                if choice == EngineChoice::Gpu {
                    self.panel.engine = "gpu".into();
                }
                self.gpu = Some(g);
            }
            Err(e) => {
                // The adapter's own words go to the console; the page speaks to a visitor.
                web_sys::console::info_1(&format!("tabcnn: no WebGPU adapter: {e}").into());
                let has_webgpu = js_sys::Reflect::has(&js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default(), &"gpu".into()).unwrap_or(false);
                let why = if has_webgpu {
                    "This browser has WebGPU but offered no GPU to this page (it may be switched off for this graphics card or system, or still experimental here)"
                } else {
                    "This browser has no WebGPU"
                };
                self.panel.text = format!(
                    "{why}: the network trains on the CPU engine, in this tab's own code on the processor (a browser with WebGPU, such as a recent Chrome or Edge, trains on your GPU)"
                );
            }
        }
        self.show();
    }

    fn show(&self) {
        post(FromWorker::Engine { panel: self.panel.clone() });
    }

    /// The device failed: the run goes on with the CPU engine.
    pub(crate) fn lose_gpu(&mut self) {
        self.gpu = None;
        self.spare = None;
        self.panel.engine = "cpu".into();
        self.panel.text = "the GPU failed: training continues on the CPU engine (in this tab's own code, on the processor)".into();
        self.panel.dispatches = None;
        self.panel.passes = None;
        self.show();
    }

    /// The engine for a run starting from `params`: the spare when it fits, else a new one on
    /// the engine the link or the measurement chose.
    pub(crate) async fn make(&mut self, params: &[f32], hyper: &Hyper, data: &Cifar) -> Result<Engine, TrainError> {
        if let Some(Ok(h)) = &self.helpers {
            h.new_run();
        }
        let want_gpu = match (self.choice, self.gpu.is_some()) {
            (_, false) | (Some(EngineChoice::Cpu), _) => false,
            (Some(EngineChoice::Gpu), true) => true,
            _ => self.measure(params, hyper, data).await?,
        };
        // A spare that does not fit goes before a new engine is made (two engines at once would
        // pass the worker's budget, which counts one).
        let spare = self.spare.take().filter(|e| e.is_gpu() == want_gpu && e.arch() == Some(hyper.net));
        let engine = match spare {
            Some(mut e) => {
                e.set_batch(hyper.batch).await?;
                if let Engine::Cpu(c) = &mut e {
                    // The helpers it held may have been replaced since.
                    self.lend_helpers(c).await;
                }
                e
            }
            None if want_gpu => {
                super::note("uploading the dataset to the GPU");
                let g = self.gpu.as_ref().expect("checked");
                Engine::Gpu(GpuEngine::new(g, params, hyper.batch, hyper, &data.train, &data.test).await?)
            }
            None => self.cpu_engine(params, hyper, data).await?,
        };
        let mut engine = engine;
        // The step's shape and GPU time of the engine that trains (the profile runs it, before
        // its state is set below).
        self.gpu_figures(&engine).await;
        // A fresh state: the run's weights, no momentum (an engine may have been measured or
        // trained before).
        engine.write_state(params, &vec![0.0; params.len()])?;
        engine.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
        self.panel.engine = if want_gpu { "gpu" } else { "cpu" }.into();
        self.panel.batch = hyper.batch;
        self.show_threads(&engine);
        self.show();
        Ok(engine)
    }

    /// Auto: train about a second on each engine at this batch size and keep the faster (once
    /// per batch size and network). The CPU engine goes first: it is the fallback, and its
    /// whole measurement bounds WebGPU's. WebGPU gets as long (at least GPU_MIN_MS) to build
    /// its engine, and again to finish its first step: a GPU that alone takes longer than the
    /// CPU's whole measurement has lost (an emulated one at 34 images/s once kept Start waiting
    /// 43 s). Each part is shown as it happens. The GPU engine measured stays as the spare.
    async fn measure(&mut self, params: &[f32], hyper: &Hyper, data: &Cifar) -> Result<bool, TrainError> {
        let key = (hyper.batch, hyper.net);
        if !self.decided.contains_key(&key) {
            // Only a GPU spare of this network is measured again; another goes before the CPU
            // engine is made.
            let spare = self.spare.take().filter(|e| e.is_gpu() && e.arch() == Some(hyper.net));
            super::note(&format!("measuring the CPU engine at batch {}", hyper.batch));
            let t = Instant::now();
            // A CPU engine this tab cannot hold (past its budget) has lost: WebGPU may still train.
            let cpu_ips = match self.cpu_engine(params, hyper, data).await {
                Ok(cpu) => images_per_second(cpu, hyper, None).await.map_or(0.0, |(ips, _)| ips),
                Err(e) => {
                    web_sys::console::info_1(&format!("tabcnn: the CPU engine cannot train this run: {e}").into());
                    0.0
                }
            };
            let budget = Duration::from_secs_f64((t.elapsed().as_secs_f64() * 1e3).max(GPU_MIN_MS) / 1e3);
            super::note(&format!("the CPU engine trains {cpu_ips:.0} images/s; measuring WebGPU (given {:.1} s to build and as long for a step)", budget.as_secs_f64()));
            let g = self.gpu.as_ref().expect("checked");
            let build = async {
                match spare {
                    Some(mut e) => e.set_batch(hyper.batch).await.map(|_| e),
                    None => GpuEngine::new(g, params, hyper.batch, hyper, &data.train, &data.test).await.map(Engine::Gpu),
                }
            };
            let measured = match tabcnn::timer::within(Box::pin(build), budget).await {
                Some(Ok(e)) => images_per_second(e, hyper, Some(budget)).await,
                Some(Err(e)) => Err(format!("could not build its engine ({e})")),
                None => Err(format!("did not build its engine within {:.1} s", budget.as_secs_f64())),
            };
            let (gpu_ips, why) = match measured {
                Ok((ips, e)) => {
                    self.spare = Some(e);
                    (ips, String::new())
                }
                Err(why) => {
                    web_sys::console::info_1(&format!("tabcnn: WebGPU {why}").into());
                    (0.0, why)
                }
            };
            super::note("");
            self.decided.insert(key, (gpu_ips > cpu_ips, gpu_ips, cpu_ips, why));
        }
        let (use_gpu, gpu_ips, cpu_ips, why) = self.decided[&key].clone();
        self.panel.measured_gpu = Some(gpu_ips);
        self.panel.measured_cpu = Some(cpu_ips);
        let adapter = &self.panel.adapter;
        let soft = if self.panel.software { ", a software renderer" } else { "" };
        self.panel.text = if use_gpu {
            format!("WebGPU on {adapter}{soft}: measured at batch {}, it trains {gpu_ips:.0} images/s here against {cpu_ips:.0} on the CPU engine", hyper.batch)
        } else if !why.is_empty() {
            format!(
                "CPU engine (this tab's own code, on the processor): measured at batch {}, it trains {cpu_ips:.0} images/s here, and WebGPU ({adapter}{soft}) {why}; add engine=gpu to the link to train on WebGPU anyway",
                hyper.batch
            )
        } else {
            format!(
                "CPU engine (this tab's own code, on the processor): measured at batch {}, it trains {cpu_ips:.0} images/s here against {gpu_ips:.0} on WebGPU ({adapter}{soft}); add engine=gpu to the link to train on WebGPU anyway",
                hyper.batch
            )
        };
        Ok(use_gpu)
    }

    /// A CPU engine on this thread and the helper workers (started the first time, where the
    /// page may have them); the panel says how many threads train and, if one, why.
    async fn cpu_engine(&mut self, params: &[f32], hyper: &Hyper, data: &Cifar) -> Result<Engine, TrainError> {
        if self.helpers.is_none() {
            let started = match helpers::possible() {
                Ok(n) => Helpers::start(n).await,
                Err(why) => Err(why),
            };
            if let Err(e) = &started {
                web_sys::console::info_1(&format!("tabcnn: the CPU engine runs on one thread: {e}").into());
            }
            self.helpers = Some(started);
        }
        // The whole worker, up front: the engine with the helpers' lanes, and what the worker
        // keeps beside it (the views' predictor, the timeline, the resume points, its dataset).
        let helpers = match &self.helpers {
            Some(Ok(h)) => h.count(),
            _ => 0,
        };
        let threads = cpu::all_cores();
        worker_budget(hyper.net, data).check(hyper.net, hyper.batch, threads, threads + helpers, data.train.len() + data.test.len())?;
        let mut e = CpuEngine::new(params, hyper, &data.train, &data.test, threads)?;
        self.lend_helpers(&mut e).await;
        Ok(Engine::Cpu(e))
    }

    /// Lend the helpers to `e`, retiring and replacing first any that stopped answering.
    async fn lend_helpers(&mut self, e: &mut CpuEngine) {
        let Some(Ok(h)) = &self.helpers else { return };
        let h = h.clone();
        let renewed = match h.need_renewal() && h.renewals() >= MAX_HELPER_RENEWALS {
            false => h.renew().await.map_err(|err| format!("a fresh helper worker failed to start: {err}")),
            true => Err(format!("helper workers stopped answering {} times", h.renewals() + 1)),
        };
        let lent = renewed.and_then(|_| e.set_remote(h.lanes()).map_err(|err| format!("the helper workers refused: {err}")));
        if let Err(why) = lent {
            web_sys::console::info_1(&format!("tabcnn: the CPU engine runs on this thread only: {why}").into());
            // Given up: their workers (and heaps) go too.
            h.stop_all();
            self.helpers = Some(Err(why));
        }
        self.panel.helpers_replaced = h.replaced();
    }

    /// After a chunk: a CPU engine whose helper missed its deadline (it was stopped, and the
    /// engine computed its lanes itself) gets fresh helpers in its place, and the panel says so.
    pub(crate) async fn mend_helpers(&mut self, engine: &mut Engine) {
        let Engine::Cpu(c) = engine else { return };
        let Some(why) = c.remote_lost().map(str::to_owned) else { return };
        if !matches!(self.helpers, Some(Ok(_))) {
            return;
        }
        super::note("a helper worker stopped answering: starting a fresh one");
        self.lend_helpers(c).await;
        super::note("");
        self.panel.helpers_replaced_why = why;
        self.show_threads(engine);
        self.show();
    }

    /// The panel's threads of a CPU engine at its batch size, and why one if one.
    fn show_threads(&mut self, e: &Engine) {
        let Engine::Cpu(c) = e else { return };
        self.panel.cpu_threads = c.threads();
        self.panel.cpu_threads_why = match (&self.helpers, c.threads_note()) {
            (_, Some(note)) => note,
            (Some(Err(why)), _) => why.clone(),
            _ => String::new(),
        };
    }

    /// The GPU engine's step shape and, with timestamps, its GPU time per step (measured on
    /// the new engine before its state is reset for the run).
    async fn gpu_figures(&mut self, e: &Engine) {
        let Engine::Gpu(g) = e else { return };
        let shape = g.step_shape();
        self.panel.dispatches = Some(shape.kernels.len());
        self.panel.passes = Some(shape.passes);
        self.panel.gpu_ms_per_step = None;
        self.panel.gpu_ms_why = "this browser gives the page no GPU timestamps (timestamp-query)".into();
        if g.gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            match g.profile(4).await {
                Ok(p) if p.clock == Clock::Timestamps => {
                    self.panel.gpu_ms_per_step = p.rows.last().map(|r| r.1 / 1e3);
                    self.panel.gpu_ms_why.clear();
                }
                Ok(_) => {}
                Err(e) => self.panel.gpu_ms_why = format!("the GPU timestamps failed: {e}"),
            }
        }
    }
}

/// The most this tab's worker may hold in its wasm heap (4 GiB at most, and a browser may
/// refuse a tab more than about 2).
const MAX_WORKER_BYTES: u64 = 2 << 30;

/// Weight-sized buffers a refresh of the views and its save hold for a moment, beside what is
/// kept: the new resume point (weights and momentum) while the two before it are still held,
/// the predictor's copy of the weights, the live weights the views share (the new and, for a
/// moment, the old), the gradients read back for the charts, and a save's state encoded
/// (weights and momentum as tensors, then the record built from them).
const TRANSIENT_WEIGHTS: u64 = 2 + 1 + 2 + 1 + 4;

/// The worker's budget for a CPU engine of `arch` on `data`: beside the engine it keeps the
/// views' predictor (`cpu::predict_piece` images, forward only), the timeline's kept weights, two
/// resume points (weights and momentum each), the copies a refresh makes, and its own copy of
/// the dataset.
fn worker_budget(arch: Arch, data: &Cifar) -> cpu::Budget {
    let layout = tabcnn::model::Layout::new(arch);
    let p = layout.total as u64 * 4;
    let records = (data.train.len() + data.test.len()) as u64;
    let beside = cpu::lane_bytes(cpu::predict_piece(arch), &layout, false)
        + tabcnn::timeline::max_snapshots(layout.total) as u64 * p
        + 4 * p
        + TRANSIENT_WEIGHTS * p
        + records * (tabcnn::model::IMG_LEN as u64 + 1);
    cpu::Budget {
        limit: MAX_WORKER_BYTES,
        beside,
        beside_what: "the views' predictor, the timeline, the resume points, a refresh's copies and the worker's dataset",
        holder: "this tab's worker",
    }
}

/// Train a throwaway session for about `MEASURE_MS` after a first warm-up step (which must end
/// within `first`, if given): images per second, and the engine back; or why not (it failed,
/// or was too slow: the engine is dropped with its work in flight).
async fn images_per_second(engine: Engine, hyper: &Hyper, first: Option<Duration>) -> Result<(f64, Engine), String> {
    let mut s = Session::new(engine, hyper);
    let warm = match first {
        Some(limit) => tabcnn::timer::within(Box::pin(s.run_chunk(1)), limit).await.ok_or_else(|| format!("did not finish a first step within {:.1} s", limit.as_secs_f64()))?,
        None => s.run_chunk(1).await,
    };
    warm.map_err(|e| format!("failed a step ({e})"))?;
    let (t, first, mut chunk) = (Instant::now(), s.global_step(), 1usize);
    while t.elapsed().as_secs_f64() * 1e3 < MEASURE_MS && !s.done() {
        s.run_chunk(chunk).await.map_err(|e| format!("failed a step ({e})"))?;
        chunk = (chunk * 2).min(64);
        tabcnn::timer::yield_now().await;
    }
    // The steps taken (a chunk stops at its epoch's end: fewer than asked for, at times).
    let steps = s.global_step() - first;
    let ips = (steps as usize * hyper.batch) as f64 / t.elapsed().as_secs_f64().max(1e-9);
    Ok((ips, s.engine))
}
