//! tabcnn-web: the in-tab app. trunk compiles this binary to wasm (index.html names it). The
//! page's main thread runs `page` (the DOM, the controls, the drawing) and starts a module
//! worker that loads this same wasm and runs `worker` (the dataset, the engines, the session,
//! the saves): the two talk in `tabcnn::wire` messages. The browser-free logic is in src/app.rs.
//!
//! Main thread:
//! - `page`: starts the worker and shows what it sends (#metrics, the engine panel, the grid).
//! - `ui`: the main thread's state and `send` (to the worker); `charts`: the curves.
//! - `control`: the controls and the settings they send.
//! - `classroom`: the views' clicks, your own picture, model download and upload, and their drawing.
//! - `runs`: the saved runs' table, the resume offer, the overlays.
//! - `dom`: element helpers; `draw`: the canvas drawings.
//!
//! Both threads:
//! - `bridge`: a wire message as a JS object, its arrays transferred.
//! - `io`: fetch with progress, reading a picked or dropped file, a picture, downloads, timers.
//! - `store`: the browser's IndexedDB, where every run is kept to resume after a reload (the
//!   worker opens it).
//!
//! Worker: `worker` (its own modules: runner, engines, helpers, dataset, saves, views).
//! Its helpers (where the page is cross-origin isolated): `helper`, lanes of the CPU engine.

#[cfg(target_arch = "wasm32")]
mod bridge;
#[cfg(target_arch = "wasm32")]
mod charts;
#[cfg(target_arch = "wasm32")]
mod classroom;
#[cfg(target_arch = "wasm32")]
mod compute_view;
#[cfg(target_arch = "wasm32")]
mod control;
#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod draw;
#[cfg(target_arch = "wasm32")]
mod gradients_view;
#[cfg(target_arch = "wasm32")]
mod helper;
#[cfg(target_arch = "wasm32")]
mod io;
#[cfg(target_arch = "wasm32")]
mod looks_view;
#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod runs;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod timeline_view;
#[cfg(target_arch = "wasm32")]
mod ui;
#[cfg(target_arch = "wasm32")]
mod worker;

/// In a window: the page; in the worker it starts: the run; in that worker's helpers (named
/// tabcnn-helper-i): the CPU engine's lanes.
#[cfg(target_arch = "wasm32")]
fn main() {
    use wasm_bindgen::JsCast;
    let name = js_sys::global().dyn_into::<web_sys::DedicatedWorkerGlobalScope>().map(|g| g.name()).unwrap_or_default();
    if web_sys::window().is_some() {
        page::install_panic_hook();
        page::run();
    } else if name.starts_with("tabcnn-helper") {
        console_error_panic_hook::set_once();
        helper::run();
    } else {
        worker::run();
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("tabcnn-web is the in-tab app: build and serve it with `bash scripts/serve.sh` (trunk), then open the URL it prints.");
    std::process::exit(2);
}
