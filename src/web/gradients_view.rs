//! The layers' health (main thread): the gradient norm of each layer over the run (log scale:
//! a curve falling for decades is a vanishing gradient, one climbing an exploding one) and the
//! histograms of each layer's weights and last gradient at the latest refresh. The worker
//! computes them between chunks (tabcnn::stats); #histograms carries the numbers for scripts.

use crate::dom::{canvas, el, set_attr};
use crate::draw::{self, rect, text, Series, BLUE, GREY, INK, ORANGE};
use crate::ui::{Page, Ui};
use tabcnn::stats::{Histogram, LayerStats};

/// One colour per layer (conv1, conv2, fc1, fc2, fc3).
const LAYER_COLOURS: [&str; 5] = ["#2f6fdf", "#e07b20", "#1f8a3a", "#a142f4", "#c62828"];
/// log10 of a norm of 0 (a layer that got no gradient) is drawn here.
const FLOOR: f64 = -8.0;

/// A refresh's statistics: kept (a step before the last one starts a new history: a new run)
/// and drawn.
pub(crate) fn show(ui: &Ui, step: u64, epochs: f64, layers: Vec<LayerStats>) {
    {
        let mut p = ui.borrow_mut();
        if p.grad_history.last().is_some_and(|h| h.0 > step) {
            p.grad_history.clear();
        }
        p.grad_history.push((step, epochs, layers.iter().map(|l| l.grad_norm).collect()));
        p.layer_stats = Some((step, layers));
    }
    draw_all(&ui.borrow());
}

fn draw_all(p: &Page) {
    let Some((step, layers)) = &p.layer_stats else { return };
    let series_points: Vec<Vec<(f64, f64)>> =
        (0..layers.len()).map(|k| p.grad_history.iter().map(|(_, x, n)| (*x, if n[k] > 0.0 { (n[k] as f64).log10() } else { FLOOR })).collect()).collect();
    let all = series_points.iter().flatten().map(|q| q.1);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { ((lo - 0.5).floor(), (hi + 0.5).ceil()) } else { (-4.0, 0.0) };
    let series: Vec<Series> = layers
        .iter()
        .zip(&series_points)
        .enumerate()
        .map(|(k, (l, pts))| Series { name: &l.name, colour: LAYER_COLOURS[k % 5], points: pts, dots: pts.len() < 3, faint: false })
        .collect();
    // The run so far (the norms change fastest early: a whole run's axis would crush them).
    let x_max = p.grad_history.last().map_or(1.0, |h| h.1).max(1e-3);
    draw::line_chart(&canvas("grad-norms"), "log10 gradient norm", &series, x_max, (lo, hi), false, p.steps_per_epoch);
    histograms(layers, *step);
    let e = el("histograms");
    let csv = |f: &dyn Fn(&LayerStats) -> f32| layers.iter().map(|l| format!("{:e}", f(l))).collect::<Vec<_>>().join(",");
    set_attr(&e, "data-step", &step.to_string());
    set_attr(&e, "data-layers", &layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(","));
    set_attr(&e, "data-grad-norms", &csv(&|l| l.grad_norm));
    set_attr(&e, "data-weight-norms", &csv(&|l| l.weight_norm));
    set_attr(&e, "data-counts", &layers.iter().map(|l| l.weights.counts.iter().sum::<u32>().to_string()).collect::<Vec<_>>().join(","));
    set_attr(&e, "data-points", &p.grad_history.len().to_string());
}

/// Each layer a row: its weights' histogram (blue) and its gradient's (orange), each on its
/// own range, bars scaled to the row's largest bin.
fn histograms(layers: &[LayerStats], step: u64) {
    let cv = canvas("histograms");
    let ctx = draw::context(&cv);
    ctx.set_font("bold 14px system-ui, sans-serif");
    text(&ctx, &format!("Weights and gradients per layer at step {step}"), 0.0, 10.0, INK, "left");
    ctx.set_font(draw::FONT);
    let (left, col, row) = (48.0, 205.0, 44.0);
    text(&ctx, "weights", left, 30.0, BLUE, "left");
    text(&ctx, "gradients of the last step", left + col + 10.0, 30.0, ORANGE, "left");
    for (r, l) in layers.iter().enumerate() {
        let y = 42.0 + r as f64 * row;
        text(&ctx, &l.name, 0.0, y + row / 2.0 - 4.0, INK, "left");
        bars(&ctx, &l.weights, left, y, col, row - 16.0, BLUE);
        bars(&ctx, &l.grads, left + col + 10.0, y, col, row - 16.0, ORANGE);
    }
}

fn bars(ctx: &web_sys::CanvasRenderingContext2d, h: &Histogram, x: f64, y: f64, w: f64, ht: f64, colour: &str) {
    let top = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = w / h.counts.len() as f64;
    rect(ctx, x, y + ht, w, 1.0, GREY);
    for (i, &c) in h.counts.iter().enumerate() {
        // A square-root scale, so the tails show beside the peak.
        let bh = ht * (c as f64 / top).sqrt();
        rect(ctx, x + i as f64 * bw, y + ht - bh, (bw - 1.0).max(1.0), bh, colour);
    }
    text(ctx, &format!("±{:.1e}", h.range), x + w, y + ht + 8.0, GREY, "right");
}
