//! "How it learned" (main thread): a slider over the steps whose weights the run keeps. Moved,
//! the filters, the followed image's maps, the prediction grid and the confusion matrix show
//! that step (the worker computes them, src/web/worker/timeline.rs); Play walks the steps as an
//! animation; Live follows training again. #timeline carries the steps for scripts: data-steps
//! (kept), data-shown (the step the views show), data-playing, and data-play-index (the kept
//! step Play asked for last: each one in turn, whether or not the worker, showing only the
//! latest step asked for, keeps up).

use crate::dom::{el, input, on, set_attr, set_text};
use crate::ui::{send, Ui};
use tabcnn::wire::ToWorker;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Play shows the next kept step this often (ms).
const PLAY_MS: i32 = 900;

/// The slider, Play and Live.
pub(crate) fn wire(ui: &Ui) {
    let u = ui.clone();
    on("timeline-slider", "input", move |_| {
        let i: usize = input("timeline-slider").value().parse().unwrap_or(0);
        show_step(&u, i);
    });
    let u = ui.clone();
    on("timeline-live", "click", move |_| {
        stop(&u);
        send(&u, ToWorker::Scrub { step: None });
    });
    let u = ui.clone();
    let tick = Closure::<dyn FnMut()>::new(move || {
        let (next, n) = {
            let p = u.borrow();
            let at: usize = input("timeline-slider").value().parse().unwrap_or(0);
            (at + 1, p.timeline_steps.len())
        };
        if next >= n {
            return stop(&u);
        }
        input("timeline-slider").set_value(&next.to_string());
        set_attr(&el("timeline"), "data-play-index", &next.to_string());
        show_step(&u, next);
    });
    let u = ui.clone();
    on("timeline-play", "click", move |_| {
        if u.borrow().timeline_playing.is_some() {
            return stop(&u);
        }
        let Some(w) = web_sys::window() else { return };
        // From the start when at the end (or live).
        if u.borrow().timeline_shown.is_none() || input("timeline-slider").value() == input("timeline-slider").max() {
            input("timeline-slider").set_value("0");
            show_step(&u, 0);
        }
        set_attr(&el("timeline"), "data-play-index", &input("timeline-slider").value());
        u.borrow_mut().timeline_playing = w.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), PLAY_MS).ok();
        set_text("timeline-play", "Pause");
        set_attr(&el("timeline"), "data-playing", "1");
    });
}

fn stop(ui: &Ui) {
    if let (Some(id), Some(w)) = (ui.borrow_mut().timeline_playing.take(), web_sys::window()) {
        w.clear_interval_with_handle(id);
    }
    set_text("timeline-play", "Play");
    set_attr(&el("timeline"), "data-playing", "0");
}

/// Ask for the views of the slider's i-th kept step.
fn show_step(ui: &Ui, i: usize) {
    let step = ui.borrow().timeline_steps.get(i).copied();
    if let Some(step) = step {
        send(ui, ToWorker::Scrub { step: Some(step) });
    }
}

/// The kept steps and the one shown (None: live).
pub(crate) fn show(ui: &Ui, steps: Vec<u64>, steps_per_epoch: usize, shown: Option<u64>) {
    let slider = input("timeline-slider");
    slider.set_max(&steps.len().saturating_sub(1).to_string());
    slider.set_disabled(steps.len() < 2);
    let at = shown.and_then(|s| steps.iter().position(|&k| k == s));
    if shown.is_none() {
        slider.set_value(&steps.len().saturating_sub(1).to_string());
    } else if let Some(i) = at {
        slider.set_value(&i.to_string());
    }
    let epoch = |s: u64| if steps_per_epoch > 0 { format!(", epoch {:.2}", s as f64 / steps_per_epoch as f64) } else { String::new() };
    let label = match shown {
        Some(s) => format!("step {s}{} (kept weights)", epoch(s)),
        None => format!("live ({} steps kept{})", steps.len(), steps.last().map(|&s| format!(", the latest {s}")).unwrap_or_default()),
    };
    set_text("timeline-step", &label);
    let e = el("timeline");
    set_attr(&e, "data-steps", &steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","));
    set_attr(&e, "data-shown", &shown.map_or("live".to_string(), |s| s.to_string()));
    let mut p = ui.borrow_mut();
    p.timeline_steps = steps;
    p.timeline_shown = shown;
}
