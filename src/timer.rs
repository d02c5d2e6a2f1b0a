//! The platform's timers, the one place outside the entry points that knows which platform it
//! is on:
//! - `within`: a deadline on a future, for the GPU readback (`gpu::Pending::wait`) and the
//!   page's storage: a map that never resolves (a hung driver, a GPU process that stopped
//!   answering) must end as an error, not leave the run waiting forever. On the web the
//!   browser's timer races the future (setTimeout on the global object, so a window and a
//!   worker alike); natively `poll`'s own timeout has already enforced the deadline before the
//!   future is awaited, so it is awaited as it is.
//! - `yield_now`: let the event loop run (paint, input) between pieces of long work on the
//!   web, such as the CPU engine's evaluation (a message, not a timer: a hidden tab's timers
//!   are throttled); nothing natively.

use std::future::Future;
use std::time::Duration;

/// `fut`'s output, or None if `limit` passed first.
#[cfg(not(target_arch = "wasm32"))]
pub async fn within<F: Future + Unpin>(fut: F, _limit: Duration) -> Option<F::Output> {
    Some(fut.await)
}

/// `fut`'s output, or None if `limit` passed first.
#[cfg(target_arch = "wasm32")]
pub async fn within<F: Future + Unpin>(fut: F, limit: Duration) -> Option<F::Output> {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};

    let (tx, timer) = futures_channel::oneshot::channel::<()>();
    let fire = Closure::once_into_js(move || {
        let _ = tx.send(());
    });
    let global = js_sys::global();
    let set_timeout = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout")).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(set_timeout) = set_timeout else {
        // No timer here (never the case in a window or a worker): wait without one.
        return Some(fut.await);
    };
    let _ = set_timeout.call2(&global, &fire, &JsValue::from_f64(limit.as_secs_f64() * 1e3));

    /// The first of the two to finish.
    struct Race<F> {
        fut: F,
        timer: futures_channel::oneshot::Receiver<()>,
    }
    impl<F: Future + Unpin> Future for Race<F> {
        type Output = Option<F::Output>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            if let Poll::Ready(v) = Pin::new(&mut self.fut).poll(cx) {
                return Poll::Ready(Some(v));
            }
            match Pin::new(&mut self.timer).poll(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }
    }
    Race { fut, timer }.await
}

/// Let the browser's event loop run before going on (a zero-delay timer); natively, nothing.
#[cfg(not(target_arch = "wasm32"))]
pub async fn yield_now() {}

/// Let the browser's event loop run before going on: a message to ourselves through a
/// MessageChannel (a window's and a worker's alike), not a timer, because a hidden tab's timers
/// are throttled to one a second and an evaluation yields every 100 images. Natively, nothing.
#[cfg(target_arch = "wasm32")]
pub async fn yield_now() {
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    let Ok(channel) = web_sys::MessageChannel::new() else { return };
    let (tx, rx) = futures_channel::oneshot::channel::<()>();
    let arrived = Closure::once_into_js(move |_: JsValue| {
        let _ = tx.send(());
    });
    channel.port1().set_onmessage(Some(arrived.unchecked_ref()));
    let _ = channel.port2().post_message(&JsValue::NULL);
    let _ = rx.await;
    // `channel` lives until here, so both ports stay reachable until the message arrived.
    drop(channel);
}
