//! Canvas drawings of the page (CanvasRenderingContext2d): the progress bar, the loss and
//! accuracy curves, the prediction grid and the per-class accuracy bars. Each function draws a
//! whole canvas from the values it is given, so the page can redraw any of them at any time.

use tabcnn::app::{ticks, top_k};
use tabcnn::data::Split;
use tabcnn::explain::Layer;
use tabcnn::model::{Arch, Layout, CLASSES, CONV1_W, CONV2_W, H1, H2, IMG, IMG_LEN, K, P1, P2};
use tabcnn::outputs::EvalResult;
use tabcnn::outputs::Inside;
use tabcnn::views::{feature_maps, finite_probs, grey_filters, rgb_filters, rgba_from_record, Tile, OVERFLOWED};
use wasm_bindgen::{Clamped, JsCast};
use web_sys::{CanvasRenderingContext2d as Ctx, HtmlCanvasElement};

pub const BLUE: &str = "#2f6fdf";
pub const ORANGE: &str = "#e07b20";
pub const GREEN: &str = "#1f8a3a";
pub const RED: &str = "#c62828";
pub(crate) const GREY: &str = "#9aa0a6";
pub(crate) const INK: &str = "#202124";
const FAINT: &str = "#e8eaed";
pub(crate) const FONT: &str = "13px system-ui, sans-serif";

/// The 2D context of a canvas, cleared.
pub fn context(canvas: &HtmlCanvasElement) -> Ctx {
    let ctx: Ctx = canvas.get_context("2d").ok().flatten().expect("a 2d canvas context").dyn_into().expect("CanvasRenderingContext2d");
    ctx.clear_rect(0.0, 0.0, canvas.width() as f64, canvas.height() as f64);
    ctx.set_font(FONT);
    ctx.set_text_baseline("middle");
    ctx
}

/// The 2D context of a canvas, as drawn (to draw over it).
pub fn context_keep(canvas: &HtmlCanvasElement) -> Ctx {
    canvas.get_context("2d").ok().flatten().expect("a 2d canvas context").dyn_into().expect("CanvasRenderingContext2d")
}

pub(crate) fn text(ctx: &Ctx, s: &str, x: f64, y: f64, colour: &str, align: &str) {
    ctx.set_fill_style_str(colour);
    ctx.set_text_align(align);
    let _ = ctx.fill_text(s, x, y);
}

pub(crate) fn rect(ctx: &Ctx, x: f64, y: f64, w: f64, h: f64, colour: &str) {
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

/// One series of a line chart: (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: &'a [(f64, f64)],
    /// Draw a dot on each point (sparse series such as the test accuracy).
    pub dots: bool,
    /// Thin and pale, without a legend: the raw values behind their moving average.
    pub faint: bool,
}

/// A line chart over x in [0, x_max] epochs and y in [y_lo, y_hi]; `percent` labels y as per
/// cent. The first series is drawn last (on top). The x axis is labelled in epochs and, below,
/// in steps (`steps_per_epoch` of them an epoch; 0: unknown, not labelled). The canvas
/// carries the plot's geometry and the ticks for scripts (data-plot, data-x-ticks, data-step-ticks).
pub fn line_chart(canvas: &HtmlCanvasElement, title: &str, series: &[Series], x_max: f64, (y_lo, y_hi): (f64, f64), percent: bool, steps_per_epoch: usize) {
    let ctx = context(canvas);
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let (l, r, t, b) = (48.0, 12.0, 28.0, 40.0);
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
    let xt = ticks(0.0, x_max, 6);
    let steps: Vec<String> = xt.iter().map(|&e| tabcnn::app::step_label(e, steps_per_epoch)).collect();
    text(&ctx, "epoch", l - 6.0, t + ph + 12.0, GREY, "right");
    for (xv, st) in xt.iter().zip(&steps) {
        text(&ctx, &format!("{xv}"), sx(*xv), t + ph + 12.0, INK, "center");
        if steps_per_epoch > 0 {
            text(&ctx, st, sx(*xv), t + ph + 28.0, GREY, "center");
        }
    }
    if steps_per_epoch > 0 {
        text(&ctx, "step", l - 6.0, t + ph + 28.0, GREY, "right");
    }
    let _ = canvas.set_attribute("data-plot", &format!("{l} {t} {pw} {ph} {x_max} {y_lo} {y_hi}"));
    let _ = canvas.set_attribute("data-x-ticks", &xt.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
    let _ = canvas.set_attribute("data-step-ticks", &if steps_per_epoch > 0 { steps.join(",") } else { String::new() });
    ctx.set_stroke_style_str(GREY);
    ctx.stroke_rect(l, t, pw, ph);
    let mut lx = l + pw;
    let mut inside = 0.0;
    // Legends: the first two share the title row; more (overlaid runs) stack inside the
    // plot's top-right corner. Counted over the series with a legend.
    let legend: Vec<usize> = series.iter().scan(0, |k, s| Some(if s.faint { usize::MAX } else { std::mem::replace(k, *k + 1) })).collect();
    for (s, &i) in series.iter().zip(&legend).rev() {
        ctx.set_stroke_style_str(s.colour);
        ctx.set_fill_style_str(s.colour);
        ctx.set_global_alpha(if s.faint { 0.3 } else { 1.0 });
        ctx.set_line_width(if s.faint { 1.0 } else { 2.0 });
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
        ctx.set_global_alpha(1.0);
        if s.dots {
            for &(x, y) in s.points {
                ctx.begin_path();
                let _ = ctx.arc(sx(x), sy(y.clamp(y_lo, y_hi)), 3.5, 0.0, std::f64::consts::TAU);
                ctx.fill();
            }
        }
        if s.faint {
            continue;
        }
        let label = match s.points.last() {
            Some(&(_, y)) if percent => format!("{} {:.1} %", s.name, y * 100.0),
            Some(&(_, y)) => format!("{} {:.3}", s.name, y),
            None => s.name.to_string(),
        };
        if i >= 2 {
            text(&ctx, &label, l + pw - 6.0, t + 10.0 + inside, s.colour, "right");
            inside += 14.0;
            continue;
        }
        let tw = ctx.measure_text(&label).map(|m| m.width()).unwrap_or(80.0);
        text(&ctx, &label, lx, 12.0, s.colour, "right");
        lx -= tw + 18.0;
    }
}

/// Put `w` x `h` RGBA pixels at (x, y), `scale` screen pixels per pixel, unsmoothed.
pub(crate) fn pixels(ctx: &Ctx, rgba: &[u8], w: usize, h: usize, x: f64, y: f64, scale: f64) {
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), w as u32, h as u32).expect("ImageData");
    // putImageData does not scale: put the pixels on a small canvas, draw that scaled.
    let doc = web_sys::window().and_then(|w| w.document()).expect("a document");
    let small: HtmlCanvasElement = doc.create_element("canvas").expect("canvas").dyn_into().expect("canvas");
    small.set_width(w as u32);
    small.set_height(h as u32);
    let sctx: Ctx = small.get_context("2d").ok().flatten().expect("2d").dyn_into().expect("2d");
    let _ = sctx.put_image_data(&data, 0.0, 0.0);
    ctx.set_image_smoothing_enabled(false);
    let _ = ctx.draw_image_with_html_canvas_element_and_dw_and_dh(&small, x, y, w as f64 * scale, h as f64 * scale);
}

/// Draw record `i` of `split` at (x, y), `scale` screen pixels per image pixel.
fn image(ctx: &Ctx, split: &Split, i: usize, x: f64, y: f64, scale: f64) {
    pixels(ctx, &rgba_from_record(&split.images[i * IMG_LEN..(i + 1) * IMG_LEN]), IMG, IMG, x, y, scale);
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
        if !finite_probs(p) {
            ctx.set_font("bold 13px system-ui, sans-serif");
            text(&ctx, "outputs overflowed", tx, y + 34.0, RED, "left");
            ctx.set_font(FONT);
            text(&ctx, "(not finite: no", tx, y + 56.0, INK, "left");
            text(&ctx, "prediction to show)", tx, y + 74.0, INK, "left");
            continue;
        }
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

/// Tiles wrapped in rows within `width` from (x, y), at the largest scale up to `max_scale`
/// that keeps them within `max_rows` rows (scale 1 at least); draws them when `ctx` is given;
/// returns the height used.
#[allow(clippy::too_many_arguments)]
fn tile_grid(ctx: Option<&Ctx>, tiles: &[Tile], x: f64, y: f64, width: f64, max_scale: f64, gap: f64, max_rows: usize) -> Placed {
    let Some(t0) = tiles.first() else { return Placed { x, y, per_row: 1, scale: 1.0, gap, tw: 0, th: 0, count: 0 } };
    let fit = |s: f64| {
        let per_row = (((width + gap) / (t0.w as f64 * s + gap)).floor() as usize).max(1);
        (per_row, tiles.len().div_ceil(per_row))
    };
    let mut scale = max_scale;
    while scale > 1.0 && fit(scale).1 > max_rows {
        scale -= 1.0;
    }
    let (per_row, _) = fit(scale);
    if let Some(ctx) = ctx {
        put_grid(ctx, tiles, per_row, scale as usize, gap as usize, x, y);
    }
    Placed { x, y, per_row, scale, gap, tw: t0.w, th: t0.h, count: tiles.len() }
}

/// Where a grid of tiles was put (each tile `tw` x `th` pixels drawn `scale` times, `gap`
/// apart, `per_row` a row): to find the tile and its pixel under a click, or to frame one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Placed {
    pub x: f64,
    pub y: f64,
    pub per_row: usize,
    pub scale: f64,
    pub gap: f64,
    pub tw: usize,
    pub th: usize,
    pub count: usize,
}

impl Placed {
    pub fn height(&self) -> f64 {
        self.count.div_ceil(self.per_row) as f64 * (self.th as f64 * self.scale + self.gap)
    }

    /// The canvas point of pixel (py, px) of tile `i` (its top-left corner).
    pub fn at(&self, i: usize, py: usize, px: usize) -> (f64, f64) {
        let (step_x, step_y) = (self.tw as f64 * self.scale + self.gap, self.th as f64 * self.scale + self.gap);
        (self.x.round() + (i % self.per_row) as f64 * step_x + px as f64 * self.scale, self.y.round() + (i / self.per_row) as f64 * step_y + py as f64 * self.scale)
    }

    /// (tile, row, column) under canvas point (x, y), if any.
    pub fn hit(&self, x: f64, y: f64) -> Option<(usize, usize, usize)> {
        let (step_x, step_y) = (self.tw as f64 * self.scale + self.gap, self.th as f64 * self.scale + self.gap);
        let (dx, dy) = (x - self.x.round(), y - self.y.round());
        if dx < 0.0 || dy < 0.0 {
            return None;
        }
        let (col, row) = ((dx / step_x) as usize, (dy / step_y) as usize);
        let (px, py) = (((dx - col as f64 * step_x) / self.scale) as usize, ((dy - row as f64 * step_y) / self.scale) as usize);
        let i = row * self.per_row + col;
        (col < self.per_row && i < self.count && px < self.tw && py < self.th).then_some((i, py, px))
    }

    /// "x y per_row scale gap tw th count", for scripts (the canvas's data-grids).
    pub fn describe(&self) -> String {
        format!("{} {} {} {} {} {} {} {}", self.x.round(), self.y.round(), self.per_row, self.scale, self.gap, self.tw, self.th, self.count)
    }
}

/// Tiles (all of one size) in rows of `per_row`, each scaled `scale` times (nearest pixel),
/// `gap` pixels apart, composed into one picture and put at (x, y) in one call: a view of
/// hundreds of tiles costs one ImageData, not hundreds of canvases.
fn put_grid(ctx: &Ctx, tiles: &[Tile], per_row: usize, scale: usize, gap: usize, x: f64, y: f64) {
    let Some(t0) = tiles.first() else { return };
    let (tw, th) = (t0.w * scale, t0.h * scale);
    let rows = tiles.len().div_ceil(per_row);
    let (w, h) = (per_row.min(tiles.len()) * (tw + gap), rows * (th + gap));
    let mut rgba = vec![0u8; w * h * 4];
    for (i, t) in tiles.iter().enumerate() {
        let (ox, oy) = ((i % per_row) * (tw + gap), (i / per_row) * (th + gap));
        for py in 0..th {
            for px in 0..tw {
                let src = ((py / scale) * t.w + px / scale) * 4;
                let dst = ((oy + py) * w + ox + px) * 4;
                rgba[dst..dst + 4].copy_from_slice(&t.rgba[src..src + 4]);
            }
        }
    }
    if let Ok(data) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), w as u32, h as u32) {
        let _ = ctx.put_image_data(&data, x.round(), y.round());
    }
}

/// Set a canvas's height (which clears it) when it changes, for drawings sized by the network.
fn fit_height(canvas: &HtmlCanvasElement, h: f64) {
    let h = h.ceil() as u32;
    if canvas.height() != h {
        canvas.set_height(h);
    }
}

/// The filters of conv1 (C1 RGB tiles) and conv2 (C2 columns of C1 grey tiles) from packed
/// parameters of the network `arch`; `note` says which step they are from. The canvas grows
/// with the network.
pub fn filters(canvas: &HtmlCanvasElement, arch: Arch, params: &[f32], note: &str) {
    let l = Layout::new(arch);
    let width = canvas.width() as f64;
    let rgb = rgb_filters(&params[l.specs[CONV1_W].range()], arch.c1, K);
    let conv1_h = tile_grid(None, &rgb, 0.0, 0.0, width, 10.0, 8.0, 2).height();
    // conv2: one column per filter, one row per input map.
    let col = (width / arch.c2 as f64).min(35.0);
    let scale = ((col - 3.0) / K as f64).floor().clamp(1.0, 4.0);
    let col = col.floor();
    let row = K as f64 * scale + ((col as usize).saturating_sub(K * scale as usize).max(1)) as f64;
    let conv2_top = 30.0 + conv1_h + 24.0;
    fit_height(canvas, conv2_top + arch.c1 as f64 * row + 24.0);
    let ctx = context(canvas);
    ctx.set_font("bold 13px system-ui, sans-serif");
    text(&ctx, &format!("conv1: {} filters 5x5x3", arch.c1), 0.0, 10.0, INK, "left");
    tile_grid(Some(&ctx), &rgb, 0.0, 24.0, width, 10.0, 8.0, 2);
    text(&ctx, &format!("conv2: {} filters (columns) over the {} conv1 maps (rows)", arch.c2, arch.c1), 0.0, conv2_top - 12.0, INK, "left");
    ctx.set_font(FONT);
    // grey_filters lists filter by filter (o, then c); the picture has one row per map c.
    let g = grey_filters(&params[l.specs[CONV2_W].range()], arch.c2, arch.c1, K);
    let by_map: Vec<Tile> = (0..arch.c1).flat_map(|c| (0..arch.c2).map(move |o| (o, c))).map(|(o, c)| g[o * arch.c1 + c].clone()).collect();
    let cell = K * scale as usize;
    put_grid(&ctx, &by_map, arch.c2, scale as usize, (col as usize).saturating_sub(cell).max(1), 0.0, conv2_top);
    text(&ctx, note, 0.0, conv2_top + arch.c1 as f64 * row + 12.0, GREY, "left");
}

/// Where `features` put each part: the input, each layer's tiles, and the probability rows
/// (fc3), so a click can name the output under it and a frame can mark one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureGrids {
    pub input: Placed,
    pub maps: Vec<(Layer, Placed)>,
    /// Top of the first probability bar, and the rows' pitch.
    pub probs: (f64, f64),
}

impl FeatureGrids {
    /// The output (layer, (c, y, x)) under canvas point (x, y): a map pixel, an fc unit or a class's bar.
    pub fn hit(&self, x: f64, y: f64) -> Option<(Layer, (usize, usize, usize))> {
        if let Some(found) = self.maps.iter().find_map(|(l, g)| g.hit(x, y).map(|(i, py, px)| (*l, (i, py, px)))) {
            return Some(found);
        }
        let (top, pitch) = self.probs;
        let row = ((y - top) / pitch).floor();
        ((0.0..CLASSES as f64).contains(&row) && (0.0..500.0).contains(&x)).then_some((Layer::Fc3, (row as usize, 0, 0)))
    }

    /// Each grid as "layer x y per_row scale gap tw th count", `;` between, for scripts.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("input {}", self.input.describe())];
        parts.extend(self.maps.iter().map(|(l, g)| format!("{} {}", l.name(), g.describe())));
        parts.push(format!("fc3 0 {} 1 {} 0 500 1 {CLASSES}", self.probs.0, self.probs.1));
        parts.join(";")
    }
}

/// One image through the network `arch`: input, conv1, pool1, conv2 and pool2 maps, the fc1
/// and fc2 activations as strips, and the probabilities as bars. The canvas grows with the
/// network. Returns where each part went.
pub fn features(canvas: &HtmlCanvasElement, arch: Arch, record: &[u8], inside: &Inside, classes: &[String], title: &str) -> FeatureGrids {
    let width = canvas.width() as f64;
    let Arch { c1, c2, f1, f2 } = arch;
    // (layer, label, tiles, largest scale, gap, rows at most)
    let sections: [(Layer, String, Vec<Tile>, f64, f64, usize); 6] = [
        (Layer::Conv1, format!("conv1 + ReLU: {c1} maps 28x28"), feature_maps(&inside.h1, c1, H1, H1), 3.0, 4.0, 2),
        (Layer::Pool1, format!("pool1: {c1} maps 14x14"), feature_maps(&inside.p1, c1, P1, P1), 4.0, 4.0, 2),
        (Layer::Conv2, format!("conv2 + ReLU: {c2} maps 10x10"), feature_maps(&inside.h2, c2, H2, H2), 5.0, 8.0, 2),
        (Layer::Pool2, format!("pool2: {c2} maps 5x5 (flattened to the {} inputs of fc1)", arch.fc1_in()), feature_maps(&inside.p2, c2, P2, P2), 10.0, 8.0, 2),
        (Layer::Fc1, format!("fc1 + ReLU: {f1} activations"), feature_maps(&inside.a1, f1, 1, 1), 7.0, 1.0, 2),
        (Layer::Fc2, format!("fc2 + ReLU: {f2} activations"), feature_maps(&inside.a2, f2, 1, 1), 7.0, 1.0, 2),
    ];
    // The input sits left of conv1's maps.
    let left = 110.0;
    let span = |i: usize| if i == 0 { width - left } else { width };
    let heights: Vec<f64> = sections.iter().enumerate().map(|(i, (_, _, t, s, g, r))| tile_grid(None, t, 0.0, 0.0, span(i), *s, *g, *r).height()).collect();
    let top = 46.0;
    let mut ys = Vec::new();
    let mut y = top;
    for (i, h) in heights.iter().enumerate() {
        let h = if i == 0 { h.max(IMG as f64 * 3.0) } else { *h };
        ys.push(y);
        y += h + 26.0;
    }
    let probs_top = y;
    fit_height(canvas, probs_top + 14.0 + CLASSES as f64 * 14.0);
    let ctx = context(canvas);
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, title, 0.0, 10.0, INK, "left");
    ctx.set_font(FONT);
    let label = |s: &str, x: f64, y: f64| text(&ctx, s, x, y, GREY, "left");
    label("input 3x32x32", 0.0, top - 12.0);
    pixels(&ctx, &rgba_from_record(record), IMG, IMG, 0.0, top, 3.0);
    let mut maps = Vec::new();
    for (i, ((layer, name, tiles, s, g, r), &y)) in sections.iter().zip(&ys).enumerate() {
        let x = if i == 0 { left } else { 0.0 };
        label(name, x, y - 12.0);
        maps.push((*layer, tile_grid(Some(&ctx), tiles, x, y, span(i), *s, *g, *r)));
    }
    label("fc3 and softmax: the probabilities", 0.0, probs_top - 2.0);
    let p = inside.probabilities();
    let best = top_k(&p, 1)[0].0;
    for (c, name) in classes.iter().enumerate().take(CLASSES) {
        let y = probs_top + 10.0 + c as f64 * 14.0;
        text(&ctx, name, 90.0, y + 6.0, INK, "right");
        rect(&ctx, 96.0, y, 400.0 * p[c] as f64, 11.0, if c == best { BLUE } else { "#a8c4f0" });
        text(&ctx, &format!("{:.1} %", p[c] * 100.0), 100.0 + 400.0 * p[c] as f64, y + 6.0, INK, "left");
    }
    let input = Placed { x: 0.0, y: top, per_row: 1, scale: 3.0, gap: 0.0, tw: IMG, th: IMG, count: 1 };
    FeatureGrids { input, maps, probs: (probs_top + 8.0, 14.0) }
}

/// Geometry of the confusion matrix canvas (index.html carries the same numbers in the
/// canvas's data-left/-top/-cell for tests): left and top margins, cell size.
pub const CM_LEFT: f64 = 90.0;
pub const CM_TOP: f64 = 70.0;
pub const CM_CELL: f64 = 37.0;

/// The confusion matrix as a heat map with counts: the diagonal in green, mistakes in red,
/// each scaled to its own largest count; `selected` framed.
pub fn confusion(canvas: &HtmlCanvasElement, eval: Option<&EvalResult>, classes: &[String], selected: Option<(usize, usize)>) {
    let ctx = context(canvas);
    ctx.set_font("bold 14px system-ui, sans-serif");
    let Some(r) = eval else {
        text(&ctx, "the confusion matrix appears after the first evaluation", 0.0, 12.0, GREY, "left");
        return;
    };
    text(&ctx, &format!("Confusion matrix: {} test images, {:.1} % right", r.total(), 100.0 * r.accuracy()), 0.0, 12.0, INK, "left");
    ctx.set_font(FONT);
    text(&ctx, "predicted →", CM_LEFT + 5.0 * CM_CELL, 34.0, GREY, "center");
    text(&ctx, "true ↓", 4.0, CM_TOP - 12.0, GREY, "left");
    let m = &r.confusion;
    let diag_max = (0..CLASSES).map(|i| m[i][i]).max().unwrap_or(0).max(1) as f64;
    let off_max = (0..CLASSES).flat_map(|i| (0..CLASSES).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i][j]).max().unwrap_or(0).max(1) as f64;
    for i in 0..CLASSES {
        text(&ctx, &classes[i], CM_LEFT - 6.0, CM_TOP + (i as f64 + 0.5) * CM_CELL, INK, "right");
        let short: String = classes[i].chars().take(5).collect();
        text(&ctx, &short, CM_LEFT + (i as f64 + 0.5) * CM_CELL, CM_TOP - 10.0, INK, "center");
        for (j, &count) in m[i].iter().enumerate() {
            let v = count as f64;
            let (x, y) = (CM_LEFT + j as f64 * CM_CELL, CM_TOP + i as f64 * CM_CELL);
            let a = if i == j { v / diag_max } else { v / off_max };
            let colour = if i == j { format!("rgba(31,138,58,{:.3})", 0.08 + 0.85 * a) } else { format!("rgba(198,40,40,{:.3})", if v > 0.0 { 0.05 + 0.85 * a } else { 0.0 }) };
            rect(&ctx, x, y, CM_CELL - 1.0, CM_CELL - 1.0, &colour);
            text(&ctx, &count.to_string(), x + CM_CELL / 2.0, y + CM_CELL / 2.0, if a > 0.6 { "#ffffff" } else { INK }, "center");
        }
    }
    if let Some((t, p)) = selected {
        ctx.set_stroke_style_str(INK);
        ctx.set_line_width(3.0);
        ctx.stroke_rect(CM_LEFT + p as f64 * CM_CELL, CM_TOP + t as f64 * CM_CELL, CM_CELL - 1.0, CM_CELL - 1.0);
    }
}

/// The test images of one confusion cell (the first that fit: `shown`, in order) with the
/// probability the network gives the predicted class and the true one; `total` in the cell.
pub fn cell_images(canvas: &HtmlCanvasElement, shown: &Split, probs: &[[f32; CLASSES]], classes: &[String], truth: usize, pred: usize, total: usize) {
    let ctx = context(canvas);
    ctx.set_font("bold 14px system-ui, sans-serif");
    let what = if truth == pred { format!("{} predicted right", classes[truth]) } else { format!("{} predicted as {}", classes[truth], classes[pred]) };
    let n = probs.len();
    let more = if total > n { format!(" (the first {n} shown)") } else { String::new() };
    text(&ctx, &format!("{what}: {total} images{more}"), 0.0, 12.0, INK, "left");
    ctx.set_font("11px system-ui, sans-serif");
    for (k, p) in probs.iter().enumerate() {
        let (x, y) = ((k % CELL_COLS) as f64 * 60.0, 28.0 + (k / CELL_COLS) as f64 * 88.0);
        image(&ctx, shown, k, x, y, 1.5);
        if !finite_probs(p) {
            text(&ctx, "overflowed", x, y + 56.0, RED, "left");
            continue;
        }
        text(&ctx, &format!("{} {:.0}%", short(&classes[pred]), p[pred] * 100.0), x, y + 56.0, if truth == pred { GREEN } else { RED }, "left");
        if truth != pred {
            text(&ctx, &format!("{} {:.0}%", short(&classes[truth]), p[truth] * 100.0), x, y + 70.0, GREY, "left");
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(5).collect()
}

/// Columns of the confusion cell's image list (it shows `worker::views::CELL_SHOWN` images).
pub const CELL_COLS: usize = 8;

/// The visitor's own image as the network sees it (32x32) with its top-3 guesses.
pub fn own_result(canvas: &HtmlCanvasElement, record: &[u8], probs: &[f32; CLASSES], classes: &[String], title: &str) {
    let ctx = context(canvas);
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, title, 0.0, 10.0, INK, "left");
    ctx.set_font(FONT);
    pixels(&ctx, &rgba_from_record(record), IMG, IMG, 0.0, 24.0, 3.0);
    text(&ctx, "what the network sees (32x32)", 0.0, 126.0, GREY, "left");
    if !finite_probs(probs) {
        ctx.set_font("bold 13px system-ui, sans-serif");
        text(&ctx, OVERFLOWED, 126.0, 44.0, RED, "left");
        ctx.set_font(FONT);
        return;
    }
    for (j, (c, p)) in top_k(probs, 3).into_iter().enumerate() {
        let y = 34.0 + j as f64 * 28.0;
        rect(&ctx, 120.0, y, 300.0 * p as f64, 20.0, if j == 0 { BLUE } else { "#a8c4f0" });
        if j == 0 {
            ctx.set_font("bold 13px system-ui, sans-serif");
        }
        text(&ctx, &format!("{} {:.1} %", classes[c], p * 100.0), 126.0, y + 10.0, if j == 0 && p > 0.45 { "#ffffff" } else { INK }, "left");
        ctx.set_font(FONT);
    }
}
