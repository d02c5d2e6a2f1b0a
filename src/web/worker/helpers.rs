//! The CPU engine's helper workers, seen from the worker that trains: started where the page
//! is cross-origin isolated (SharedArrayBuffer exists) and the machine has more than one core,
//! one per core past this one (at most 7); each computes lanes of every batch
//! (`tabcnn::cpu::engine::RemoteLanes`) through its own SharedArrayBuffer (layout in
//! src/web/helper.rs). Without isolation the engine runs on this thread and the panel says why.

use crate::helper::{Slots, ARCH, BATCH, CAP, CMD, CORRECT, DONE, JOB, LOSS, N, SEQ, STOP, TOTAL};
use js_sys::{Atomics, Float32Array, Int32Array, Reflect, SharedArrayBuffer, Uint32Array};
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::cpu::engine::RemoteLanes;
use tabcnn::model::Arch;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The most helpers started (8 threads in all).
const MAX_HELPERS: usize = 7;
/// How long a started helper may take to load the wasm and say it is ready.
const READY_MS: u64 = 20_000;
/// A helper's lane is no larger than each of this thread's own lanes of the step: one that
/// takes LANE_SLOWER times as long as all of them (and at least LANE_MIN_MS) is gone (it
/// crashed, or hangs), and is retired for good. A wide network's lane of 512 images is seconds
/// of work, a LeNet lane milliseconds: the deadline follows the step, not one constant.
const LANE_SLOWER: u32 = 10;
const LANE_MIN_MS: f64 = 2_000.0;

/// The most one helper's wasm heap is asked to hold (as the training worker's).
const MAX_HELPER_BYTES: u64 = 2 << 30;

/// One helper: its worker and the buffer it works in.
struct Helper {
    worker: web_sys::Worker,
    /// Its worker's name (tabcnn-helper-K, K counting every helper this worker started).
    name: String,
    sab: Option<SharedArrayBuffer>,
    head: Int32Array,
    floats: Float32Array,
    words: Uint32Array,
    slots: Slots,
    /// The last job set off (the header's SEQ): its answer is the one with DONE == seq.
    seq: i32,
    /// Retired (its worker terminated): never lent again.
    lost: bool,
}

impl Helper {
    /// Whether a job set off is not answered yet (a step that gave up on it left it so).
    fn busy(&self) -> bool {
        self.sab.is_some() && Atomics::load(&self.head, DONE) != Ok(self.seq)
    }
    /// Stop its worker for good: an answer it was still computing never lands anywhere.
    fn retire(&mut self) {
        self.worker.terminate();
        self.lost = true;
    }
}

type Shared = Rc<RefCell<Helper>>;

/// The helpers now, and how many were replaced since the first started.
struct Pool {
    list: Vec<Shared>,
    started: usize,
    replaced: usize,
    renewals: usize,
}

/// The started helpers, shared by the CPU engines the worker makes (one trains at a time).
#[derive(Clone)]
pub(crate) struct Helpers(Rc<RefCell<Pool>>);

/// Whether helpers can run here, and how many: the count, or why there are none.
pub(crate) fn possible() -> Result<usize, String> {
    let global = js_sys::global();
    let isolated = Reflect::get(&global, &"crossOriginIsolated".into()).ok().and_then(|v| v.as_bool()).unwrap_or(false);
    if !isolated {
        return Err("this page is not cross-origin isolated (its server sends no COOP/COEP headers), so the tab gives it no shared memory for more threads".into());
    }
    let cores = global.dyn_into::<web_sys::WorkerGlobalScope>().map(|g| g.navigator().hardware_concurrency() as usize).unwrap_or(1);
    if cores < 2 {
        return Err("this browser reports one core".into());
    }
    Ok((cores - 1).min(MAX_HELPERS))
}

impl Helpers {
    /// Start `count` helpers and wait until each has loaded (an error if any fails to).
    pub(crate) async fn start(count: usize) -> Result<Helpers, String> {
        let list = launch(0, count).await?;
        Ok(Helpers(Rc::new(RefCell::new(Pool { list, started: count, replaced: 0, renewals: 0 }))))
    }

    /// How many helpers there are.
    pub(crate) fn count(&self) -> usize {
        self.0.borrow().list.len()
    }

    /// How many helpers were retired and replaced by fresh ones.
    pub(crate) fn replaced(&self) -> usize {
        self.0.borrow().replaced
    }

    /// Stop every helper for good (the pool is given up: their heaps go with them).
    pub(crate) fn stop_all(&self) {
        for h in self.0.borrow_mut().list.drain(..) {
            h.borrow_mut().retire();
        }
    }

    /// A new run: helpers replaced in earlier runs (a laptop that slept, say) count no more
    /// against MAX_HELPER_RENEWALS.
    pub(crate) fn new_run(&self) {
        self.0.borrow_mut().renewals = 0;
    }

    /// How many times helpers had to be replaced.
    pub(crate) fn renewals(&self) -> usize {
        self.0.borrow().renewals
    }

    /// Whether a helper is lost or still holds a job a step gave up on.
    pub(crate) fn need_renewal(&self) -> bool {
        self.0.borrow().list.iter().any(|h| h.borrow().lost || h.borrow().busy())
    }

    /// Retire every helper that is lost or still holds a job a step gave up on (its late
    /// answer must not land in a later job's buffers), and start fresh ones in their place:
    /// how many were replaced. When the fresh ones fail to load, the pool keeps the helpers
    /// that are well, and says why.
    pub(crate) async fn renew(&self) -> Result<usize, String> {
        let gone: Vec<usize> = {
            let pool = self.0.borrow();
            pool.list.iter().enumerate().filter(|(_, h)| h.borrow().lost || h.borrow().busy()).map(|(i, _)| i).collect()
        };
        if gone.is_empty() {
            return Ok(0);
        }
        let first = {
            let mut pool = self.0.borrow_mut();
            for &i in gone.iter().rev() {
                pool.list.remove(i).borrow_mut().retire();
            }
            pool.started += gone.len();
            pool.renewals += 1;
            pool.started - gone.len()
        };
        let fresh = launch(first, gone.len()).await?;
        let mut pool = self.0.borrow_mut();
        pool.replaced += fresh.len();
        pool.list.extend(fresh);
        Ok(gone.len())
    }

    /// Lanes for one engine: the helpers there are now, lent (a later renewal does not change
    /// what this engine holds).
    pub(crate) fn lanes(&self) -> Box<dyn RemoteLanes + Send> {
        Box::new(Lent { helpers: self.0.borrow().list.clone(), started: web_time::Instant::now() })
    }
}

/// Start `count` helper workers named from `first` on, and wait until each has loaded.
async fn launch(first: usize, count: usize) -> Result<Vec<Shared>, String> {
    let boot = Reflect::get(&js_sys::global(), &"tabcnnBoot".into()).map_err(|_| "no tabcnnBoot")?;
    let field = |k: &str| Reflect::get(&boot, &k.into()).ok().and_then(|v| v.as_string()).ok_or_else(|| format!("tabcnnBoot.{k} is missing"));
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    // The test build's prelude (empty in the build visitors get) runs first, as in this worker.
    let prelude = field("prelude").unwrap_or_default();
    let src = format!("{prelude}\nconst app = await import({});\nawait app.default({{ module_or_path: {} }});\n", quote(&field("js")?), quote(&field("wasm")?));
    let parts = js_sys::Array::of1(&JsValue::from_str(&src));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts).map_err(crate::io::js_error)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(crate::io::js_error)?;
    let mut helpers = Vec::new();
    let mut ready = Vec::new();
    for k in first..first + count {
        let wo = web_sys::WorkerOptions::new();
        wo.set_type(web_sys::WorkerType::Module);
        let name = format!("tabcnn-helper-{k}");
        wo.set_name(&name);
        let worker = web_sys::Worker::new_with_options(&url, &wo).map_err(crate::io::js_error)?;
        // Resolved by the helper's first message ("ready"), rejected by a load error.
        let w = worker.clone();
        ready.push(js_sys::Promise::new(&mut move |resolve, reject| {
            w.set_onmessage(Some(&resolve));
            w.set_onerror(Some(&reject));
        }));
        let empty = SharedArrayBuffer::new(0);
        helpers.push(Helper {
            worker,
            name,
            sab: None,
            head: Int32Array::new(&empty),
            floats: Float32Array::new(&empty),
            words: Uint32Array::new(&empty),
            slots: Slots::new(0, 0),
            seq: 0,
            lost: false,
        });
    }
    let all = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::all(&ready.into_iter().collect::<js_sys::Array>()));
    let stop = |h: &[Helper]| h.iter().for_each(|h| h.worker.terminate());
    let loaded = tabcnn::timer::within(all, std::time::Duration::from_millis(READY_MS)).await;
    // Each worker has fetched its script by now (or never will).
    let _ = web_sys::Url::revoke_object_url(&url);
    match loaded {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            stop(&helpers);
            return Err(format!("a helper worker failed to load: {}", crate::io::js_error(e)));
        }
        None => {
            stop(&helpers);
            return Err(format!("the helper workers did not load within {} s", READY_MS / 1000));
        }
    }
    for h in &helpers {
        h.worker.set_onmessage(None);
        h.worker.set_onerror(None);
    }
    Ok(helpers.into_iter().map(|h| Rc::new(RefCell::new(h))).collect())
}

/// The helpers as one engine's `RemoteLanes`: the pool's helpers when it was lent, and when
/// its step's lanes were set off.
struct Lent {
    helpers: Vec<Shared>,
    started: web_time::Instant,
}

// SAFETY: wasm32 without the atomics feature has one thread in this instance: the engine never
// crosses threads here (Send is asked for by the native engine's thread pool).
unsafe impl Send for Lent {}

impl RemoteLanes for Lent {
    fn count(&self) -> usize {
        self.helpers.len()
    }

    fn prepare(&mut self, arch: Arch, params: usize, images: usize) -> Result<(), String> {
        // Each helper's own heap: its lane (activations, gradient share, scratch), its copy of
        // the weights, and the shared buffer; a wasm heap past 2 GiB a browser may refuse.
        let need = tabcnn::cpu::lane_bytes(images, &tabcnn::model::Layout::new(arch), true) + params as u64 * 4 + Slots::new(params, images).words as u64 * 4;
        if need > MAX_HELPER_BYTES {
            return Err(format!("a helper's lane of {images} images of this network needs {} MiB, past a helper's {} MiB", need >> 20, MAX_HELPER_BYTES >> 20));
        }
        for h in &self.helpers {
            let mut h = h.borrow_mut();
            if h.lost || h.busy() {
                // Its buffer may still be written by a job given up on: never reuse it.
                h.retire();
                return Err(format!("helper worker {} did not answer a lane a step gave up on", h.name));
            }
            let slots = Slots::new(params, images);
            if slots.words > h.slots.words || h.sab.is_none() {
                // A larger buffer: stop the helper's loop on the old one, then send the new.
                if h.sab.is_some() {
                    h.seq += 1;
                    h.head.set_index(CMD, STOP);
                    let _ = Atomics::store(&h.head, SEQ, h.seq);
                    let _ = Atomics::notify(&h.head, SEQ);
                }
                let sab = SharedArrayBuffer::new(slots.words * 4);
                (h.head, h.floats, h.words) = (Int32Array::new(&sab), Float32Array::new(&sab), Uint32Array::new(&sab));
                h.seq = 0;
                h.worker.post_message(&sab).map_err(crate::io::js_error)?;
                h.sab = Some(sab);
            }
            h.slots = slots;
            h.head.set_index(TOTAL, params as i32);
            h.head.set_index(CAP, images as i32);
        }
        Ok(())
    }

    fn start(&mut self, i: usize, arch: Arch, params: &[f32], x: &[f32], y: &[u32], batch: usize) -> Result<(), String> {
        if i == 0 {
            self.started = web_time::Instant::now();
        }
        let mut h = self.helpers[i].borrow_mut();
        // A job goes only to a helper that answered its last one: an answer always belongs to
        // the job its buffer holds.
        if h.lost || h.busy() {
            h.retire();
            return Err(format!("helper worker {} did not answer a lane a step gave up on", h.name));
        }
        let s = h.slots;
        if y.len() > h.head.get_index(CAP) as usize {
            return Err(format!("a lane of {} images in a helper's room for {}", y.len(), h.head.get_index(CAP)));
        }
        for (k, v) in [(N, y.len()), (BATCH, batch), (ARCH, arch.c1), (ARCH + 1, arch.c2), (ARCH + 2, arch.f1), (ARCH + 3, arch.f2)] {
            h.head.set_index(k, v as i32);
        }
        h.floats.subarray(s.params, s.params + params.len() as u32).copy_from(params);
        h.floats.subarray(s.x, s.x + x.len() as u32).copy_from(x);
        h.words.subarray(s.y, s.y + y.len() as u32).copy_from(y);
        h.head.set_index(CMD, JOB);
        h.seq += 1;
        let seq = h.seq;
        Atomics::store(&h.head, SEQ, seq).map_err(crate::io::js_error)?;
        Atomics::notify(&h.head, SEQ).map_err(crate::io::js_error)?;
        Ok(())
    }

    fn finish(&mut self, i: usize, grads: &mut [f32], local: std::time::Duration) -> Result<(f32, u32), String> {
        let mut h = self.helpers[i].borrow_mut();
        let mut limit_ms = (local.as_secs_f64() * 1e3 * LANE_SLOWER as f64).max(LANE_MIN_MS);
        let mut overslept = false;
        // This worker may block (it is not the page's main thread): it sleeps until DONE
        // moves, never spinning.
        loop {
            let done = Atomics::load(&h.head, DONE).map_err(crate::io::js_error)?;
            if done == h.seq {
                break;
            }
            let left = limit_ms - self.started.elapsed().as_secs_f64() * 1e3;
            if left <= 0.0 {
                h.retire();
                return Err(format!(
                    "helper worker {} did not finish its lane within {:.1} s ({LANE_SLOWER} times this thread's own lanes, at least {:.0} s), so it was stopped",
                    h.name,
                    limit_ms / 1e3,
                    LANE_MIN_MS / 1e3
                ));
            }
            // Sleeps while DONE is still what was just read.
            let asleep = web_time::Instant::now();
            let _ = Atomics::wait_with_timeout(&h.head, DONE, done, left);
            // A wait that lasted far past what it asked for: the machine slept (the clock ran on
            // while no thread did). The helper gets its whole time again, once.
            if !overslept && asleep.elapsed().as_secs_f64() * 1e3 > left + 1_000.0 {
                overslept = true;
                limit_ms += self.started.elapsed().as_secs_f64() * 1e3;
            }
        }
        let s = h.slots;
        h.floats.subarray(s.grads, s.grads + grads.len() as u32).copy_to(grads);
        Ok((h.floats.get_index(LOSS), h.head.get_index(CORRECT) as u32))
    }
}
