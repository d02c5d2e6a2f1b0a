//! The edge between the page's two threads: a `tabcnn::wire` message becomes one JS object,
//! `{msg: Uint8Array, bulk: [typed arrays], file?}`, posted with the buffers in the transfer
//! list (moved to the other thread, not copied), and is read back there. A File (a dropped
//! archive) rides beside the message: the browser clones its handle, not its bytes.

use js_sys::{Array, Float32Array, Object, Reflect, Uint32Array, Uint8Array};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tabcnn::wire::{self, Bulk, FromWorker, ToWorker};
use wasm_bindgen::{JsCast, JsValue};

/// The message as a JS object, and the buffers to transfer with it.
fn to_js<T: Serialize>(msg: &T, file: Option<&JsValue>) -> Result<(JsValue, Array), String> {
    let (packed, bulk) = wire::encode(msg)?;
    let (arrays, transfer) = (Array::new(), Array::new());
    let packed = Uint8Array::from(&packed[..]);
    transfer.push(&packed.buffer());
    for b in bulk {
        // One copy out of wasm memory into a fresh ArrayBuffer, which then moves.
        let (a, buf): (JsValue, JsValue) = match b {
            Bulk::F32(v) => {
                let a = Float32Array::from(&v[..]);
                (a.clone().into(), a.buffer().into())
            }
            Bulk::U8(v) => {
                let a = Uint8Array::from(&v[..]);
                (a.clone().into(), a.buffer().into())
            }
            Bulk::U32(v) => {
                let a = Uint32Array::from(&v[..]);
                (a.clone().into(), a.buffer().into())
            }
        };
        arrays.push(&a);
        transfer.push(&buf);
    }
    let obj = Object::new();
    let _ = Reflect::set(&obj, &"msg".into(), &packed);
    let _ = Reflect::set(&obj, &"bulk".into(), &arrays);
    if let Some(f) = file {
        let _ = Reflect::set(&obj, &"file".into(), f);
    }
    Ok((obj.into(), transfer))
}

/// A message posted by the other thread, and the File beside it if any.
pub fn from_js<T: DeserializeOwned>(data: &JsValue) -> Result<(T, Option<JsValue>), String> {
    let packed = Reflect::get(data, &"msg".into()).ok().and_then(|m| m.dyn_into::<Uint8Array>().ok()).ok_or("a message that is not the page's (no msg)")?.to_vec();
    let mut bulk = Vec::new();
    if let Ok(arrays) = Reflect::get(data, &"bulk".into()).and_then(|a| a.dyn_into::<Array>()) {
        for a in arrays.iter() {
            bulk.push(if let Some(f) = a.dyn_ref::<Float32Array>() {
                Bulk::F32(f.to_vec())
            } else if let Some(u) = a.dyn_ref::<Uint8Array>() {
                Bulk::U8(u.to_vec())
            } else if let Some(u) = a.dyn_ref::<Uint32Array>() {
                Bulk::U32(u.to_vec())
            } else {
                return Err("a message's buffer is not a Float32Array, Uint8Array or Uint32Array".into());
            });
        }
    }
    let file = Reflect::get(data, &"file".into()).ok().filter(|f| !f.is_undefined());
    Ok((wire::decode(&packed, bulk)?, file))
}

/// Main thread -> worker.
pub fn to_worker(w: &web_sys::Worker, msg: &ToWorker, file: Option<&JsValue>) -> Result<(), String> {
    let (obj, transfer) = to_js(msg, file)?;
    w.post_message_with_transfer(&obj, &transfer).map_err(crate::io::js_error)
}

/// Worker -> main thread.
pub fn to_page(msg: &FromWorker) {
    match to_js(msg, None) {
        Ok((obj, transfer)) => {
            let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
            if let Err(e) = scope.post_message_with_transfer(&obj, &transfer) {
                web_sys::console::error_1(&format!("tabcnn worker: a message to the page failed: {}", crate::io::js_error(e)).into());
            }
        }
        Err(e) => web_sys::console::error_1(&format!("tabcnn worker: {e}").into()),
    }
}
