//! The page's logic that does not touch the browser, so it is tested natively: the curves drawn
//! live, the test images of the prediction grid, and the small formatting the page shows. (The
//! settings a link presets are in `recipe`.)

use crate::data::Split;
use crate::model::CLASSES;

/// The live curves: x is epochs done (fractional), y the value.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub train_accuracy: Vec<(f64, f64)>,
    pub test_accuracy: Vec<(f64, f64)>,
}

impl Curves {
    /// Back to `x` epochs (a run that goes back to its resume point after a divergence or a
    /// lost device): the points after it are dropped, so the steps trained again follow on
    /// and x never runs backwards. Whether a test point was dropped (the evaluation shown was
    /// of weights the run no longer has).
    pub fn roll_back(&mut self, x: f64) -> bool {
        // Points are at epochs_done of a whole step: anything within rounding of x is at x.
        let keep = |p: &(f64, f64)| p.0 <= x + 1e-9;
        self.loss.retain(keep);
        self.train_accuracy.retain(keep);
        let tests = self.test_accuracy.len();
        self.test_accuracy.retain(keep);
        self.test_accuracy.len() < tests
    }

    /// Keep each curve within `max` points however long the run: past it, the curve's x range
    /// is cut into max/4 equal spans and each span's points become their lowest and highest
    /// (in x order). The curve keeps its envelope (a spike stays) at an even resolution over
    /// the whole run, in at most half the points, so it grows again before the next thinning.
    /// True when a curve was thinned (the page then needs all of them again).
    pub fn thin(&mut self, max: usize) -> bool {
        let mut thinned = false;
        for c in [&mut self.loss, &mut self.train_accuracy, &mut self.test_accuracy] {
            if c.len() > max.max(8) {
                *c = span_envelopes(c, max.max(8) / 4);
                thinned = true;
            }
        }
        thinned
    }

    /// Whether every curve's x goes forward (never back).
    pub fn in_order(&self) -> bool {
        [&self.loss, &self.train_accuracy, &self.test_accuracy].iter().all(|c| c.windows(2).all(|w| w[0].0 <= w[1].0))
    }
}

/// `points` (x in order) in `spans` equal spans of x, each as its lowest and highest point.
fn span_envelopes(points: &[(f64, f64)], spans: usize) -> Vec<(f64, f64)> {
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let width = (x1 - x0) / spans as f64;
    let span_of = |x: f64| if width > 0.0 { (((x - x0) / width) as usize).min(spans - 1) } else { 0 };
    let mut out = Vec::with_capacity(2 * spans);
    let mut start = 0;
    while start < points.len() {
        let s = span_of(points[start].0);
        let end = start + points[start..].iter().take_while(|p| span_of(p.0) == s).count().max(1);
        out.extend(envelope(&points[start..end]));
        start = end;
    }
    out
}

/// The lowest and highest of a few neighbouring points, in x order (one point if one).
fn envelope(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let lo = points.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
    let hi = points.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    match (lo, hi) {
        (Some(lo), Some(hi)) if points.len() > 1 => {
            let (a, b) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
            if a == b {
                vec![a]
            } else {
                vec![a, b]
            }
        }
        _ => points.to_vec(),
    }
}

/// The most points a curve keeps (an hour's run adds about 100,000: drawing and memory stay
/// bounded; `Curves::thin`).
pub const MAX_CURVE_POINTS: usize = 4096;

/// The test records of the prediction grid: the first `per_class` of each class, in class
/// order, so every class shows.
pub fn grid_records(test: &Split, per_class: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for c in 0..CLASSES as u8 {
        out.extend(test.labels.iter().enumerate().filter(|(_, &l)| l == c).take(per_class).map(|(i, _)| i as u32));
    }
    out
}

/// The `k` most probable classes, most probable first.
pub fn top_k(p: &[f32; CLASSES], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..CLASSES).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|c| (c, p[c])).collect()
}

/// The label of the training progress bar.
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

/// "2 h 05 min", "3 min 07 s", "12 s".
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// Round axis ticks covering [lo, hi]: about `n` of them at 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let e = raw.log10().floor() as i32;
    let mag = 10f64.powi(e);
    let m = [1i64, 2, 5, 10].into_iter().find(|&m| m as f64 * mag >= raw).unwrap_or(10);
    let step = m as f64 * mag;
    // Each tick is an integer scaled by a power of ten in one rounding, so it prints as the
    // short decimal it is ("0.6", not the 0.6000000000000001 of 3 * 0.2).
    let at = |i: i64| if e < 0 { (i * m) as f64 / 10f64.powi(-e) } else { (i * m) as f64 * mag };
    // The ends count when they are a tick but for rounding (0.7 / 0.1 = 6.999...).
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(at).collect()
}

/// Half-width of the moving average `smooth` draws a curve of `n` points with: a fortieth of
/// the points each side (so the window stays a small part of the run however long it grows),
/// at most 25.
pub fn smooth_half_width(n: usize) -> usize {
    (n / 40).min(25)
}

/// A noisy curve's centred moving average over `2h + 1` points (h = smooth_half_width), the
/// window cut short at the ends (the first and last points average the h + 1 nearest). Same
/// x values; O(n) with a running sum.
pub fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let h = smooth_half_width(points.len());
    if h == 0 {
        return points.to_vec();
    }
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, y) in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + y);
    }
    (0..points.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(h), (i + h + 1).min(points.len()));
            (points[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// A chart's step axis: each epoch tick's step count as a short label ("250", "12.5k").
pub fn step_label(epoch: f64, steps_per_epoch: usize) -> String {
    let s = (epoch * steps_per_epoch as f64).round();
    if s >= 10_000.0 {
        format!("{}k", (s / 100.0).round() / 10.0)
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_runs_curves_stay_bounded_and_keep_their_envelope() {
        let mut c = super::Curves::default();
        let mut thinned = 0;
        // An hour's run: 100,000 chunks, a loss that falls with spikes every 997 chunks.
        for i in 0..100_000u32 {
            let x = i as f64 / 1000.0;
            let y = 2.3 / (1.0 + x) + if i % 997 == 0 { 5.0 } else { 0.0 };
            c.loss.push((x, y));
            thinned += c.thin(1000) as u32;
            assert!(c.loss.len() <= 1000);
        }
        println!("{} points kept, thinned {thinned} times", c.loss.len());
        assert!(c.loss.len() >= 250 && c.in_order(), "{}", c.loss.len());
        let max = c.loss.iter().map(|p| p.1).fold(0.0, f64::max);
        let spikes = c.loss.iter().filter(|p| p.1 > 5.0).count();
        assert!(max > 5.0 + 2.3 / 101.0 && spikes >= 90, "the spikes stay: the highest {max}, {spikes} of the 101 kept");
        assert!(c.loss.iter().any(|p| p.0 > 99.9), "the latest point stays");
        assert_eq!(c.loss[0], (0.0, 7.3), "the first point (a spike) stays");
    }

    #[test]
    fn curves_roll_back_to_the_resume_point_and_go_on_from_there() {
        let pts = |xs: &[f64]| xs.iter().map(|&x| (x, 1.0)).collect::<Vec<_>>();
        let mut c = super::Curves { loss: pts(&[0.1, 0.2, 0.3, 0.4]), train_accuracy: pts(&[0.1, 0.2, 0.3, 0.4]), test_accuracy: pts(&[0.25, 0.5]) };
        // Back to 0.3 epochs (written as a sum of steps, as a session computes it).
        assert!(c.roll_back(0.1 + 0.2), "the evaluation at 0.5 is gone");
        assert_eq!((c.loss.len(), c.train_accuracy.len(), c.test_accuracy.len()), (3, 3, 1));
        assert!(!c.roll_back(0.3), "nothing more to drop, and no test point");
        c.loss.push((0.35, 2.0));
        assert!(c.in_order());
        c.loss.push((0.2, 2.0));
        assert!(!c.in_order(), "x running backwards is seen");
    }

    use super::*;

    #[test]
    fn the_grid_shows_every_class_and_top_k_orders() {
        let test = Split { images: vec![0; 30 * 3072], labels: (0..30).map(|i| (i * 7 % 10) as u8).collect() };
        let g = grid_records(&test, 2);
        assert_eq!(g.len(), 20);
        for (k, &i) in g.iter().enumerate() {
            assert_eq!(test.labels[i as usize] as usize, k / 2);
        }
        let p = [0.05, 0.3, 0.0, 0.4, 0.05, 0.0, 0.2, 0.0, 0.0, 0.0];
        assert_eq!(top_k(&p, 3), vec![(3, 0.4), (1, 0.3), (6, 0.2)]);
    }

    #[test]
    fn durations_and_ticks_read_well() {
        assert_eq!(format_duration(12.4), "12 s");
        assert_eq!(format_duration(187.0), "3 min 07 s");
        assert_eq!(format_duration(7500.0), "2 h 05 min");
        assert_eq!(format_duration(f64::INFINITY), "-");
        // The progress bar's line, as the worker sends it (the epoch shown never past the last).
        assert_eq!(progress_label(3, 2, 10, 500, 2000.4, 187.0, "training"), "training · epoch 2/2 · step 10/500 · 2000 images/s · 3 min 07 s left");
        assert_eq!(progress_label(1, 2, 0, 500, 0.0, 0.0, "idle"), "idle · epoch 1/2 · step 0/500 · 0 images/s · - left");
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        // The chart labels print the ticks as they are: short decimals, at every scale.
        let labels = |v: Vec<f64>| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(" ");
        assert_eq!(labels(ticks(0.0, 1.0, 6)), "0 0.2 0.4 0.6 0.8 1");
        assert_eq!(labels(ticks(0.0, 0.7, 7)), "0 0.1 0.2 0.3 0.4 0.5 0.6 0.7");
        assert_eq!(labels(ticks(0.0, 0.07, 7)), "0 0.01 0.02 0.03 0.04 0.05 0.06 0.07");
        assert_eq!(labels(ticks(1.7, 2.45, 5)), "1.8 2 2.2 2.4");
        assert_eq!(labels(ticks(0.0, 30.0, 6)), "0 5 10 15 20 25 30");
        assert_eq!(labels(ticks(0.0, 3000.0, 6)), "0 500 1000 1500 2000 2500 3000");
        assert_eq!(ticks(0.0, 2.3, 4), vec![0.0, 1.0, 2.0]);
        assert_eq!(ticks(1.0, 1.0, 4), vec![1.0]);
    }

    #[test]
    fn a_noisy_curve_is_smoothed_and_keeps_its_trend() {
        // A rising line with alternating noise of +-0.3: the average cancels the noise.
        let pts: Vec<(f64, f64)> = (0..400).map(|i| (i as f64 / 100.0, i as f64 / 400.0 + if i % 2 == 0 { 0.3 } else { -0.3 })).collect();
        let s = smooth(&pts);
        assert_eq!(smooth_half_width(400), 10);
        assert_eq!(s.len(), pts.len());
        assert!(s.iter().zip(&pts).all(|(a, b)| a.0 == b.0), "the same x");
        // Inside, 21 points: the noise leaves at most 0.3 / 21, the trend is the centre's.
        for (i, p) in s.iter().enumerate().take(390).skip(10) {
            assert!((p.1 - i as f64 / 400.0).abs() <= 0.3 / 21.0 + 1e-12, "point {i}: {}", p.1);
        }
        // The ends average the 11 nearest.
        let first: f64 = pts[..11].iter().map(|p| p.1).sum::<f64>() / 11.0;
        assert!((s[0].1 - first).abs() < 1e-12);
        // Short curves are drawn as they are; a constant stays constant.
        assert_eq!(smooth(&pts[..30]), pts[..30].to_vec());
        assert!(smooth(&vec![(0.0, 0.5); 3000]).iter().all(|p| (p.1 - 0.5).abs() < 1e-12));
        assert_eq!(smooth_half_width(100_000), 25);
        assert!(smooth(&[]).is_empty());
        assert_eq!((step_label(0.5, 500), step_label(2.0, 12_500), step_label(1.0, 3)), ("250".to_string(), "25k".to_string(), "3".to_string()));
    }
}
