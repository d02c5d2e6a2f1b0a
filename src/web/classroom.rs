//! The classroom views on the main thread: a click on the prediction grid (follow that image
//! through the network) or on the confusion matrix (list that cell's images), the visitor's own
//! picture or drawing, model download and upload. A click is sent to the worker, which has the
//! weights; its answer is drawn here (`show_*`).

use crate::compute_view::{self, Followed};
use crate::dom::{canvas, el, input, on, on_file, set_attr, set_text, show_error};
use crate::draw;
use crate::io;
use crate::ui::{send, Page, Ui};
use std::cell::RefCell;
use std::rc::Rc;
use tabcnn::checkpoint;
use tabcnn::data::Split;
use tabcnn::model::{Arch, CLASSES};
use tabcnn::outputs::Inside;
use tabcnn::views;
use tabcnn::wire::ToWorker;
use wasm_bindgen::JsCast;
use web_sys::MouseEvent;

/// (x, y) of a click in the canvas's own pixels (the canvas may be shrunk by CSS).
pub(crate) fn canvas_point(id: &str, e: &web_sys::Event) -> Option<(f64, f64)> {
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
pub(crate) fn wire(ui: &Ui) {
    let u = ui.clone();
    on("predictions", "click", move |e| {
        let Some((x, y)) = canvas_point("predictions", &e) else { return };
        let k = (y / draw::CELL_H) as usize * draw::GRID_COLS + (x / draw::CELL_W) as usize;
        let record = u.borrow().grid.get(k).copied();
        if let Some(record) = record {
            send(&u, ToWorker::Pick { record });
        }
    });
    let u = ui.clone();
    on("confusion", "click", move |e| {
        let Some((x, y)) = canvas_point("confusion", &e) else { return };
        let (col, row) = ((x - draw::CM_LEFT) / draw::CM_CELL, (y - draw::CM_TOP) / draw::CM_CELL);
        if (0.0..CLASSES as f64).contains(&col) && (0.0..CLASSES as f64).contains(&row) {
            let (truth, pred) = (row as usize, col as usize);
            {
                let mut p = u.borrow_mut();
                p.cell = Some((truth, pred));
                // Framed at once; its images come from the worker.
                draw::confusion(&canvas("confusion"), p.eval.as_ref(), &p.classes, p.cell);
            }
            send(&u, ToWorker::Cell { truth, pred });
        }
    });
    let u = ui.clone();
    on_file("own-file", "own-drop", move |f| {
        let u = u.clone();
        wasm_bindgen_futures::spawn_local(async move { predict_own(&u, io::Picture::File(&f, f.name())).await });
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
    let u = ui.clone();
    on("draw-predict", "click", move |_| {
        let u = u.clone();
        wasm_bindgen_futures::spawn_local(async move { predict_own(&u, io::Picture::Canvas(&canvas("draw"))).await });
    });
    let u = ui.clone();
    on("download", "click", move |_| send(&u, ToWorker::Download));
    let u = ui.clone();
    on("upload", "change", move |_| {
        let Some(f) = input("upload").files().and_then(|l| l.get(0)) else { return };
        let u = u.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let name = f.name();
            // Refused by its size before it is read; the worker checks and parses the rest.
            match io::file_bytes(&f, checkpoint::MAX_MODEL_BYTES, "a model file (widths up to 256, in F64)").await {
                Ok(bytes) => send(&u, ToWorker::Upload { name, bytes }),
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

/// The visitor's picture, decoded here (the browser's image decoder and canvas), is sent to
/// the worker, which puts it through the network with the weights of this moment.
async fn predict_own(ui: &Ui, pic: io::Picture<'_>) {
    let source = match &pic {
        io::Picture::File(_, name) => name.clone(),
        io::Picture::Canvas(_) => "the drawing".to_string(),
    };
    match io::picture_record(pic).await {
        Ok(record) => send(ui, ToWorker::Own { source, record }),
        Err(e) => {
            let own = el("own");
            set_attr(&own, "data-source", "");
            own.set_text_content(Some(&e));
            show_error(&e);
        }
    }
}

/// The visitor's picture at 32x32 with the top 3; #own carries the result for scripts.
pub(crate) fn show_own(p: &Page, source: &str, record: &[u8], probs: &[f32; CLASSES], step: u64) {
    let own = el("own");
    let top = tabcnn::app::top_k(probs, 3);
    draw::own_result(&canvas("own-result"), record, probs, &p.classes, &format!("{source}: weights of step {step}"));
    set_attr(&own, "data-source", source);
    set_attr(&own, "data-top", &top.iter().map(|&(c, _)| p.classes[c].as_str()).collect::<Vec<_>>().join(","));
    set_attr(&own, "data-probs", &probs.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(","));
    own.set_text_content(Some(&format!("{source}: {}", views::top_lines(probs, &p.classes, 3).join(", "))));
    show_error("");
}

/// A test image through the network (every feature map), kept for the convolution view,
/// which redraws it with the selected output's arithmetic from these weights; #inspect carries
/// the probabilities.
#[allow(clippy::too_many_arguments)]
pub(crate) fn show_features(ui: &Ui, record: u32, step: u64, arch: Arch, image: Vec<u8>, inside: Inside, params: Vec<f32>, truth: &str, title: String) {
    let probs = inside.probabilities();
    {
        let mut p = ui.borrow_mut();
        if p.followed.as_ref().is_some_and(|f| f.record != record || f.arch != arch) {
            p.explained = None; // another image or network: its old place may not exist
        }
        let grids = draw::FeatureGrids::default();
        p.followed = Some(Followed { record, step, arch, image, inside, params, title, grids });
    }
    compute_view::show(ui);
    let p = ui.borrow();
    let e = el("inspect");
    set_attr(&e, "data-record", &record.to_string());
    set_attr(&e, "data-step", &step.to_string());
    set_attr(&e, "data-probs", &probs.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(","));
    e.set_text_content(Some(&format!("test image {record}, a {truth}: {}", views::top_lines(&probs, &p.classes, 3).join(", "))));
}

/// The selected confusion cell's images with their probabilities (weights of this moment),
/// the cell framed; #cell lists every record of the cell for scripts.
pub(crate) fn show_cell(p: &Page, truth: usize, pred: usize, records: &[u32], images: Vec<u8>, probs: &[[f32; CLASSES]]) {
    if p.cell != Some((truth, pred)) {
        return; // another cell was clicked since
    }
    let shown = Split { labels: vec![truth as u8; probs.len()], images };
    draw::cell_images(&canvas("cell-images"), &shown, probs, &p.classes, truth, pred, records.len());
    draw::confusion(&canvas("confusion"), p.eval.as_ref(), &p.classes, Some((truth, pred)));
    let cell = el("cell");
    set_attr(&cell, "data-true", &truth.to_string());
    set_attr(&cell, "data-pred", &pred.to_string());
    set_attr(&cell, "data-count", &records.len().to_string());
    set_attr(&cell, "data-records", &records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","));
    set_attr(&cell, "data-shown-preds", &probs.iter().map(|q| tabcnn::app::top_k(q, 1)[0].0.to_string()).collect::<Vec<_>>().join(","));
}

/// No cell selected (a new run or dataset).
pub(crate) fn clear_cell() {
    draw::context(&canvas("cell-images"));
    for a in ["data-true", "data-pred", "data-count", "data-records", "data-shown-preds"] {
        set_attr(&el("cell"), a, "");
    }
}
