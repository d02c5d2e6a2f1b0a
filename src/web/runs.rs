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
            return ["-".to_string(), format!("cannot be used: {problem}"), "-".into(), "-".into()];
        }
        let acc = r.curves.test_accuracy.last().map(|p| format!("{:.1} %", p.1 * 100.0)).unwrap_or_else(|| "-".into());
        let at = if r.done { format!("done: {} epochs, step {}", r.epochs, r.at.2) } else { format!("epoch {}/{}, step {}", r.at.0.min(r.epochs), r.epochs, r.at.2) };
        [local_time(r.started_ms), r.label(), at, acc]
    };
    const CELLS: [&str; 4] = ["started", "settings", "where", "accuracy"];
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
                "<tr data-run=\"{id}\"{}><td><input type=\"checkbox\" data-action=\"overlay\" data-run=\"{id}\"{}></td>{tds}<td>{}<button data-action=\"delete\" data-run=\"{id}\">Delete</button></td></tr>",
                if current(r) { " class=\"current\"" } else { "" },
                if p.overlays.contains(&r.id) { " checked" } else { "" },
                if current(r) { String::new() } else { format!("<button data-action=\"resume\" data-run=\"{id}\">Resume</button> ") },
            );
        }
        if p.runs.is_empty() {
            html = "<tr><td colspan=\"6\">no runs yet: press Start</td></tr>".into();
        }
        body.set_inner_html(&html);
        p.runs_shown = shape;
    }
    set_attr(&el("runs-status"), "data-count", &p.runs.len().to_string());
}
