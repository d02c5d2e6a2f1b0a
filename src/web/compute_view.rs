//! "A convolution, computed in front of you" (main thread): click any output of the followed
//! image's network (a conv or pool map pixel, an fc unit, a class's bar) and the page shows the
//! arithmetic that made it, from the weights of the step the activations were read at
//! (tabcnn::explain), with the input window framed on the network picture. Step and Play slide
//! the window across the map. #conv carries the numbers for scripts.

use crate::dom::{canvas, el, on, set_attr};
use crate::draw::{self, rect, text, FeatureGrids, Placed, FONT, GREY, INK};
use crate::ui::Ui;
use tabcnn::explain::{explain, ConvWindow, Explained, FcUnit, Layer, PoolWindow};
use tabcnn::model::{Arch, P2};
use tabcnn::outputs::Inside;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::CanvasRenderingContext2d as Ctx;

/// fc terms listed (the largest |input x weight|).
const FC_TOP: usize = 10;
/// Play advances the window this often (ms).
const PLAY_MS: i32 = 350;
/// Frame of the selected output and its window.
const MARK: &str = "#e07b20";

/// The followed test image as the worker last sent it, and where its picture's parts are.
pub(crate) struct Followed {
    pub(crate) record: u32,
    pub(crate) step: u64,
    pub(crate) arch: Arch,
    pub(crate) image: Vec<u8>,
    pub(crate) inside: Inside,
    pub(crate) params: Vec<f32>,
    pub(crate) title: String,
    pub(crate) grids: FeatureGrids,
}

/// The handlers: a click on the network picture, Step, Play.
pub(crate) fn wire(ui: &Ui) {
    let u = ui.clone();
    on("features", "click", move |e| {
        let Some((x, y)) = crate::classroom::canvas_point("features", &e) else { return };
        let hit = u.borrow().followed.as_ref().and_then(|f| f.grids.hit(x, y));
        if let Some(at) = hit {
            u.borrow_mut().explained = Some(at);
            show(&u);
        }
    });
    let u = ui.clone();
    on("conv-step", "click", move |_| advance(&u));
    let u = ui.clone();
    let tick = Closure::<dyn FnMut()>::new(move || advance(&u));
    let u = ui.clone();
    on("conv-play", "click", move |_| {
        let Some(w) = web_sys::window() else { return };
        let mut p = u.borrow_mut();
        let playing = match p.playing.take() {
            Some(id) => {
                w.clear_interval_with_handle(id);
                false
            }
            None => {
                p.playing = w.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), PLAY_MS).ok();
                p.playing.is_some()
            }
        };
        el("conv-play").set_text_content(Some(if playing { "Pause" } else { "Play" }));
        set_attr(&el("conv"), "data-playing", if playing { "1" } else { "0" });
    });
}

/// The next output in reading order (the window slides across the map).
fn advance(ui: &Ui) {
    let mut p = ui.borrow_mut();
    let (Some((layer, at)), Some(f)) = (p.explained, p.followed.as_ref()) else { return };
    p.explained = Some((layer, layer.next(f.arch, at)));
    drop(p);
    show(ui);
}

/// Draw the followed image's network with the selected output framed, and its arithmetic.
pub(crate) fn show(ui: &Ui) {
    let grids = {
        let p = ui.borrow();
        let Some(f) = &p.followed else { return };
        draw::features(&canvas("features"), f.arch, &f.image, &f.inside, &p.classes, &f.title)
    };
    set_attr(&el("features"), "data-grids", &grids.describe());
    if let Some(f) = ui.borrow_mut().followed.as_mut() {
        f.grids = grids.clone();
    }
    let p = ui.borrow();
    let Some(f) = &p.followed else { return };
    let Some((layer, at)) = p.explained else { return };
    let c = el("conv");
    match explain(f.arch, &f.params, &f.inside, layer, at, FC_TOP) {
        Ok(e) => {
            frame(&grids, f.arch, layer, at);
            let cv = canvas("conv-view");
            match &e {
                Explained::Conv(w) => conv(&cv, w, f.step),
                Explained::Pool(w) => pool(&cv, w, f.step),
                Explained::Fc(u) => fc(&cv, u, f.step, &p.classes),
            }
            let (value, engine) = e.values();
            let pre = match &e {
                Explained::Conv(w) => w.pre,
                Explained::Pool(w) => w.value,
                Explained::Fc(u) => u.pre,
            };
            for (k, v) in [
                ("data-layer", layer.name().to_string()),
                ("data-c", at.0.to_string()),
                ("data-y", at.1.to_string()),
                ("data-x", at.2.to_string()),
                ("data-record", f.record.to_string()),
                ("data-step", f.step.to_string()),
                ("data-value", format!("{value:e}")),
                ("data-engine", format!("{engine:e}")),
                ("data-pre", format!("{pre:e}")),
                ("data-terms", terms(&e)),
                ("data-bound", format!("{:e}", e.rounding_bound())),
            ] {
                set_attr(&c, k, &v);
            }
            c.set_text_content(Some(&format!(
                "{} output ({},{},{}) at step {}: the view computes {value:.5}, the engine holds {engine:.5}",
                layer.name(),
                at.0,
                at.1,
                at.2,
                f.step
            )));
        }
        Err(e) => c.set_text_content(Some(&e)),
    }
}

/// How many terms the view summed (conv: C x K x K products; fc: its inputs; pool: 4).
fn terms(e: &Explained) -> String {
    match e {
        Explained::Conv(w) => w.products.len().to_string(),
        Explained::Pool(_) => "4".into(),
        Explained::Fc(u) => u.inputs.to_string(),
    }
}

/// Frame the selected output and the inputs it was computed from on the network picture.
fn frame(g: &FeatureGrids, arch: Arch, layer: Layer, (c, y, x): (usize, usize, usize)) {
    let ctx = draw::context_keep(&canvas("features"));
    ctx.set_stroke_style_str(MARK);
    ctx.set_line_width(2.0);
    let grid = |l: Layer| g.maps.iter().find(|(m, _)| *m == l).map(|(_, p)| *p);
    let boxed = |p: &Placed, i: usize, py: usize, px: usize, n: usize| {
        let (bx, by) = p.at(i, py, px);
        ctx.stroke_rect(bx - 1.0, by - 1.0, n as f64 * p.scale + 2.0, n as f64 * p.scale + 2.0);
    };
    if let Some(out) = grid(layer) {
        boxed(&out, c, y, x, 1);
    }
    match layer {
        Layer::Conv1 => boxed(&g.input, 0, y, x, 5),
        Layer::Conv2 => {
            if let Some(p1) = grid(Layer::Pool1) {
                (0..arch.c1).for_each(|ci| boxed(&p1, ci, y, x, 5));
            }
        }
        Layer::Pool1 => {
            if let Some(h) = grid(Layer::Conv1) {
                boxed(&h, c, 2 * y, 2 * x, 2);
            }
        }
        Layer::Pool2 => {
            if let Some(h) = grid(Layer::Conv2) {
                boxed(&h, c, 2 * y, 2 * x, 2);
            }
        }
        Layer::Fc3 => ctx.stroke_rect(0.0, g.probs.0 + c as f64 * g.probs.1, 500.0, g.probs.1),
        Layer::Fc1 | Layer::Fc2 => {}
    }
}

/// A number as the view writes it in a cell.
fn short(v: f32) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 9.995 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Cell background: blue for positive, red for negative, by |v| / scale.
fn shade(v: f32, scale: f32) -> String {
    let a = (v.abs() / scale.max(1e-12)).min(1.0) * 0.55;
    if v >= 0.0 {
        format!("rgba(47,111,223,{a:.3})")
    } else {
        format!("rgba(198,40,40,{a:.3})")
    }
}

/// A K x K grid of values at (x, y), cells `cw` x `ch`, numbers written when they fit.
fn grid(ctx: &Ctx, v: &[f32], k: usize, (x, y): (f64, f64), (cw, ch): (f64, f64), scale: f32) {
    for (i, &value) in v.iter().enumerate() {
        let (cx, cy) = (x + (i % k) as f64 * cw, y + (i / k) as f64 * ch);
        rect(ctx, cx, cy, cw - 1.0, ch - 1.0, &shade(value, scale));
        if cw >= 24.0 {
            text(ctx, &short(value), cx + cw / 2.0, cy + ch / 2.0, INK, "center");
        }
    }
}

fn fit(cv: &web_sys::HtmlCanvasElement, h: f64) -> Ctx {
    if cv.height() != h as u32 {
        cv.set_height(h as u32);
    }
    draw::context(cv)
}

/// A conv output: for each input channel its window, the filter's slice and the products,
/// each channel's sum, then the total, the bias, the ReLU and the engine's value.
fn conv(cv: &web_sys::HtmlCanvasElement, w: &ConvWindow, step: u64) {
    let k = w.k;
    let numbers = w.c <= 6;
    let (cw, ch) = if numbers { (29.0, 15.0) } else { (8.0, 8.0) };
    let block = k as f64 * cw + if numbers { 12.0 } else { 6.0 };
    let per_row = ((cv.width() as f64 + 6.0) / block).floor().max(1.0) as usize;
    let band = 3.0 * (k as f64 * ch + 16.0) + 22.0;
    let rows = w.c.div_ceil(per_row);
    let ctx = fit(cv, 50.0 + rows as f64 * band + 60.0);
    ctx.set_font("bold 14px system-ui, sans-serif");
    let input = if w.layer == Layer::Conv1 { "the input" } else { "pool1's maps" };
    text(&ctx, &format!("{} map {}, output (y {}, x {}) at step {step}: ReLU(Σ {input} × filter {} + bias)", w.layer.name(), w.oc, w.y, w.x, w.oc), 0.0, 10.0, INK, "left");
    ctx.set_font(if numbers { "10px system-ui, sans-serif" } else { FONT });
    let scale = |v: &[f32]| v.iter().copied().map(f32::abs).fold(0.0f32, f32::max);
    let (si, sw, sp) = (scale(&w.inputs), scale(&w.weights), scale(&w.products));
    let kk = k * k;
    for ci in 0..w.c {
        let (x, y) = ((ci % per_row) as f64 * block, 34.0 + (ci / per_row) as f64 * band);
        let name = if w.layer == Layer::Conv1 { ["red", "green", "blue"][ci].to_string() } else { format!("map {ci}") };
        let rows = [(format!("{name}: input"), &w.inputs, si), ("× weight".to_string(), &w.weights, sw), ("= product".to_string(), &w.products, sp)];
        for (r, (label, v, s)) in rows.iter().enumerate() {
            let ry = y + r as f64 * (k as f64 * ch + 16.0);
            text(&ctx, label, x, ry + 6.0, GREY, "left");
            grid(&ctx, &v[ci * kk..(ci + 1) * kk], k, (x, ry + 13.0), (cw, ch), *s);
        }
        text(&ctx, &format!("Σ {:.3}", w.partial[ci]), x, y + 3.0 * (k as f64 * ch + 16.0) + 6.0, INK, "left");
    }
    let y = 34.0 + rows as f64 * band + 8.0;
    ctx.set_font("bold 14px system-ui, sans-serif");
    let sum = w.pre - w.bias;
    text(&ctx, &format!("Σ of {} products = {sum:.4}   + bias {:.4} = {:.4}   ReLU → {:.4}", w.products.len(), w.bias, w.pre, w.value), 0.0, y, INK, "left");
    ctx.set_font(FONT);
    text(
        &ctx,
        &format!("the engine's {} map {} holds {:.4} at (y {}, x {}): difference {:.1e}", w.layer.name(), w.oc, w.engine, w.y, w.x, (w.value - w.engine).abs()),
        0.0,
        y + 22.0,
        GREY,
        "left",
    );
}

/// A pool output: the 2x2 window of conv outputs, the winner framed.
fn pool(cv: &web_sys::HtmlCanvasElement, w: &PoolWindow, step: u64) {
    let ctx = fit(cv, 170.0);
    let conv = if w.layer == Layer::Pool1 { "conv1" } else { "conv2" };
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(
        &ctx,
        &format!("{} map {}, output (y {}, x {}) at step {step}: the largest of {conv}'s 2x2 window at (y {}, x {})", w.layer.name(), w.c, w.y, w.x, 2 * w.y, 2 * w.x),
        0.0,
        10.0,
        INK,
        "left",
    );
    let top = w.four.iter().copied().fold(0.0f32, f32::max);
    for (i, &v) in w.four.iter().enumerate() {
        let (x, y) = (20.0 + (i % 2) as f64 * 82.0, 34.0 + (i / 2) as f64 * 42.0);
        rect(&ctx, x, y, 80.0, 40.0, &shade(v, top));
        text(&ctx, &format!("{v:.4}"), x + 40.0, y + 20.0, INK, "center");
        if i == w.winner {
            ctx.set_stroke_style_str(draw::GREEN);
            ctx.set_line_width(3.0);
            ctx.stroke_rect(x, y, 80.0, 40.0);
        }
    }
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(
        &ctx,
        &format!("max = {:.4} (the {} one wins; on a tie the first)", w.value, ["top-left", "top-right", "bottom-left", "bottom-right"][w.winner]),
        200.0,
        60.0,
        INK,
        "left",
    );
    ctx.set_font(FONT);
    text(&ctx, &format!("the engine's {} map {} holds {:.4}; only the winner passes the gradient back", w.layer.name(), w.c, w.engine), 200.0, 84.0, GREY, "left");
}

/// Which value input `i` of an fc layer is.
fn fc_input(layer: Layer, i: usize) -> String {
    match layer {
        Layer::Fc1 => format!("pool2 map {} (y {}, x {})", i / (P2 * P2), i % (P2 * P2) / P2, i % P2),
        Layer::Fc2 => format!("fc1 unit {i}"),
        _ => format!("fc2 unit {i}"),
    }
}

/// An fc unit: its largest terms as bars, the rest summed, the bias, the ReLU.
fn fc(cv: &web_sys::HtmlCanvasElement, u: &FcUnit, step: u64, classes: &[String]) {
    let ctx = fit(cv, 60.0 + u.top.len() as f64 * 18.0 + 70.0);
    ctx.set_font("bold 14px system-ui, sans-serif");
    let what = if u.layer == Layer::Fc3 {
        format!("fc3 unit {} (the logit of {})", u.unit, classes.get(u.unit).map(String::as_str).unwrap_or("?"))
    } else {
        format!("{} unit {}", u.layer.name(), u.unit)
    };
    let relu = if u.layer == Layer::Fc3 { "" } else { "ReLU" };
    text(&ctx, &format!("{what} at step {step}: {relu}(Σ over its {} inputs of input × weight + bias); the {} largest terms", u.inputs, u.top.len()), 0.0, 10.0, INK, "left");
    ctx.set_font(FONT);
    let top = u.top.first().map(|t| t.3.abs()).unwrap_or(1.0).max(1e-12);
    for (r, &(i, a, w, p)) in u.top.iter().enumerate() {
        let y = 34.0 + r as f64 * 18.0;
        text(&ctx, &fc_input(u.layer, i), 0.0, y + 7.0, GREY, "left");
        text(&ctx, &format!("{a:.3} × {w:.3} = {p:.4}"), 390.0, y + 7.0, INK, "right");
        let len = 300.0 * (p.abs() / top) as f64;
        rect(&ctx, if p >= 0.0 { 560.0 } else { 560.0 - len }, y + 2.0, len, 11.0, &shade(p, 0.0));
    }
    let y = 34.0 + u.top.len() as f64 * 18.0 + 12.0;
    text(&ctx, &format!("+ the other {} terms: {:.4}   + bias {:.4}", u.inputs - u.top.len(), u.rest, u.bias), 0.0, y, INK, "left");
    ctx.set_font("bold 14px system-ui, sans-serif");
    let out = if u.layer == Layer::Fc3 {
        format!("= {:.4} (no ReLU: softmax turns the logits into probabilities)", u.value)
    } else {
        format!("= {:.4}   ReLU → {:.4}", u.pre, u.value)
    };
    text(&ctx, &out, 0.0, y + 22.0, INK, "left");
    ctx.set_font(FONT);
    text(&ctx, &format!("the engine holds {:.4}: difference {:.1e}", u.engine, (u.value - u.engine).abs()), 0.0, y + 44.0, GREY, "left");
}
