//! The loss and accuracy charts (main thread): the current run's curves and the saved runs
//! ticked for overlay, drawn once per frame however many updates arrive before it.

use crate::dom::canvas;
use crate::draw::{self, Series, BLUE, GREEN, ORANGE};
use crate::ui::{Page, Ui};
use tabcnn::app::{smooth, smooth_half_width};
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

/// The loss and accuracy charts: each train curve as its moving average (app::smooth) over
/// its raw values drawn faint, the test accuracy on top with a dot at each evaluation, the
/// overlaid saved runs' losses smoothed too. The canvases carry the smoothing's window
/// (data-smooth: points each side) for scripts.
pub(crate) fn draw_curves(p: &Page) {
    let epochs = p.epochs.max(1) as f64;
    let max_loss = p.curves.loss.iter().map(|p| p.1).fold(2.5f64, f64::max).min(10.0);
    // The current run, then the overlaid saved runs (each with its recipe as its name).
    let past: Vec<(String, &SavedRun)> =
        p.overlays.iter().filter_map(|id| p.runs.iter().find(|r| &r.id == id)).map(|r| (format!("{} ({})", r.label(), crate::io::local_time(r.started_ms)), r)).collect();
    let loss_avg = smooth(&p.curves.loss);
    let mut loss = vec![Series { name: "loss (moving average)", colour: BLUE, points: &loss_avg, dots: false, faint: false }];
    let past_avg: Vec<Vec<(f64, f64)>> = past.iter().map(|(_, r)| smooth(&r.curves.loss)).collect();
    for (i, ((name, r), avg)) in past.iter().zip(&past_avg).enumerate() {
        // Not the current run again: its own curve is the blue one.
        if p.current.as_deref() != Some(r.id.as_str()) {
            loss.push(Series { name, colour: OVERLAY_COLOURS[i % OVERLAY_COLOURS.len()], points: avg, dots: false, faint: false });
        }
    }
    if loss.len() > 1 {
        // An empty placeholder keeps the overlays' legends in the plot (series 2 on).
        loss.insert(1, Series { name: "", colour: BLUE, points: &[], dots: false, faint: false });
    }
    loss.push(Series { name: "", colour: BLUE, points: &p.curves.loss, dots: false, faint: true });
    let x_max = past.iter().map(|(_, r)| r.epochs as f64).fold(epochs, f64::max);
    let max_loss = past.iter().flat_map(|(_, r)| r.curves.loss.iter().map(|p| p.1)).fold(max_loss, f64::max).min(10.0);
    let loss_chart = canvas("loss-chart");
    draw::line_chart(&loss_chart, "Training loss", &loss, x_max, (0.0, max_loss), false, p.steps_per_epoch);
    let _ = loss_chart.set_attribute("data-smooth", &smooth_half_width(p.curves.loss.len()).to_string());
    // Where the curves end, and that they only go forward (for scripts: a run rolled back to
    // its resume point drops its later points).
    let last_x = |c: &[(f64, f64)]| c.last().map(|q| format!("{:.6}", q.0)).unwrap_or_default();
    let _ = loss_chart.set_attribute("data-last-x", &last_x(&p.curves.loss));
    let _ = loss_chart.set_attribute("data-in-order", if p.curves.in_order() { "true" } else { "false" });
    let train_avg = smooth(&p.curves.train_accuracy);
    let accuracy = canvas("accuracy-chart");
    draw::line_chart(
        &accuracy,
        "Accuracy",
        &[
            Series { name: "test", colour: GREEN, points: &p.curves.test_accuracy, dots: true, faint: false },
            Series { name: "train (moving average)", colour: ORANGE, points: &train_avg, dots: false, faint: false },
            Series { name: "", colour: ORANGE, points: &p.curves.train_accuracy, dots: false, faint: true },
        ],
        epochs,
        (0.0, 1.0),
        true,
        p.steps_per_epoch,
    );
    let _ = accuracy.set_attribute("data-smooth", &smooth_half_width(p.curves.train_accuracy.len()).to_string());
    let _ = accuracy.set_attribute("data-test-last-x", &last_x(&p.curves.test_accuracy));
}
