//! Browser I/O, the page's edge: fetching a file from the page's server with progress,
//! reading a picked or dropped file in slices, and a timer to yield to the event loop.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, ReadableStreamDefaultReader, Response};

/// A JS exception or rejection as text.
pub fn js_error(e: JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_else(|| format!("{e:?}"))
}

fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

/// Resolve after `ms` milliseconds: lets the browser handle input and paint between chunks.
pub async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

/// Fetch `url` and hand its body to `sink` as it arrives: (bytes, bytes so far, total if the
/// server said). A missing file, an HTTP error or a web page where data was expected is an
/// error naming the URL.
pub async fn fetch_stream(url: &str, mut sink: impl FnMut(&[u8], u64, Option<u64>) -> Result<(), String>) -> Result<u64, String> {
    let resp = JsFuture::from(window().fetch_with_str(url)).await.map_err(|e| format!("{url}: the request failed: {}", js_error(e)))?;
    let resp: Response = resp.dyn_into().map_err(|_| format!("{url}: not an HTTP response"))?;
    if !resp.ok() {
        return Err(format!("{url}: not on this server ({} {})", resp.status(), resp.status_text()));
    }
    let headers = resp.headers();
    let kind = headers.get("content-type").ok().flatten().unwrap_or_default();
    if kind.starts_with("text/html") {
        // Development servers answer a missing file with the app's own page.
        return Err(format!("{url}: not on this server (it answered with a web page)"));
    }
    let total = headers.get("content-length").ok().flatten().and_then(|s| s.parse().ok());
    let body = resp.body().ok_or_else(|| format!("{url}: the response has no body"))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().dyn_into().map_err(|_| format!("{url}: cannot read the response"))?;
    let mut got = 0u64;
    loop {
        let r = JsFuture::from(reader.read()).await.map_err(|e| format!("{url}: the download broke off after {got} bytes: {}", js_error(e)))?;
        if Reflect::get(&r, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            break;
        }
        let chunk: Uint8Array = Reflect::get(&r, &"value".into()).map_err(js_error)?.dyn_into().map_err(|_| format!("{url}: unexpected body chunk"))?;
        let bytes = chunk.to_vec();
        got += bytes.len() as u64;
        sink(&bytes, got, total)?;
    }
    Ok(got)
}

/// The whole body of `url`.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    fetch_stream(url, |b, _, _| {
        out.extend_from_slice(b);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Read a file the visitor picked or dropped in 4 MiB slices: (bytes, bytes so far, size).
pub async fn read_file(file: &File, mut sink: impl FnMut(&[u8], u64, u64) -> Result<(), String>) -> Result<(), String> {
    const SLICE: u64 = 4 << 20;
    let size = file.size() as u64;
    let mut at = 0u64;
    while at < size {
        let end = (at + SLICE).min(size);
        let blob = file.slice_with_f64_and_f64(at as f64, end as f64).map_err(|e| format!("{}: {}", file.name(), js_error(e)))?;
        let buf = JsFuture::from(blob.array_buffer()).await.map_err(|e| format!("{}: cannot read the file: {}", file.name(), js_error(e)))?;
        sink(&Uint8Array::new(&buf).to_vec(), end, size)?;
        at = end;
    }
    Ok(())
}
