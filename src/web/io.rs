//! Browser I/O, the page's edge: fetching a file from the page's server with progress and
//! reading a picked or dropped file in slices (in the window or the worker alike), a timer;
//! and, in the window only, decoding a picture and offering a download.

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

/// Resolve after `ms` milliseconds (a timer on the global object: a window's or a worker's).
pub async fn sleep_ms(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        match Reflect::get(&global, &"setTimeout".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()) {
            Some(f) => {
                let _ = f.call2(&global, &resolve, &JsValue::from(ms));
            }
            // No timer (never so in a window or a worker): go on at once rather than never.
            None => {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
    });
    let _ = JsFuture::from(p).await;
}

/// `fetch(url)` on the global object: the page's window, or the worker that owns the run.
fn global_fetch(url: &str) -> js_sys::Promise {
    let global = js_sys::global();
    match global.dyn_ref::<web_sys::Window>() {
        Some(w) => w.fetch_with_str(url),
        None => global.unchecked_ref::<web_sys::WorkerGlobalScope>().fetch_with_str(url),
    }
}

/// Fetch `url` and hand its body to `sink` as it arrives: (bytes, bytes so far, total if the
/// server said). A missing file, an HTTP error or a web page where data was expected is an
/// error naming the URL.
pub async fn fetch_stream(url: &str, mut sink: impl FnMut(&[u8], u64, Option<u64>) -> Result<(), String>) -> Result<u64, String> {
    let resp = JsFuture::from(global_fetch(url)).await.map_err(|e| format!("{url}: the request failed: {}", js_error(e)))?;
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

/// Where the visitor's own picture comes from.
pub enum Picture<'a> {
    /// A picked or dropped file (PNG, JPEG, GIF, BMP or WebP, its size checked first).
    File(&'a web_sys::Blob, String),
    /// The drawing canvas.
    Canvas(&'a web_sys::HtmlCanvasElement),
}

/// The picture as the network's input: decoded by the browser, its centre square cut out,
/// scaled to 32x32 with the browser's high-quality resize, composited over white, as a u8
/// CHW record [3,32,32]. A file the browser cannot decode is an error naming it.
pub async fn picture_record(pic: Picture<'_>) -> Result<Vec<u8>, String> {
    let w = window();
    let (full, name) = match pic {
        Picture::File(blob, name) => {
            // Its size and its header's declared pixels first: nothing huge is decoded.
            let head = blob.slice_with_i32_and_i32(0, tabcnn::picture::HEADER_BYTES as i32).map_err(|e| format!("{name}: {}", js_error(e)))?;
            let head = JsFuture::from(head.array_buffer()).await.map_err(|e| format!("{name}: cannot read the file: {}", js_error(e)))?;
            tabcnn::picture::check(&name, blob.size() as u64, &Uint8Array::new(&head).to_vec())?;
            let p = w.create_image_bitmap_with_blob(blob).map_err(|e| format!("{name}: {}", js_error(e)))?;
            let b = JsFuture::from(p).await.map_err(|_| format!("{name}: not an image this browser can read (try PNG or JPEG)"))?;
            (b.dyn_into::<web_sys::ImageBitmap>().map_err(|_| format!("{name}: not an image"))?, name)
        }
        Picture::Canvas(c) => {
            let p = w.create_image_bitmap_with_html_canvas_element(c).map_err(|e| format!("the drawing: {}", js_error(e)))?;
            let b = JsFuture::from(p).await.map_err(|e| format!("the drawing: {}", js_error(e)))?;
            (b.dyn_into::<web_sys::ImageBitmap>().map_err(|_| "the drawing: not an image".to_string())?, "the drawing".to_string())
        }
    };
    let (iw, ih) = (full.width() as i32, full.height() as i32);
    if iw == 0 || ih == 0 {
        return Err(format!("{name}: the image is empty (0 pixels)"));
    }
    let side = iw.min(ih);
    let opts = web_sys::ImageBitmapOptions::new();
    opts.set_resize_width(32);
    opts.set_resize_height(32);
    opts.set_resize_quality(web_sys::ResizeQuality::High);
    let p = w
        .create_image_bitmap_with_image_bitmap_and_a_sx_and_a_sy_and_a_sw_and_a_sh_and_a_options(&full, (iw - side) / 2, (ih - side) / 2, side, side, &opts)
        .map_err(|e| format!("{name}: {}", js_error(e)))?;
    let small: web_sys::ImageBitmap =
        JsFuture::from(p).await.map_err(|e| format!("{name}: cannot scale it: {}", js_error(e)))?.dyn_into().map_err(|_| format!("{name}: not an image"))?;
    full.close();
    let doc = w.document().expect("a document");
    let c: web_sys::HtmlCanvasElement = doc.create_element("canvas").map_err(js_error)?.dyn_into().map_err(|_| "canvas".to_string())?;
    c.set_width(32);
    c.set_height(32);
    let ctx: web_sys::CanvasRenderingContext2d = c.get_context("2d").ok().flatten().ok_or("no 2d canvas")?.dyn_into().map_err(|_| "2d".to_string())?;
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, 32.0, 32.0);
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(&small, 0.0, 0.0, 32.0, 32.0).map_err(|e| format!("{name}: {}", js_error(e)))?;
    small.close();
    let data = ctx.get_image_data(0.0, 0.0, 32.0, 32.0).map_err(|e| format!("{name}: cannot read the pixels: {}", js_error(e)))?;
    tabcnn::views::record_from_rgba(&data.data().0).map_err(|e| format!("{name}: {e}"))
}

/// Offer `bytes` as a download named `name` (a Blob URL and a clicked link).
pub fn download(bytes: &[u8], name: &str, mime: &str) -> Result<(), String> {
    let parts = js_sys::Array::of1(&Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).map_err(js_error)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_error)?;
    let doc = window().document().expect("a document");
    let a: web_sys::HtmlAnchorElement = doc.create_element("a").map_err(js_error)?.dyn_into().map_err(|_| "an anchor".to_string())?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The download starts after this returns: free the URL a minute later.
    let free = wasm_bindgen::closure::Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(free.unchecked_ref(), 60_000);
    Ok(())
}

/// The whole of a picked file of at most `limit` bytes (`what` names what it should be); a
/// larger one is refused by its size, before anything is read or allocated.
pub async fn file_bytes(file: &File, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    if file.size() > limit as f64 {
        return Err(format!("{}: {} bytes, more than the {limit} {what} can be", file.name(), file.size()));
    }
    let mut out = Vec::with_capacity(file.size() as usize);
    read_file(file, |b, _, _| {
        out.extend_from_slice(b);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// "2026-11-29 13:05" in the visitor's time zone.
pub fn local_time(ms: f64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms));
    format!("{}-{:02}-{:02} {:02}:{:02}", d.get_full_year(), d.get_month() + 1, d.get_date(), d.get_hours(), d.get_minutes())
}
