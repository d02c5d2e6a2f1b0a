//! The browser's IndexedDB as the page's save file, the page's edge: database "tabcnn" with
//! two object stores keyed by run id: "runs" (each run's small summary, for the run list) and
//! "states" (the whole saved run: weights, momentum, position, curves), whose values are the
//! bytes of `tabcnn::saved::SavedRun`, and "snapshots" (version 2): the weights a run keeps
//! through training, one value a step, keyed `saved::snapshot_key(id, step)`, written once. Each call opens its own transaction and awaits its requests
//! through their success/error events (nothing blocks); a save is done when its transaction
//! commits (`complete`), not when its requests succeed (a quota exceeded at commit aborts it).
//! Opening gives up after OPEN_DEADLINE or when another tab blocks it, and a tab whose run is
//! being trained in another tab learns so through `Claims`.

use crate::io::js_error;
use futures_channel::oneshot;
use js_sys::{Array, Uint8Array};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BroadcastChannel, IdbDatabase, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode, MessageEvent};

const DB: &str = "tabcnn";
const VERSION: u32 = 2;
pub const RUNS: &str = "runs";
pub const STATES: &str = "states";
pub const SNAPSHOTS: &str = "snapshots";
/// Opening the storage may take this long before the page goes on without it.
const OPEN_DEADLINE: Duration = Duration::from_secs(10);

/// Two event handlers and what they say: the first to fire sends true (`ok`) or false
/// (`failed`); later events are ignored.
struct Outcome {
    ok: Closure<dyn FnMut(web_sys::Event)>,
    failed: Closure<dyn FnMut(web_sys::Event)>,
    rx: oneshot::Receiver<bool>,
}

fn outcome() -> Outcome {
    let (tx, rx) = oneshot::channel::<bool>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let send = |v: bool| {
        let tx = tx.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(t) = tx.borrow_mut().take() {
                let _ = t.send(v);
            }
        })
    };
    Outcome { ok: send(true), failed: send(false), rx }
}

/// Wait for a request's success (its result) or error (its message).
async fn done(req: &IdbRequest) -> Result<JsValue, String> {
    let o = outcome();
    req.set_onsuccess(Some(o.ok.as_ref().unchecked_ref()));
    req.set_onerror(Some(o.failed.as_ref().unchecked_ref()));
    let good = o.rx.await.unwrap_or(false);
    req.set_onsuccess(None);
    req.set_onerror(None);
    if good {
        req.result().map_err(js_error)
    } else {
        Err(req.error().ok().flatten().map(|e| e.message()).unwrap_or_else(|| "the request failed".into()))
    }
}

/// The database, created on first use. Another tab holding an older version open blocks it,
/// and a browser that never answers stalls it: either is an error after which the page goes
/// on without storage, instead of waiting before it loads anything.
pub async fn open() -> Result<IdbDatabase, String> {
    // The worker that owns the run opens it (a window would too).
    let global = js_sys::global();
    let f = match global.dyn_ref::<web_sys::Window>() {
        Some(w) => w.indexed_db(),
        None => global.unchecked_ref::<web_sys::WorkerGlobalScope>().indexed_db(),
    };
    let f = f.map_err(js_error)?.ok_or("this browser keeps no IndexedDB here (a private window?)")?;
    let req: IdbOpenDbRequest = f.open_with_u32(DB, VERSION).map_err(js_error)?;
    let up = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        let db = e.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()).and_then(|r| r.result().ok()).and_then(|d| d.dyn_into::<IdbDatabase>().ok());
        if let Some(db) = db {
            for s in [RUNS, STATES, SNAPSHOTS] {
                if !db.object_store_names().contains(s) {
                    let _ = db.create_object_store(s);
                }
            }
        }
    });
    req.set_onupgradeneeded(Some(up.as_ref().unchecked_ref()));
    let (tx, blocked) = oneshot::channel::<()>();
    let tx = RefCell::new(Some(tx));
    let on_blocked = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if let Some(t) = tx.borrow_mut().take() {
            let _ = t.send(());
        }
    });
    req.set_onblocked(Some(on_blocked.as_ref().unchecked_ref()));
    let opened = Box::pin(done(&req));
    let first = tabcnn::timer::within(Box::pin(Race { a: opened, b: blocked }), OPEN_DEADLINE).await;
    req.set_onupgradeneeded(None);
    req.set_onblocked(None);
    let db = match first {
        None => return Err(format!("the browser's storage (IndexedDB) did not open within {} s", OPEN_DEADLINE.as_secs())),
        Some(None) => return Err("another tab of this page holds the browser's storage open in an older version (close it or reload it)".into()),
        Some(Some(r)) => r.map_err(|e| format!("opening the browser's storage (IndexedDB) failed: {e}"))?,
    };
    let db: IdbDatabase = db.dyn_into().map_err(|_| "IndexedDB gave no database".to_string())?;
    // A newer version of the page in another tab wants to upgrade: let it (this tab's saves
    // then fail, and say so, rather than blocking that tab).
    let me = db.clone();
    let close = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| me.close());
    db.set_onversionchange(Some(close.as_ref().unchecked_ref()));
    close.forget();
    Ok(db)
}

/// The first of two futures: Some(a's output), or None when `b` (a signal) comes first.
struct Race<A, B> {
    a: A,
    b: B,
}

impl<A: std::future::Future + Unpin, B: std::future::Future + Unpin> std::future::Future for Race<A, B> {
    type Output = Option<A::Output>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        if let Poll::Ready(v) = std::pin::Pin::new(&mut self.a).poll(cx) {
            return Poll::Ready(Some(v));
        }
        match std::pin::Pin::new(&mut self.b).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Wait for a read-write transaction to commit (`complete`), or for its `abort` with the
/// reason (a quota exceeded at commit, a closed database).
async fn committed(tx: &IdbTransaction) -> Result<(), String> {
    let o = outcome();
    tx.set_oncomplete(Some(o.ok.as_ref().unchecked_ref()));
    tx.set_onabort(Some(o.failed.as_ref().unchecked_ref()));
    tx.set_onerror(Some(o.failed.as_ref().unchecked_ref()));
    let good = o.rx.await.unwrap_or(false);
    tx.set_oncomplete(None);
    tx.set_onabort(None);
    tx.set_onerror(None);
    match good {
        true => Ok(()),
        false => Err(tx.error().map(|e| format!("{}: {}", e.name(), e.message())).unwrap_or_else(|| "the transaction was aborted".into())),
    }
}

/// Save a run: its summary and its whole state, the timeline's new snapshots (key, bytes) and
/// the removal of those it thinned out, in one transaction (all or nothing).
pub async fn put(db: &IdbDatabase, id: &str, summary: &[u8], state: &[u8], new_snaps: &[(String, Vec<u8>)], gone_snaps: &[String]) -> Result<(), String> {
    let stores = Array::of3(&RUNS.into(), &STATES.into(), &SNAPSHOTS.into());
    let tx = db.transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite).map_err(js_error)?;
    tx.object_store(RUNS).map_err(js_error)?.put_with_key(&Uint8Array::from(summary), &id.into()).map_err(js_error)?;
    tx.object_store(STATES).map_err(js_error)?.put_with_key(&Uint8Array::from(state), &id.into()).map_err(js_error)?;
    let snaps = tx.object_store(SNAPSHOTS).map_err(js_error)?;
    for (key, bytes) in new_snaps {
        snaps.put_with_key(&Uint8Array::from(bytes.as_slice()), &key.into()).map_err(js_error)?;
    }
    for key in gone_snaps {
        snaps.delete(&key.into()).map_err(js_error)?;
    }
    committed(&tx).await.map_err(|e| format!("saving the run in the browser failed ({e})"))
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

/// The keys of every snapshot stored under run `id` (`saved::snapshot_key(id, step)`: from
/// "id@" up to "id@\u{ffff}").
fn snapshots_of(id: &str) -> Result<web_sys::IdbKeyRange, String> {
    web_sys::IdbKeyRange::bound(&format!("{id}@").into(), &format!("{id}@\u{ffff}").into()).map_err(js_error)
}

/// Drop a run's timeline if `check` agrees, in one transaction: its stored state is read, and
/// within the read's own event (no other tab can write between) `check` is given it. With
/// Some(rewritten state) the run's snapshots are deleted and, unless `delete_only`, its summary
/// and state rewritten to list none (`delete_only` frees space where the store is full: a
/// transaction that puts may be refused then). None leaves the run as it is (it was saved
/// again meanwhile, say). What `check` gave, once committed.
pub async fn drop_history_if(db: &IdbDatabase, id: &str, delete_only: bool, check: impl FnOnce(&[u8]) -> Option<(Vec<u8>, Vec<u8>)> + 'static) -> Result<bool, String> {
    let stores = Array::of3(&RUNS.into(), &STATES.into(), &SNAPSHOTS.into());
    let tx = db.transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite).map_err(js_error)?;
    let req = tx.object_store(STATES).map_err(js_error)?.get(&id.into()).map_err(js_error)?;
    let acted = Rc::new(std::cell::Cell::new(false));
    let (t, r, a, key) = (tx.clone(), req.clone(), acted.clone(), id.to_string());
    let on_read = Closure::once_into_js(move || {
        let bytes = r.result().ok().filter(|v| !v.is_undefined()).map(|v| Uint8Array::new(&v).to_vec());
        let Some((summary, state)) = bytes.and_then(|b| check(&b)) else {
            let _ = t.abort();
            return;
        };
        let put = |store: &str, b: &[u8]| t.object_store(store).and_then(|s| s.put_with_key(&Uint8Array::from(b), &JsValue::from_str(&key)));
        let deleted = snapshots_of(&key).map_err(JsValue::from).and_then(|range| t.object_store(SNAPSHOTS).and_then(|s| s.delete(&range)));
        let written = if delete_only { Ok(()) } else { put(RUNS, &summary).and_then(|_| put(STATES, &state)).map(|_| ()) };
        match (deleted, written) {
            (Ok(_), Ok(())) => a.set(true),
            _ => {
                let _ = t.abort();
            }
        }
    });
    req.set_onsuccess(Some(on_read.unchecked_ref()));
    let done = committed(&tx).await;
    req.set_onsuccess(None);
    match (done, acted.get()) {
        (Ok(()), true) => Ok(true),
        (Ok(()), false) | (Err(_), false) => Ok(false),
        (Err(e), true) => Err(e),
    }
}

/// What the browser says this page's storage uses and may use, in bytes (None where it says
/// nothing: `navigator.storage` is missing in some private windows).
pub async fn estimate() -> Option<(f64, f64)> {
    let nav = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let storage = js_sys::Reflect::get(&nav, &"storage".into()).ok().filter(|s| s.is_object())?;
    let f: js_sys::Function = js_sys::Reflect::get(&storage, &"estimate".into()).ok()?.dyn_into().ok()?;
    let p: js_sys::Promise = f.call0(&storage).ok()?.dyn_into().ok()?;
    let e = wasm_bindgen_futures::JsFuture::from(p).await.ok()?;
    let num = |k: &str| js_sys::Reflect::get(&e, &k.into()).ok()?.as_f64().filter(|v| v.is_finite() && *v >= 0.0);
    Some((num("usage")?, num("quota")?))
}

/// Forget a run and every snapshot stored under its key (`saved::snapshot_key(id, step)`:
/// the keys from "id@" up to "id@\u{ffff}"), listed in its record or not.
pub async fn delete(db: &IdbDatabase, id: &str) -> Result<(), String> {
    let stores = Array::of3(&RUNS.into(), &STATES.into(), &SNAPSHOTS.into());
    let tx = db.transaction_with_str_sequence_and_mode(&stores, IdbTransactionMode::Readwrite).map_err(js_error)?;
    tx.object_store(RUNS).map_err(js_error)?.delete(&id.into()).map_err(js_error)?;
    tx.object_store(STATES).map_err(js_error)?.delete(&id.into()).map_err(js_error)?;
    tx.object_store(SNAPSHOTS).map_err(js_error)?.delete(&JsValue::from(snapshots_of(id)?)).map_err(js_error)?;
    committed(&tx).await
}

/// Delete these keys of one store.
pub async fn delete_keys(db: &IdbDatabase, store: &str, keys: &[String]) -> Result<(), String> {
    let tx = db.transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite).map_err(js_error)?;
    let s = tx.object_store(store).map_err(js_error)?;
    for key in keys {
        s.delete(&key.into()).map_err(js_error)?;
    }
    committed(&tx).await
}

/// Which saved runs another tab of this page is training (and saving): each tab asks on a
/// BroadcastChannel when it starts saving a run, and a tab that already saves it answers. The
/// tab that came second then saves no more, and says so, so two tabs never write one run.
pub struct Claims {
    channel: BroadcastChannel,
    /// The run this tab saves.
    mine: Rc<RefCell<Option<String>>>,
    /// Runs another tab answered for.
    elsewhere: Rc<RefCell<HashSet<String>>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Claims {
    pub fn new() -> Option<Claims> {
        let channel = BroadcastChannel::new("tabcnn-runs").ok()?;
        let (mine, elsewhere) = (Rc::new(RefCell::new(None::<String>)), Rc::new(RefCell::new(HashSet::new())));
        let (m, e, reply) = (mine.clone(), elsewhere.clone(), channel.clone());
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let msg = ev.data().as_string().unwrap_or_default();
            if let Some(id) = msg.strip_prefix("ask:") {
                if m.borrow().as_deref() == Some(id) {
                    let _ = reply.post_message(&JsValue::from_str(&format!("saved-by-another-tab:{id}")));
                }
            } else if let Some(id) = msg.strip_prefix("saved-by-another-tab:") {
                e.borrow_mut().insert(id.to_string());
                if m.borrow().as_deref() == Some(id) {
                    *m.borrow_mut() = None;
                }
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Some(Claims { channel, mine, elsewhere, _on_message: on_message })
    }

    /// This tab saves run `id` from now on, unless another tab answers that it does.
    pub fn claim(&self, id: &str) {
        if self.mine.borrow().as_deref() != Some(id) {
            self.elsewhere.borrow_mut().remove(id);
            *self.mine.borrow_mut() = Some(id.to_string());
            let _ = self.channel.post_message(&JsValue::from_str(&format!("ask:{id}")));
        }
    }

    /// Another tab saves run `id`.
    pub fn elsewhere(&self, id: &str) -> bool {
        self.elsewhere.borrow().contains(id)
    }
}
