//! The loss and accuracy charts (main thread): the current run's curves and the saved runs
//! ticked for overlay, drawn once per frame however many updates arrive before it.

use crate::dom::canvas;
use crate::draw::{self, Series, BLUE, GREEN, ORANGE};
use crate::ui::{Page, Ui};
use tabcnn::saved::SavedRun;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Draw the curves on the next frame (once, however many updates come before it).
pub(crate) fn curves_soon(ui: &Ui) {
    if std::mem::replace(&mut ui.borrow_mut().curves_due, true) {
        return;
    }
    let u = ui.clone();
    let f = Closure::once_into_js(move || {
        u.borrow_mut().curves_due = false;
        draw_curves(&u.borrow());
    });
    if let Some(w) = web_sys::window() {
        let _ = w.request_animation_frame(f.unchecked_ref());
    }
}

/// Colours of the overlaid past runs' loss curves.
/// (The first is a darker grey than the axes' #9aa0a6, so a past run is not taken for a frame.)
const OVERLAY_COLOURS: [&str; 4] = ["#80868b", "#a142f4", "#12b5cb", "#e52592"];

pub(crate) fn draw_curves(p: &Page) {
    let epochs = p.epochs.max(1) as f64;
    let max_loss = p.curves.loss.iter().map(|p| p.1).fold(2.5f64, f64::max).min(10.0);
    // The current run, then the overlaid saved runs (each with its recipe as its name).
    let past: Vec<(String, &SavedRun)> =
        p.overlays.iter().filter_map(|id| p.runs.iter().find(|r| &r.id == id)).map(|r| (format!("{} ({})", r.label(), crate::io::local_time(r.started_ms)), r)).collect();
    let mut loss = vec![Series { name: "loss", colour: BLUE, points: &p.curves.loss, dots: false }];
    for (i, (name, r)) in past.iter().enumerate() {
        // Not the current run again: its own curve is the blue one.
        if p.current.as_deref() != Some(r.id.as_str()) {
            loss.push(Series { name, colour: OVERLAY_COLOURS[i % OVERLAY_COLOURS.len()], points: &r.curves.loss, dots: false });
        }
    }
    if loss.len() > 1 {
        // An empty placeholder keeps the overlays' legends in the plot (series 2 on).
        loss.insert(1, Series { name: "", colour: BLUE, points: &[], dots: false });
    }
    let x_max = past.iter().map(|(_, r)| r.epochs as f64).fold(epochs, f64::max);
    let max_loss = past.iter().flat_map(|(_, r)| r.curves.loss.iter().map(|p| p.1)).fold(max_loss, f64::max).min(10.0);
    draw::line_chart(&canvas("loss-chart"), "Training loss", &loss, x_max, 0.0, max_loss, false);
    draw::line_chart(
        &canvas("accuracy-chart"),
        "Accuracy",
        &[
            Series { name: "train", colour: ORANGE, points: &p.curves.train_accuracy, dots: false },
            Series { name: "test", colour: GREEN, points: &p.curves.test_accuracy, dots: true },
        ],
        epochs,
        0.0,
        1.0,
        true,
    );
}
