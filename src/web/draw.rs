//! Canvas drawings of the page (CanvasRenderingContext2d): the progress bar, the loss and
//! accuracy curves, the prediction grid and the per-class accuracy bars. Each function draws a
//! whole canvas from the values it is given, so the page can redraw any of them at any time.

use tabcnn::app::{format_duration, ticks, top_k};
use tabcnn::data::Split;
use tabcnn::model::{CLASSES, IMG, IMG_LEN};
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d as Ctx, HtmlCanvasElement};

pub const BLUE: &str = "#2f6fdf";
pub const ORANGE: &str = "#e07b20";
pub const GREEN: &str = "#1f8a3a";
pub const RED: &str = "#c62828";
const GREY: &str = "#9aa0a6";
const INK: &str = "#202124";
const FAINT: &str = "#e8eaed";
const FONT: &str = "13px system-ui, sans-serif";

/// The 2D context of a canvas, cleared.
pub fn context(canvas: &HtmlCanvasElement) -> Ctx {
    let ctx: Ctx = canvas.get_context("2d").ok().flatten().expect("a 2d canvas context").dyn_into().expect("CanvasRenderingContext2d");
    ctx.clear_rect(0.0, 0.0, canvas.width() as f64, canvas.height() as f64);
    ctx.set_font(FONT);
    ctx.set_text_baseline("middle");
    ctx
}

fn text(ctx: &Ctx, s: &str, x: f64, y: f64, colour: &str, align: &str) {
    ctx.set_fill_style_str(colour);
    ctx.set_text_align(align);
    let _ = ctx.fill_text(s, x, y);
}

fn rect(ctx: &Ctx, x: f64, y: f64, w: f64, h: f64, colour: &str) {
    ctx.set_fill_style_str(colour);
    ctx.fill_rect(x, y, w, h);
}

/// Where training is: a bar over the whole run, with epoch, step, speed and time left.
pub struct ProgressView {
    pub fraction: f64,
    pub label: String,
}

pub fn progress(canvas: &HtmlCanvasElement, v: &ProgressView, colour: &str) {
    let ctx = context(canvas);
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    rect(&ctx, 0.0, 0.0, w, h, FAINT);
    rect(&ctx, 0.0, 0.0, w * v.fraction.clamp(0.0, 1.0), h, colour);
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, &v.label, 10.0, h / 2.0, INK, "left");
}

/// The label of the training progress bar.
#[allow(clippy::too_many_arguments)]
pub fn progress_label(epoch: usize, epochs: usize, step: usize, steps_per_epoch: usize, ips: f64, seconds_left: f64, state: &str) -> String {
    format!(
        "{state} · epoch {}/{} · step {}/{} · {:.0} images/s · {} left",
        epoch.min(epochs),
        epochs,
        step,
        steps_per_epoch,
        ips,
        if ips > 0.0 { format_duration(seconds_left) } else { "-".into() }
    )
}

/// One series of a line chart: (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: &'a [(f64, f64)],
    /// Draw a dot on each point (sparse series such as the test accuracy).
    pub dots: bool,
}

/// A line chart over x in [0, x_max] and y in [y_lo, y_hi]; `percent` labels y as per cent.
pub fn line_chart(canvas: &HtmlCanvasElement, title: &str, series: &[Series], x_max: f64, y_lo: f64, y_hi: f64, percent: bool) {
    let ctx = context(canvas);
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let (l, r, t, b) = (48.0, 12.0, 28.0, 30.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let sx = |x: f64| l + pw * x / x_max.max(1e-9);
    let sy = |y: f64| t + ph * (1.0 - (y - y_lo) / (y_hi - y_lo).max(1e-12));
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, title, l, 12.0, INK, "left");
    ctx.set_font(FONT);
    ctx.set_line_width(1.0);
    for yv in ticks(y_lo, y_hi, 5) {
        ctx.set_stroke_style_str(FAINT);
        ctx.begin_path();
        ctx.move_to(l, sy(yv));
        ctx.line_to(l + pw, sy(yv));
        ctx.stroke();
        let label = if percent { format!("{:.0} %", yv * 100.0) } else { format!("{yv:.1}") };
        text(&ctx, &label, l - 6.0, sy(yv), GREY, "right");
    }
    for xv in ticks(0.0, x_max, 6) {
        text(&ctx, &format!("{xv}"), sx(xv), t + ph + 12.0, GREY, "center");
    }
    text(&ctx, "epochs", l + pw, t + ph + 24.0, GREY, "right");
    ctx.set_stroke_style_str(GREY);
    ctx.stroke_rect(l, t, pw, ph);
    let mut lx = l + pw;
    for s in series.iter().rev() {
        ctx.set_stroke_style_str(s.colour);
        ctx.set_fill_style_str(s.colour);
        ctx.set_line_width(2.0);
        ctx.begin_path();
        for (i, &(x, y)) in s.points.iter().enumerate() {
            let (px, py) = (sx(x), sy(y.clamp(y_lo, y_hi)));
            if i == 0 {
                ctx.move_to(px, py);
            } else {
                ctx.line_to(px, py);
            }
        }
        ctx.stroke();
        if s.dots {
            for &(x, y) in s.points {
                ctx.begin_path();
                let _ = ctx.arc(sx(x), sy(y.clamp(y_lo, y_hi)), 3.5, 0.0, std::f64::consts::TAU);
                ctx.fill();
            }
        }
        // Legend, right-aligned in the title row.
        let label = match s.points.last() {
            Some(&(_, y)) if percent => format!("{} {:.1} %", s.name, y * 100.0),
            Some(&(_, y)) => format!("{} {:.3}", s.name, y),
            None => s.name.to_string(),
        };
        let tw = ctx.measure_text(&label).map(|m| m.width()).unwrap_or(80.0);
        text(&ctx, &label, lx, 12.0, s.colour, "right");
        lx -= tw + 18.0;
    }
}

/// Draw record `i` of `split` at (x, y), `scale` screen pixels per image pixel.
fn image(ctx: &Ctx, split: &Split, i: usize, x: f64, y: f64, scale: f64) {
    let img = &split.images[i * IMG_LEN..(i + 1) * IMG_LEN];
    let plane = IMG * IMG;
    let mut rgba = vec![255u8; plane * 4];
    for p in 0..plane {
        for c in 0..3 {
            rgba[p * 4 + c] = img[c * plane + p]; // CHW -> RGBA
        }
    }
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), IMG as u32, IMG as u32).expect("ImageData");
    // putImageData does not scale: put the 32x32 image on a small canvas, draw that scaled.
    let doc = web_sys::window().and_then(|w| w.document()).expect("a document");
    let small: HtmlCanvasElement = doc.create_element("canvas").expect("canvas").dyn_into().expect("canvas");
    small.set_width(IMG as u32);
    small.set_height(IMG as u32);
    let sctx: Ctx = small.get_context("2d").ok().flatten().expect("2d").dyn_into().expect("2d");
    let _ = sctx.put_image_data(&data, 0.0, 0.0);
    ctx.set_image_smoothing_enabled(false);
    let _ = ctx.draw_image_with_html_canvas_element_and_dw_and_dh(&small, x, y, IMG as f64 * scale, IMG as f64 * scale);
}

/// Columns and cell size of the prediction grid.
pub const GRID_COLS: usize = 4;
pub const CELL_W: f64 = 240.0;
pub const CELL_H: f64 = 112.0;

/// The prediction grid: each test image with its true label, the predicted label (green when
/// right, red when wrong) and the top-3 probabilities; `probs` is None before any prediction.
pub fn predictions(canvas: &HtmlCanvasElement, test: &Split, records: &[u32], probs: Option<&[[f32; CLASSES]]>, classes: &[String]) {
    let ctx = context(canvas);
    for (k, &i) in records.iter().enumerate() {
        let (x, y) = ((k % GRID_COLS) as f64 * CELL_W, (k / GRID_COLS) as f64 * CELL_H);
        let truth = test.labels[i as usize] as usize;
        image(&ctx, test, i as usize, x + 4.0, y + 4.0, 3.0);
        let tx = x + 106.0;
        text(&ctx, &format!("true: {}", classes[truth]), tx, y + 14.0, INK, "left");
        let Some(p) = probs.map(|p| &p[k]) else {
            text(&ctx, "not predicted yet", tx, y + 34.0, GREY, "left");
            continue;
        };
        let top = top_k(p, 3);
        let right = top[0].0 == truth;
        ctx.set_font("bold 13px system-ui, sans-serif");
        text(&ctx, &format!("pred: {}", classes[top[0].0]), tx, y + 34.0, if right { GREEN } else { RED }, "left");
        ctx.set_font(FONT);
        for (j, &(c, pr)) in top.iter().enumerate() {
            let yy = y + 56.0 + j as f64 * 18.0;
            rect(&ctx, tx, yy - 6.0, 120.0 * pr as f64, 12.0, if c == truth { "#b7dfc0" } else { "#f3c1c1" });
            text(&ctx, &format!("{} {:.0} %", classes[c], pr * 100.0), tx + 2.0, yy, INK, "left");
        }
        ctx.set_stroke_style_str(if right { GREEN } else { RED });
        ctx.set_line_width(2.0);
        ctx.stroke_rect(x + 3.0, y + 3.0, 98.0, 98.0);
    }
}

/// Test accuracy per class: ours (blue, when evaluated) beside the PyTorch recipe's (grey).
pub fn class_bars(canvas: &HtmlCanvasElement, ours: Option<&[f64; CLASSES]>, reference: &[f64; CLASSES], classes: &[String], title: &str) {
    let ctx = context(canvas);
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let (l, t, b) = (52.0, 30.0, 24.0);
    let ph = h - t - b;
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, title, l, 12.0, INK, "left");
    ctx.set_font(FONT);
    for yv in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = t + ph * (1.0 - yv / 100.0);
        rect(&ctx, l, y, w - l, 1.0, FAINT);
        text(&ctx, &format!("{yv:.0} %"), l - 4.0, y, GREY, "right");
    }
    let slot = (w - l) / CLASSES as f64;
    let bw = slot * 0.34;
    for c in 0..CLASSES {
        let x0 = l + slot * c as f64 + slot * 0.14;
        let bar = |x: f64, v: f64, colour: &str| {
            let hh = ph * v / 100.0;
            rect(&ctx, x, t + ph - hh, bw, hh, colour);
            text(&ctx, &format!("{v:.0}"), x + bw / 2.0, t + ph - hh - 8.0, colour, "center");
        };
        if let Some(o) = ours {
            bar(x0, o[c] * 100.0, BLUE);
        }
        bar(x0 + bw + 2.0, reference[c], GREY);
        text(&ctx, &classes[c], x0 + bw, h - 10.0, INK, "center");
    }
}
