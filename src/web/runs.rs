//! "Your runs" on the main thread: the table of saved runs (from the worker's summaries), the
//! offer to resume the last unfinished one, and the rows' buttons: Resume and Delete go to the
//! worker, which owns the storage; the overlay checkboxes only redraw the loss chart here.

use crate::charts::curves_soon;
use crate::dom::{el, on, set_attr};
use crate::io::local_time;
use crate::ui::{send, Ui};
use tabcnn::saved::SavedRun;
use tabcnn::wire::ToWorker;
use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlInputElement};

/// The resume offer's button and each row's resume, delete and overlay controls (one handler
/// on the table: each control carries data-action, data-run).
pub(crate) fn wire(ui: &Ui) {
    let u = ui.clone();
    on("resume-last", "click", move |_| {
        if let Some(id) = el("resume-last").get_attribute("data-run") {
            send(&u, ToWorker::ResumeRun { id });
        }
    });
    let u = ui.clone();
    on("runs-body", "click", move |e| {
        let Some(t) = e.target().and_then(|t| t.dyn_into::<Element>().ok()) else { return };
        let (Some(action), Some(id)) = (t.get_attribute("data-action"), t.get_attribute("data-run")) else { return };
        match action.as_str() {
            "resume" => send(&u, ToWorker::ResumeRun { id }),
            "delete" => send(&u, ToWorker::DeleteRun { id }),
            "overlay" => {
                // A checkbox's click handler sees its new state.
                let mut p = u.borrow_mut();
                p.overlays.retain(|i| *i != id);
                if t.dyn_ref::<HtmlInputElement>().map(|i| i.checked()).unwrap_or(false) {
                    p.overlays.push(id);
                }
                drop(p);
                curves_soon(&u);
            }
            _ => {}
        }
    });
}

/// Show the offer to resume a run ((id, sentence)), or hide it.
pub(crate) fn offer(offer: Option<(String, String)>) {
    match offer {
        Some((id, text)) => {
            el("resume-text").set_text_content(Some(&text));
            set_attr(&el("resume-last"), "data-run", &id);
            let _ = el("resume-offer").remove_attribute("hidden");
        }
        None => set_attr(&el("resume-offer"), "hidden", ""),
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The run list, from the summaries the worker sent.
pub(crate) fn render(ui: &Ui) {
    let mut p = ui.borrow_mut();
    let body = el("runs-body");
    let current = |r: &SavedRun| p.current.as_deref() == Some(r.id.as_str());
    // The text cells of a row: started, settings, where it got to, test accuracy (a record
    // that cannot be read: why, in the settings' cell).
    let cells = |r: &SavedRun| {
        if let Some(problem) = &r.problem {
            return ["-".to_string(), format!("cannot be used: {problem}"), "-".into(), "-".into(), "-".into()];
        }
        let acc = r.curves.test_accuracy.last().map(|p| format!("{:.1} %", p.1 * 100.0)).unwrap_or_else(|| "-".into());
        let at = if r.done { format!("done: {} epochs, step {}", r.epochs, r.at.2) } else { format!("epoch {}/{}, step {}", r.at.0.min(r.epochs), r.epochs, r.at.2) };
        [local_time(r.started_ms), r.label(), at, acc, size(r)]
    };
    const CELLS: [&str; 5] = ["started", "settings", "where", "accuracy", "size"];
    let shape: Vec<(String, bool)> = p.runs.iter().map(|r| (r.id.clone(), current(r))).collect();
    if !shape.is_empty() && shape == p.runs_shown {
        // The same rows with the same buttons: only their text changes (each save moves the
        // current run on). Rebuilding them would swap the buttons under a visitor's pointer
        // every few seconds, and a click pressed on the old button is lost.
        for r in &p.runs {
            let row = format!("#runs-body tr[data-run=\"{}\"]", r.id);
            for (class, text) in CELLS.iter().zip(cells(r)) {
                if let Ok(Some(td)) = body.query_selector(&format!("{row} td.{class}")) {
                    if td.text_content().as_deref() != Some(text.as_str()) {
                        td.set_text_content(Some(&text));
                    }
                }
            }
            if let Ok(Some(tr)) = body.query_selector(&row) {
                set_attr(&tr, "data-bytes", &r.stored_bytes.to_string());
                set_attr(&tr, "data-history-bytes", &r.history_bytes.to_string());
            }
            if let Ok(Some(b)) = body.query_selector(&format!("{row} input[data-action=\"overlay\"]")) {
                if let Some(b) = b.dyn_ref::<HtmlInputElement>() {
                    b.set_checked(p.overlays.contains(&r.id));
                }
            }
        }
    } else {
        let mut html = String::new();
        for r in &p.runs {
            let id = escape(&r.id);
            let tds: String = CELLS.iter().zip(cells(r)).map(|(class, text)| format!("<td class=\"{class}\">{}</td>", escape(&text))).collect();
            if r.problem.is_some() {
                // Nothing to overlay or resume: only Delete.
                html += &format!("<tr data-run=\"{id}\" class=\"unreadable\"><td></td>{tds}<td><button data-action=\"delete\" data-run=\"{id}\">Delete</button></td></tr>");
                continue;
            }
            html += &format!(
                "<tr data-run=\"{id}\" data-bytes=\"{}\" data-history-bytes=\"{}\"{}><td><input type=\"checkbox\" data-action=\"overlay\" data-run=\"{id}\"{}></td>{tds}<td>{}<button data-action=\"delete\" data-run=\"{id}\">Delete</button></td></tr>",
                r.stored_bytes,
                r.history_bytes,
                if current(r) { " class=\"current\"" } else { "" },
                if p.overlays.contains(&r.id) { " checked" } else { "" },
                if current(r) { String::new() } else { format!("<button data-action=\"resume\" data-run=\"{id}\">Resume</button> ") },
            );
        }
        if p.runs.is_empty() {
            html = "<tr><td colspan=\"7\">no runs yet: press Start</td></tr>".into();
        }
        body.set_inner_html(&html);
        p.runs_shown = shape;
    }
    set_attr(&el("runs-status"), "data-count", &p.runs.len().to_string());
    show_storage(&p);
}

/// A run's bytes in the browser, its timeline's among them.
fn size(r: &SavedRun) -> String {
    match (r.stored_bytes, r.history_bytes) {
        (0, _) => "-".into(),
        (all, 0) => mb(all as f64),
        (all, history) => format!("{} (timeline {})", mb(all as f64), mb(history as f64)),
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// What the saved runs take, what the page uses of what the browser allows it, and whether the
/// browser keeps them until they are deleted (#runs-storage).
fn show_storage(p: &crate::ui::Page) {
    let e = el("runs-storage");
    let runs: u64 = p.runs.iter().map(|r| r.stored_bytes).sum();
    let history: u64 = p.runs.iter().map(|r| r.history_bytes).sum();
    let mut text = format!(
        "Saved runs: {} in all, {} of it their timelines (the oldest runs' timelines go first when space is short; a run's state is kept until you delete it).",
        mb(runs as f64),
        mb(history as f64)
    );
    if let Some((used, quota)) = p.storage {
        text += &format!(" This page uses {} of the {} this browser allows it.", mb(used), mb(quota));
    }
    text += match p.persisted {
        Some(true) => " The browser keeps them until you delete them (persistent storage).",
        Some(false) => " The browser did not grant persistent storage: it may clear them if the disk runs short.",
        None => "",
    };
    e.set_text_content(Some(&text));
    set_attr(&e, "data-runs-bytes", &runs.to_string());
    set_attr(&e, "data-history-bytes", &history.to_string());
    set_attr(&e, "data-used", &p.storage.map(|u| format!("{:.0}", u.0)).unwrap_or_default());
    set_attr(&e, "data-quota", &p.storage.map(|u| format!("{:.0}", u.1)).unwrap_or_default());
    set_attr(&e, "data-persisted", &p.persisted.map(|v| v.to_string()).unwrap_or_default());
}

/// After the first save: ask the browser to keep the page's storage until the visitor deletes
/// it (`navigator.storage.persist()`, a window's call; Chrome decides from the site's use,
/// Firefox asks the visitor), and show the answer.
pub(crate) fn ask_to_persist(ui: &Ui) {
    if std::mem::replace(&mut ui.borrow_mut().persist_asked, true) {
        return;
    }
    let Some(nav) = web_sys::window().map(|w| w.navigator()) else { return };
    let storage = js_sys::Reflect::get(&nav, &"storage".into()).unwrap_or_default();
    let persist = js_sys::Reflect::get(&storage, &"persist".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(asked) = persist.and_then(|f| f.call0(&storage).ok()).and_then(|p| p.dyn_into::<js_sys::Promise>().ok()) else { return };
    let u = ui.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let granted = wasm_bindgen_futures::JsFuture::from(asked).await.ok().and_then(|v| v.as_bool());
        u.borrow_mut().persisted = granted;
        show_storage(&u.borrow());
    });
}
