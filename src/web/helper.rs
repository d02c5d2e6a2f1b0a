//! A helper worker of the CPU engine (worker/helpers.rs starts them where the page is
//! cross-origin isolated): it loads this same wasm, takes one SharedArrayBuffer from the worker
//! that trains, and then computes lanes of its batches (`tabcnn::cpu::engine::LaneWorker`)
//! until told to stop, blocking in Atomics.wait between them (a worker may block; the page's
//! main thread never does).
//!
//! The buffer, in 4-byte words (`Slots`): a header of HEADER words, then
//! params[TOTAL] | grads[TOTAL] | x[CAP, 3, 32, 32] | y[CAP] (u32). The trainer writes a job
//! (N, BATCH, the network, the weights, the images and labels) and bumps SEQ; the helper
//! trains the lane, writes the gradient, LOSS and CORRECT, and sets DONE = SEQ (SEQ tags each
//! job: the trainer takes only the answer with DONE equal to the job it set, and sets a job only
//! in a helper that answered its last one; a helper that misses its deadline is terminated).

use js_sys::{Atomics, Float32Array, Int32Array, SharedArrayBuffer, Uint32Array};
use tabcnn::cpu::engine::LaneWorker;
use tabcnn::model::{Arch, IMG_LEN};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Header words.
pub const SEQ: u32 = 0; // the job number the trainer set (0: none yet)
pub const DONE: u32 = 1; // the job number the helper finished
pub const CMD: u32 = 2; // JOB or STOP
pub const N: u32 = 3; // images in the lane
pub const BATCH: u32 = 4; // the whole batch (the loss is a mean over it)
pub const ARCH: u32 = 5; // c1, c2, f1, f2 in words 5..9
pub const TOTAL: u32 = 9; // parameter floats
pub const CAP: u32 = 10; // images the buffer holds
pub const CORRECT: u32 = 11;
pub const LOSS: u32 = 12; // f32
pub const HEADER: u32 = 16;
pub const JOB: i32 = 1;
pub const STOP: i32 = 2;

/// Word offsets of the regions of a buffer laid out for `total` parameters and `cap` images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slots {
    pub params: u32,
    pub grads: u32,
    pub x: u32,
    pub y: u32,
    pub words: u32,
}

impl Slots {
    pub fn new(total: usize, cap: usize) -> Slots {
        let (total, cap) = (total as u32, cap as u32);
        let params = HEADER;
        let grads = params + total;
        let x = grads + total;
        let y = x + cap * IMG_LEN as u32;
        Slots { params, grads, x, y, words: y + cap }
    }
}

/// The helper's start: wait for the buffer, say it is ready.
pub fn run() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| match e.data().dyn_into::<SharedArrayBuffer>() {
        Ok(sab) => serve(&sab),
        Err(_) => web_sys::console::error_1(&"tabcnn helper: a message that is not a SharedArrayBuffer".into()),
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let _ = scope.post_message(&"ready".into());
}

/// Train the lanes the trainer sets in `sab`, one after another, until STOP (then this
/// returns, and the next message brings a larger buffer).
fn serve(sab: &SharedArrayBuffer) {
    let head = Int32Array::new(sab);
    let floats = Float32Array::new(sab);
    let words = Uint32Array::new(sab);
    let mut last = 0;
    let mut lane: Option<LaneWorker> = None;
    loop {
        // Sleeps while SEQ is still the last job done.
        while Atomics::load(&head, SEQ).unwrap_or(last) == last {
            let _ = Atomics::wait(&head, SEQ, last);
        }
        last = Atomics::load(&head, SEQ).unwrap_or(last);
        if head.get_index(CMD) == STOP {
            return;
        }
        let word = |i: u32| head.get_index(i) as usize;
        let arch = Arch { c1: word(ARCH), c2: word(ARCH + 1), f1: word(ARCH + 2), f2: word(ARCH + 3) };
        let (n, batch, cap) = (word(N), word(BATCH), word(CAP));
        let slots = Slots::new(word(TOTAL), cap);
        let w = match &mut lane {
            Some(w) if w.arch() == arch && w.capacity() >= n => w,
            _ => lane.insert(LaneWorker::new(arch, cap.max(n))),
        };
        let (params, x, y) = w.inputs(n);
        floats.subarray(slots.params, slots.params + params.len() as u32).copy_to(params);
        floats.subarray(slots.x, slots.x + x.len() as u32).copy_to(x);
        words.subarray(slots.y, slots.y + y.len() as u32).copy_to(y);
        let (grads, loss, correct) = w.train(batch);
        // An answer only for the job still set: a trainer that gave up on this one (and set
        // another, or STOP) must not find it in that job's buffers.
        if Atomics::load(&head, SEQ).unwrap_or(last) != last {
            continue;
        }
        floats.subarray(slots.grads, slots.grads + grads.len() as u32).copy_from(grads);
        floats.set_index(LOSS, loss);
        head.set_index(CORRECT, correct as i32);
        let _ = Atomics::store(&head, DONE, last);
        let _ = Atomics::notify(&head, DONE);
    }
}
