//! The browser's IndexedDB as the page's save file, the page's edge: database "tabcnn" with
//! two object stores keyed by run id: "runs" (each run's small summary, for the run list) and
//! "states" (the whole saved run: weights, momentum, position, curves). Values are the bytes
//! of `tabcnn::saved::SavedRun`. Each call opens its own transaction and awaits its requests
//! through their success/error events (nothing blocks).

use crate::io::js_error;
use futures_channel::oneshot;
use js_sys::{Array, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{IdbDatabase, IdbOpenDbRequest, IdbRequest, IdbTransactionMode};

const DB: &str = "tabcnn";
const VERSION: u32 = 1;
pub const RUNS: &str = "runs";
pub const STATES: &str = "states";

/// Wait for a request's success (its result) or error (its message).
async fn done(req: &IdbRequest) -> Result<JsValue, String> {
    let (tx, rx) = oneshot::channel::<bool>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let t = tx.clone();
    let ok = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if let Some(t) = t.borrow_mut().take() {
            let _ = t.send(true);
        }
    });
    let err = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if let Some(t) = tx.borrow_mut().take() {
            let _ = t.send(false);
        }
    });
    req.set_onsuccess(Some(ok.as_ref().unchecked_ref()));
    req.set_onerror(Some(err.as_ref().unchecked_ref()));
    let good = rx.await.unwrap_or(false);
    req.set_onsuccess(None);
    req.set_onerror(None);
    if good {
        req.result().map_err(js_error)
    } else {
        Err(req.error().ok().flatten().map(|e| e.message()).unwrap_or_else(|| "the request failed".into()))
    }
}

/// The database, created on first use.
pub async fn open() -> Result<IdbDatabase, String> {
    let w = web_sys::window().ok_or("no window")?;
    let f = w.indexed_db().map_err(js_error)?.ok_or("this browser keeps no IndexedDB here (a private window?)")?;
    let req: IdbOpenDbRequest = f.open_with_u32(DB, VERSION).map_err(js_error)?;
    let up = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        let db = e.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()).and_then(|r| r.result().ok()).and_then(|d| d.dyn_into::<IdbDatabase>().ok());
        if let Some(db) = db {
            for s in [RUNS, STATES] {
                if !db.object_store_names().contains(s) {
                    let _ = db.create_object_store(s);
                }
            }
        }
    });
    req.set_onupgradeneeded(Some(up.as_ref().unchecked_ref()));
    let db = done(&req).await.map_err(|e| format!("opening the browser's storage (IndexedDB) failed: {e}"))?;
    req.set_onupgradeneeded(None);
    db.dyn_into().map_err(|_| "IndexedDB gave no database".to_string())
}

/// Save a run: its summary and its whole state, in one transaction (both or neither).
pub async fn put(db: &IdbDatabase, id: &str, summary: &[u8], state: &[u8]) -> Result<(), String> {
    let stores = Array::of2(&RUNS.into(), &STATES.into());
    let tx = db.transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite).map_err(js_error)?;
    let a = tx.object_store(RUNS).map_err(js_error)?.put_with_key(&Uint8Array::from(summary), &id.into()).map_err(js_error)?;
    let b = tx.object_store(STATES).map_err(js_error)?.put_with_key(&Uint8Array::from(state), &id.into()).map_err(js_error)?;
    done(&a).await?;
    done(&b).await.map(|_| ()).map_err(|e| format!("saving the run in the browser failed: {e}"))
}

/// One stored value, if there.
pub async fn get(db: &IdbDatabase, store: &str, id: &str) -> Result<Option<Vec<u8>>, String> {
    let tx = db.transaction_with_str(store).map_err(js_error)?;
    let v = done(&tx.object_store(store).map_err(js_error)?.get(&id.into()).map_err(js_error)?).await?;
    Ok(if v.is_undefined() { None } else { Some(Uint8Array::new(&v).to_vec()) })
}

/// Every value of a store with its key.
pub async fn all(db: &IdbDatabase, store: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let tx = db.transaction_with_str(store).map_err(js_error)?;
    let s = tx.object_store(store).map_err(js_error)?;
    let keys: Array = done(&s.get_all_keys().map_err(js_error)?).await?.dyn_into().map_err(|_| "keys".to_string())?;
    let vals: Array = done(&s.get_all().map_err(js_error)?).await?.dyn_into().map_err(|_| "values".to_string())?;
    Ok(keys.iter().zip(vals.iter()).map(|(k, v)| (k.as_string().unwrap_or_default(), Uint8Array::new(&v).to_vec())).collect())
}

/// Forget a run.
pub async fn delete(db: &IdbDatabase, id: &str) -> Result<(), String> {
    let stores = Array::of2(&RUNS.into(), &STATES.into());
    let tx = db.transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite).map_err(js_error)?;
    let a = tx.object_store(RUNS).map_err(js_error)?.delete(&id.into()).map_err(js_error)?;
    let b = tx.object_store(STATES).map_err(js_error)?.delete(&id.into()).map_err(js_error)?;
    done(&a).await?;
    done(&b).await.map(|_| ())
}
