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
/// How long a lane may take before its helper counts as gone (a wide network's lane of 512
/// images is seconds of work; a helper that crashed never answers).
const LANE_MS: f64 = 30_000.0;

/// One helper: its worker and the buffer it works in.
struct Helper {
    worker: web_sys::Worker,
    sab: Option<SharedArrayBuffer>,
    head: Int32Array,
    floats: Float32Array,
    words: Uint32Array,
    slots: Slots,
    seq: i32,
}

/// The started helpers, shared by the CPU engines the worker makes (one trains at a time).
#[derive(Clone)]
pub(crate) struct Helpers(Rc<RefCell<Vec<Helper>>>);

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
    /// Start `count` helpers and wait until each has loaded (None if any fails to).
    pub(crate) async fn start(count: usize) -> Result<Helpers, String> {
        let boot = Reflect::get(&js_sys::global(), &"tabcnnBoot".into()).map_err(|_| "no tabcnnBoot")?;
        let field = |k: &str| Reflect::get(&boot, &k.into()).ok().and_then(|v| v.as_string()).ok_or_else(|| format!("tabcnnBoot.{k} is missing"));
        let quote = |s: &str| serde_json::to_string(s).expect("a string");
        let src = format!("const app = await import({});\nawait app.default({{ module_or_path: {} }});\n", quote(&field("js")?), quote(&field("wasm")?));
        let parts = js_sys::Array::of1(&JsValue::from_str(&src));
        let opts = web_sys::BlobPropertyBag::new();
        opts.set_type("text/javascript");
        let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts).map_err(crate::io::js_error)?;
        let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(crate::io::js_error)?;
        let mut helpers = Vec::new();
        let mut ready = Vec::new();
        for i in 0..count {
            let wo = web_sys::WorkerOptions::new();
            wo.set_type(web_sys::WorkerType::Module);
            wo.set_name(&format!("tabcnn-helper-{i}"));
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
                sab: None,
                head: Int32Array::new(&empty),
                floats: Float32Array::new(&empty),
                words: Uint32Array::new(&empty),
                slots: Slots::new(0, 0),
                seq: 0,
            });
        }
        let all = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::all(&ready.into_iter().collect::<js_sys::Array>()));
        let stop = |h: &[Helper]| h.iter().for_each(|h| h.worker.terminate());
        match tabcnn::timer::within(all, std::time::Duration::from_millis(READY_MS)).await {
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
        Ok(Helpers(Rc::new(RefCell::new(helpers))))
    }

    /// How many helpers there are.
    pub(crate) fn count(&self) -> usize {
        self.0.borrow().len()
    }

    /// Lanes for one engine: these helpers, lent.
    pub(crate) fn lanes(&self) -> Box<dyn RemoteLanes + Send> {
        Box::new(Lent(self.clone()))
    }
}

/// The helpers as an engine's `RemoteLanes`.
struct Lent(Helpers);

// SAFETY: wasm32 without the atomics feature has one thread in this instance: the engine never
// crosses threads here (Send is asked for by the native engine's thread pool).
unsafe impl Send for Lent {}

impl RemoteLanes for Lent {
    fn count(&self) -> usize {
        self.0 .0.borrow().len()
    }

    fn prepare(&mut self, _arch: Arch, params: usize, images: usize) -> Result<(), String> {
        for h in self.0 .0.borrow_mut().iter_mut() {
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
        let mut all = self.0 .0.borrow_mut();
        let h = &mut all[i];
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
        Atomics::store(&h.head, SEQ, h.seq).map_err(crate::io::js_error)?;
        Atomics::notify(&h.head, SEQ).map_err(crate::io::js_error)?;
        Ok(())
    }

    fn finish(&mut self, i: usize, grads: &mut [f32]) -> Result<(f32, u32), String> {
        let all = self.0 .0.borrow();
        let h = &all[i];
        // This worker may block (it is not the page's main thread): wait for DONE to move on.
        let start = web_time::Instant::now();
        while Atomics::load(&h.head, DONE).map_err(crate::io::js_error)? != h.seq {
            let left = LANE_MS - start.elapsed().as_secs_f64() * 1e3;
            if left <= 0.0 {
                return Err(format!("helper worker {i} did not finish its lane within {} s", LANE_MS / 1e3));
            }
            let _ = Atomics::wait_with_timeout(&h.head, DONE, h.seq - 1, left);
        }
        let s = h.slots;
        h.floats.subarray(s.grads, s.grads + grads.len() as u32).copy_to(grads);
        Ok((h.floats.get_index(LOSS), h.head.get_index(CORRECT) as u32))
    }
}
