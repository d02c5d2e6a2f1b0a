//! tabcnn-web: the in-tab app. trunk compiles this binary to wasm (index.html names it); the
//! page then trains with the same engine (src/train.rs, src/gpu/, shaders/) on WebGPU, or on
//! the CPU engine where the browser has no WebGPU. The browser-free logic is in src/app.rs.
//!
//! - `page`: the controls, the #metrics element and the training loop on the event loop.
//! - `classroom`: the views' click, file and drawing handlers, model download/upload, saved-run buttons.
//! - `draw`: the canvas drawings (progress, curves, prediction grid, per-class bars).
//! - `io`: fetch with progress, reading a picked or dropped file, decoding a picture, downloads, timers.
//! - `store`: the browser's IndexedDB, where every run is kept to resume after a reload.

#[cfg(target_arch = "wasm32")]
mod classroom;
#[cfg(target_arch = "wasm32")]
mod draw;
#[cfg(target_arch = "wasm32")]
mod io;
#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
mod store;

#[cfg(target_arch = "wasm32")]
fn main() {
    page::install_panic_hook();
    wasm_bindgen_futures::spawn_local(page::run());
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("tabcnn-web is the in-tab app: build and serve it with `bash scripts/serve.sh` (trunk), then open the URL it prints.");
    std::process::exit(2);
}
