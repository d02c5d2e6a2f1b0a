//! The classroom views' handlers: a click on the prediction grid (follow that image through
//! the network) or on the confusion matrix (list that cell's images), the visitor's own
//! picture or drawing, model download and upload, and the saved runs' buttons. They read the
//! shared `Views` at once; what needs the engine is handed to the runner (src/web/page.rs).

use crate::draw;
use crate::io;
use crate::page::{canvas, el, input, on, on_file, set_attr, set_text, show_error, wake, Control, Shared};
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::checkpoint;
use tabcnn::cpu::{self, CpuEngine};
use tabcnn::data::Cifar;
use tabcnn::model::{init_params, Arch, Layout, CLASSES};
use tabcnn::outputs::EvalResult;
use tabcnn::views;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlInputElement, MouseEvent};

/// The state the click and file handlers draw from, without waiting for the runner.
#[derive(Default)]
pub(crate) struct Views {
    pub(crate) data: Option<Rc<Cifar>>,
    /// The last evaluation on the whole test set.
    pub(crate) eval: Option<Rc<EvalResult>>,
    /// The latest weights read from the engine and the step they are from (None: the run
    /// has not started; its weights are the seed's initial ones).
    pub(crate) params: Option<(Arch, Rc<Vec<f32>>, u64)>,
    /// The test records of the prediction grid, in drawing order.
    pub(crate) grid: Vec<u32>,
    /// The selected confusion cell (true, predicted).
    pub(crate) cell: Option<(usize, usize)>,
}

/// The network and weights the views use now, and their step.
pub(crate) fn view_params(k: &Control) -> (Arch, Rc<Vec<f32>>, u64) {
    k.views.params.clone().unwrap_or_else(|| {
        let h = &k.settings.hyper;
        (h.net, Rc::new(init_params(&Layout::new(h.net), h.seed)), 0)
    })
}

/// The saved runs' buttons: resume the offered run, and each row's resume, delete and
/// overlay controls (one handler on the table: each control carries data-action, data-run).
pub(crate) fn wire_runs(ctl: &Shared) {
    let c = ctl.clone();
    on("resume-last", "click", move |_| {
        if let Some(id) = el("resume-last").get_attribute("data-run") {
            c.borrow_mut().resume_run = Some(id);
            wake(&c);
        }
    });
    let c = ctl.clone();
    on("runs-body", "click", move |e| {
        let Some(t) = e.target().and_then(|t| t.dyn_into::<Element>().ok()) else { return };
        let (Some(action), Some(id)) = (t.get_attribute("data-action"), t.get_attribute("data-run")) else { return };
        let mut k = c.borrow_mut();
        match action.as_str() {
            "resume" => k.resume_run = Some(id),
            "delete" => k.delete_run = Some(id),
            "overlay" => {
                // A checkbox's click handler sees its new state.
                k.overlays.retain(|i| *i != id);
                if t.dyn_ref::<HtmlInputElement>().map(|i| i.checked()).unwrap_or(false) {
                    k.overlays.push(id);
                }
                k.overlay_changed = true;
            }
            _ => return,
        }
        drop(k);
        wake(&c);
    });
}

/// "2026-11-29 13:05" in the visitor's time zone.
pub(crate) fn local_time(ms: f64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms));
    format!("{}-{:02}-{:02} {:02}:{:02}", d.get_full_year(), d.get_month() + 1, d.get_date(), d.get_hours(), d.get_minutes())
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// (x, y) of a click in the canvas's own pixels (the canvas may be shrunk by CSS).
fn canvas_point(id: &str, e: &web_sys::Event) -> Option<(f64, f64)> {
    let m = e.dyn_ref::<MouseEvent>()?;
    let c = canvas(id);
    let r = c.get_bounding_client_rect();
    if r.width() <= 0.0 || r.height() <= 0.0 {
        return None;
    }
    Some(((m.client_x() as f64 - r.left()) * c.width() as f64 / r.width(), (m.client_y() as f64 - r.top()) * c.height() as f64 / r.height()))
}

/// The handlers of the classroom views: grid and confusion clicks, own pictures, the
/// drawing, model download and upload.
pub(crate) fn wire_views(ctl: &Shared) {
    let c = ctl.clone();
    on("predictions", "click", move |e| {
        let Some((x, y)) = canvas_point("predictions", &e) else { return };
        let k = (y / draw::CELL_H) as usize * draw::GRID_COLS + (x / draw::CELL_W) as usize;
        let record = c.borrow().views.grid.get(k).copied();
        if let Some(r) = record {
            c.borrow_mut().pick = Some(r);
            wake(&c);
        }
    });
    let c = ctl.clone();
    on("confusion", "click", move |e| {
        let Some((x, y)) = canvas_point("confusion", &e) else { return };
        let (col, row) = ((x - draw::CM_LEFT) / draw::CM_CELL, (y - draw::CM_TOP) / draw::CM_CELL);
        if (0.0..CLASSES as f64).contains(&col) && (0.0..CLASSES as f64).contains(&row) {
            c.borrow_mut().views.cell = Some((row as usize, col as usize));
            show_cell(&c);
        }
    });
    let c = ctl.clone();
    on_file("own-file", "own-drop", move |f| {
        let c = c.clone();
        wasm_bindgen_futures::spawn_local(async move { predict_own(&c, io::Picture::File(&f, f.name())).await });
    });
    // The drawing: strokes follow the pointer while a button is down.
    clear_drawing();
    let last: Rc<RefCell<Option<(f64, f64)>>> = Rc::new(RefCell::new(None));
    let l = last.clone();
    on("draw", "pointerdown", move |e| {
        *l.borrow_mut() = canvas_point("draw", &e);
        stroke_to(&l, canvas_point("draw", &e));
    });
    let l = last.clone();
    on("draw", "pointermove", move |e| {
        if l.borrow().is_some() {
            stroke_to(&l, canvas_point("draw", &e));
        }
    });
    for ev in ["pointerup", "pointerleave"] {
        let l = last.clone();
        on("draw", ev, move |_| *l.borrow_mut() = None);
    }
    on("draw-clear", "click", |_| clear_drawing());
    let c = ctl.clone();
    on("draw-predict", "click", move |_| {
        let c = c.clone();
        wasm_bindgen_futures::spawn_local(async move { predict_own(&c, io::Picture::Canvas(&canvas("draw"))).await });
    });
    let c = ctl.clone();
    on("download", "click", move |_| {
        c.borrow_mut().download = true;
        wake(&c);
    });
    let c = ctl.clone();
    on("upload", "change", move |_| {
        let Some(f) = input("upload").files().and_then(|l| l.get(0)) else { return };
        let c = c.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let name = f.name();
            let loaded = io::file_bytes(&f, checkpoint::MAX_MODEL_BYTES, "a model file (widths up to 256, in F64)").await.and_then(|b| checkpoint::from_safetensors_any(&b, &name));
            match loaded {
                Ok((arch, p)) => {
                    c.borrow_mut().upload = Some((arch, p, name));
                    wake(&c);
                }
                Err(e) => {
                    set_text("model-status", "");
                    show_error(&format!("{e} (the model in use and the training so far are unchanged)"));
                }
            }
            input("upload").set_value("");
        });
    });
}

const INK_DRAW: &str = "#202124";

fn draw_ctx() -> web_sys::CanvasRenderingContext2d {
    canvas("draw").get_context("2d").ok().flatten().expect("2d").dyn_into().expect("2d")
}

fn clear_drawing() {
    let c = canvas("draw");
    let ctx = draw_ctx();
    ctx.set_fill_style_str("#ffffff");
    ctx.fill_rect(0.0, 0.0, c.width() as f64, c.height() as f64);
}

/// A round-capped line from the last point to `to` (a dot when they are the same).
fn stroke_to(last: &Rc<RefCell<Option<(f64, f64)>>>, to: Option<(f64, f64)>) {
    let (Some(from), Some(to)) = (*last.borrow(), to) else { return };
    let ctx = draw_ctx();
    ctx.set_stroke_style_str(INK_DRAW);
    ctx.set_line_width(12.0);
    ctx.set_line_cap("round");
    ctx.begin_path();
    ctx.move_to(from.0, from.1);
    ctx.line_to(to.0 + 0.01, to.1);
    ctx.stroke();
    *last.borrow_mut() = Some(to);
}

/// The visitor's picture through the network with the weights of this moment: shown at
/// 32x32 with the top 3; #own carries the result for scripts.
async fn predict_own(ctl: &Shared, pic: io::Picture<'_>) {
    let source = match &pic {
        io::Picture::File(_, name) => name.clone(),
        io::Picture::Canvas(_) => "the drawing".to_string(),
    };
    let own = el("own");
    match io::picture_record(pic).await {
        Ok(record) => {
            let (classes, (arch, params, step)) = {
                let k = ctl.borrow();
                (k.views.data.as_ref().map(|d| d.classes.clone()), view_params(&k))
            };
            let Some(classes) = classes else {
                show_error("the dataset is still loading: try again in a moment");
                return;
            };
            let p = cpu::inspect(arch, &params, &record).probabilities();
            let top = tabcnn::app::top_k(&p, 3);
            draw::own_result(&canvas("own-result"), &record, &p, &classes, &format!("{source}: weights of step {step}"));
            set_attr(&own, "data-source", &source);
            set_attr(&own, "data-top", &top.iter().map(|&(c, _)| classes[c].as_str()).collect::<Vec<_>>().join(","));
            set_attr(&own, "data-probs", &p.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(","));
            own.set_text_content(Some(&format!("{source}: {}", views::top_lines(&p, &classes, 3).join(", "))));
            show_error("");
        }
        Err(e) => {
            set_attr(&own, "data-source", "");
            own.set_text_content(Some(&e));
            show_error(&e);
        }
    }
}

/// Draw the selected confusion cell's images with their probabilities (weights of this
/// moment) and frame the cell; #cell lists every record of the cell for scripts.
pub(crate) fn show_cell(ctl: &Shared) {
    let k = ctl.borrow();
    let (Some(d), Some(ev), Some((t, p))) = (&k.views.data, &k.views.eval, k.views.cell) else { return };
    let records = views::confusion_records(&ev.preds, &d.test.labels, t, p);
    let shown = &records[..records.len().min(draw::CELL_SHOWN)];
    let (arch, params, _) = view_params(&k);
    let probs = CpuEngine::new(arch, params.to_vec(), 1).probabilities(&d.test.images, shown);
    draw::cell_images(&canvas("cell-images"), &d.test, &records, &probs, &d.classes, t, p);
    draw::confusion(&canvas("confusion"), Some(ev), &d.classes, Some((t, p)));
    let cell = el("cell");
    set_attr(&cell, "data-true", &t.to_string());
    set_attr(&cell, "data-pred", &p.to_string());
    set_attr(&cell, "data-count", &records.len().to_string());
    set_attr(&cell, "data-records", &records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","));
    set_attr(&cell, "data-shown-preds", &probs.iter().map(|q| tabcnn::app::top_k(q, 1)[0].0.to_string()).collect::<Vec<_>>().join(","));
}
