//! The page's DOM helpers (main thread only): elements by id, text and attributes, event
//! handlers, the values of inputs and selects, the #error line.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Document, Element, HtmlCanvasElement, HtmlInputElement, HtmlSelectElement};

pub(crate) fn doc() -> Document {
    web_sys::window().and_then(|w| w.document()).expect("a document")
}

pub(crate) fn el(id: &str) -> Element {
    doc().get_element_by_id(id).unwrap_or_else(|| panic!("index.html has no #{id}"))
}

pub(crate) fn canvas(id: &str) -> HtmlCanvasElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not a canvas"))
}

pub(crate) fn input(id: &str) -> HtmlInputElement {
    el(id).dyn_into().unwrap_or_else(|_| panic!("#{id} is not an input"))
}

pub(crate) fn set_text(id: &str, s: &str) {
    let e = el(id);
    // Unchanged text is not written again: no relayout for nothing.
    if e.text_content().as_deref() != Some(s) {
        e.set_text_content(Some(s));
    }
}

pub(crate) fn set_attr(e: &Element, k: &str, v: &str) {
    let _ = e.set_attribute(k, v);
}

/// Show an error in #error (and the console); an empty message hides it.
pub(crate) fn show_error(msg: &str) {
    let e = el("error");
    e.set_text_content(Some(msg));
    if msg.is_empty() {
        set_attr(&e, "hidden", "");
    } else {
        let _ = e.remove_attribute("hidden");
        web_sys::console::warn_1(&format!("tabcnn: {msg}").into());
    }
}

/// A bug (a panic here or in the worker): say so in the page rather than leave a dead tab
/// without a word.
pub(crate) fn show_internal_error(what: &str) {
    let d = web_sys::window().and_then(|w| w.document());
    if let Some(e) = d.as_ref().and_then(|d| d.get_element_by_id("error")) {
        e.set_text_content(Some(&format!("internal error, please reload the page: {what}")));
        let _ = e.remove_attribute("hidden");
    }
    if let Some(m) = d.as_ref().and_then(|d| d.get_element_by_id("metrics")) {
        let _ = m.set_attribute("data-state", "error");
    }
}

pub(crate) fn on(id: &str, event: &str, f: impl FnMut(web_sys::Event) + 'static) {
    let c = Closure::<dyn FnMut(web_sys::Event)>::new(f);
    el(id).add_event_listener_with_callback(event, c.as_ref().unchecked_ref()).expect("addEventListener");
    c.forget(); // the page lives as long as the handlers
}

/// A file picked in the input `input_id` or dropped on `drop_id`, handed to `f`.
pub(crate) fn on_file(input_id: &'static str, drop_id: &str, f: impl Fn(web_sys::File) + Clone + 'static) {
    let g = f.clone();
    on(input_id, "change", move |_| {
        if let Some(file) = input(input_id).files().and_then(|l| l.get(0)) {
            g(file);
        }
    });
    on(drop_id, "dragover", |e| e.prevent_default());
    on(drop_id, "drop", move |e| {
        e.prevent_default();
        if let Some(file) = e.dyn_ref::<web_sys::DragEvent>().and_then(|d| d.data_transfer()).and_then(|t| t.files()).and_then(|l| l.get(0)) {
            f(file);
        }
    });
}

/// The value of an input or select.
pub(crate) fn control_value(id: &str) -> String {
    let e = el(id);
    match e.dyn_ref::<HtmlSelectElement>() {
        Some(sel) => sel.value(),
        None => input(id).value(),
    }
}

pub(crate) fn set_control(id: &str, v: &str) {
    let e = el(id);
    match e.dyn_ref::<HtmlSelectElement>() {
        Some(sel) => sel.set_value(v),
        None => input(id).set_value(v),
    }
}
