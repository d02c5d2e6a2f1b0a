//! The classroom views' browser-free logic, tested natively: which test images sit in a cell
//! of the confusion matrix, the visitor's own picture turned into the network's input, and
//! the weights and activations turned into pixels (filters as RGB or grey tiles, feature
//! maps as grey tiles). The page (src/web/draw.rs) only puts these pixels on canvases.

use crate::model::{CLASSES, IMG, IMG_LEN};

/// The test records of confusion cell (true class `truth`, predicted `pred`), in record order.
pub fn confusion_records(preds: &[u32], labels: &[u8], truth: usize, pred: usize) -> Vec<u32> {
    preds.iter().zip(labels).enumerate().filter(|(_, (&p, &l))| l as usize == truth && p as usize == pred).map(|(i, _)| i as u32).collect()
}

/// A 32x32 RGBA picture (the browser's canvas after drawing the visitor's image at 32x32)
/// as the network's u8 CHW record [3,32,32]. Transparent pixels are composited over white,
/// as the page shows them.
pub fn record_from_rgba(rgba: &[u8]) -> Result<Vec<u8>, String> {
    if rgba.len() != IMG * IMG * 4 {
        return Err(format!("expected 32x32 RGBA pixels ({} bytes), got {} bytes", IMG * IMG * 4, rgba.len()));
    }
    let plane = IMG * IMG;
    let mut out = vec![0u8; IMG_LEN];
    for p in 0..plane {
        let a = rgba[p * 4 + 3] as u32;
        for c in 0..3 {
            let v = rgba[p * 4 + c] as u32;
            out[c * plane + p] = ((v * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    Ok(out)
}

/// A u8 CHW record [3,32,32] as RGBA pixels [32,32,4] (opaque).
pub fn rgba_from_record(record: &[u8]) -> Vec<u8> {
    let plane = IMG * IMG;
    let mut rgba = vec![255u8; plane * 4];
    for p in 0..plane {
        for c in 0..3 {
            rgba[p * 4 + c] = record[c * plane + p];
        }
    }
    rgba
}

/// A small picture: `w` x `h` RGBA pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub w: usize,
    pub h: usize,
    pub rgba: Vec<u8>,
}

fn grey(v: f32) -> [u8; 4] {
    let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [g, g, g, 255]
}

/// The conv1 filters, weight [OC,3,K,K], as OC colour tiles of K x K: each weight mapped
/// to 128 + 127 w / max|w| over the whole layer (one scale, so filters compare), R G B from
/// the three input channels. Grey is zero; bright red means "responds to red here".
pub fn rgb_filters(weight: &[f32], oc: usize, k: usize) -> Vec<Tile> {
    assert_eq!(weight.len(), oc * 3 * k * k);
    let scale = weight.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    (0..oc)
        .map(|o| {
            let mut rgba = Vec::with_capacity(k * k * 4);
            for p in 0..k * k {
                for c in 0..3 {
                    let w = weight[(o * 3 + c) * k * k + p];
                    rgba.push((128.0 + 127.0 * w / scale).round().clamp(0.0, 255.0) as u8);
                }
                rgba.push(255);
            }
            Tile { w: k, h: k, rgba }
        })
        .collect()
}

/// The conv2 filters, weight [OC,C,K,K], as OC x C grey tiles of K x K (row o, column c),
/// on one scale for the layer: mid-grey is zero, white most positive, black most negative.
pub fn grey_filters(weight: &[f32], oc: usize, c: usize, k: usize) -> Vec<Tile> {
    assert_eq!(weight.len(), oc * c * k * k);
    let scale = weight.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    weight.chunks_exact(k * k).map(|w| Tile { w: k, h: k, rgba: w.iter().flat_map(|&v| grey(0.5 + 0.5 * v / scale)).collect() }).collect()
}

/// Feature maps [C,H,W] (ReLU outputs, >= 0) as C grey tiles of W x H, on one scale for the
/// layer (black 0, white the layer's largest activation), so strong and weak maps show as
/// such. Also used for the fc activations as one row.
pub fn feature_maps(maps: &[f32], c: usize, h: usize, w: usize) -> Vec<Tile> {
    assert_eq!(maps.len(), c * h * w);
    let top = maps.iter().fold(0.0f32, |m, &v| m.max(v)).max(1e-12);
    maps.chunks_exact(h * w).map(|m| Tile { w, h, rgba: m.iter().flat_map(|&v| grey(v / top)).collect() }).collect()
}

/// What the page says at once when Pause or Reset (`action`: "pausing", "resetting") is
/// pressed while steps take long: the worker answers between steps, so the visitor learns when
/// (the step in flight, and how long a step takes at `images_per_second`). None when a step
/// takes under half a second (the control is answered within a second).
pub fn control_wait_note(action: &str, batch: usize, images_per_second: f64) -> Option<String> {
    let step = batch as f64 / images_per_second;
    (step.is_finite() && step >= 0.5)
        .then(|| format!("{action} after the step in flight: a step of {batch} images takes about {step:.1} s here (an evaluation under way stops at its next piece)"))
}

/// What the page shows for probabilities that are not finite: the logits overflowed (weights
/// that are finite but huge, or a run that diverged), so there is no prediction to show.
pub const OVERFLOWED: &str = "the network's outputs overflowed (not finite)";

/// Whether every probability is a number (softmax of finite logits always is).
pub fn finite_probs(p: &[f32; CLASSES]) -> bool {
    p.iter().all(|v| v.is_finite())
}

/// The softmax probabilities as "class p %" lines, most probable first (`k` of them); one
/// line saying they overflowed when they are not finite.
pub fn top_lines(p: &[f32; CLASSES], classes: &[String], k: usize) -> Vec<String> {
    if !finite_probs(p) {
        return vec![OVERFLOWED.to_string()];
    }
    crate::app::top_k(p, k).into_iter().map(|(c, pr)| format!("{} {:.1} %", classes[c], pr * 100.0)).collect()
}

/// "Hot" colour of v in [0, 1]: black, red, yellow, white.
pub fn hot(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0) * 3.0;
    let ramp = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [ramp(v), ramp(v - 1.0), ramp(v - 2.0)]
}

/// A heat map [H,W] (values >= 0) as a hot tile, scaled to its own largest value.
pub fn heat_tile(heat: &[f32], w: usize, h: usize) -> Tile {
    assert_eq!(heat.len(), w * h);
    let top = heat.iter().fold(0.0f32, |m, &v| m.max(v)).max(1e-12);
    Tile {
        w,
        h,
        rgba: heat
            .iter()
            .flat_map(|&v| {
                let [r, g, b] = hot(v / top);
                [r, g, b, 255]
            })
            .collect(),
    }
}

/// Grad-CAM's map [10,10] on the 32x32 input [32,32]: conv2's output (y, x) sees input rows
/// 2y .. 2y+13 (conv1 5x5, pool 2x2, conv2 5x5), centred on 2y + 6.5, and columns alike, so
/// each input pixel takes the bilinear blend of the four outputs whose centres surround it
/// (clamped at the edges, where no centre lies beyond).
pub fn cam_on_input(cam: &[f32]) -> Vec<f32> {
    let n = crate::model::H2;
    assert_eq!(cam.len(), n * n);
    let at = |p: usize| {
        let u = ((p as f32 - 6.5) / 2.0).clamp(0.0, (n - 1) as f32);
        let i = (u.floor() as usize).min(n - 2);
        (i, u - i as f32)
    };
    let mut out = Vec::with_capacity(IMG * IMG);
    for py in 0..IMG {
        let (y, fy) = at(py);
        for px in 0..IMG {
            let (x, fx) = at(px);
            let v = |yy: usize, xx: usize| cam[yy * n + xx];
            out.push((1.0 - fy) * ((1.0 - fx) * v(y, x) + fx * v(y, x + 1)) + fy * ((1.0 - fx) * v(y + 1, x) + fx * v(y + 1, x + 1)));
        }
    }
    out
}

/// The image (a u8 record [3,32,32]) with a heat map [32,32] over it: each pixel greyed a
/// little, then blended toward its hot colour by up to 70 % where the heat is highest.
pub fn overlay(record: &[u8], heat: &[f32]) -> Tile {
    let plane = IMG * IMG;
    assert!(record.len() == 3 * plane && heat.len() == plane);
    let top = heat.iter().fold(0.0f32, |m, &v| m.max(v)).max(1e-12);
    let mut rgba = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        let a = 0.7 * (heat[p] / top).clamp(0.0, 1.0);
        let colour = hot(heat[p] / top);
        for c in 0..3 {
            let base = 0.6 * record[c * plane + p] as f32 + 0.4 * 128.0;
            rgba.push(((1.0 - a) * base + a * colour[c] as f32).round() as u8);
        }
        rgba.push(255);
    }
    Tile { w: IMG, h: IMG, rgba }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_control_that_waits_for_a_long_step_says_so() {
        let n = super::control_wait_note("pausing", 428, 60.0).unwrap();
        assert_eq!(n, "pausing after the step in flight: a step of 428 images takes about 7.1 s here (an evaluation under way stops at its next piece)");
        assert!(super::control_wait_note("pausing", 64, 2400.0).is_none(), "27 ms steps: answered at once");
        assert!(super::control_wait_note("resetting", 64, 0.0).is_none(), "no speed measured yet: nothing to say");
    }

    use super::*;

    #[test]
    fn a_confusion_cell_holds_exactly_its_records() {
        let labels = [0u8, 1, 1, 2, 1, 0];
        let preds = [0u32, 2, 1, 2, 2, 1];
        assert_eq!(confusion_records(&preds, &labels, 1, 2), vec![1, 4]);
        assert_eq!(confusion_records(&preds, &labels, 0, 0), vec![0]);
        assert_eq!(confusion_records(&preds, &labels, 2, 0), Vec::<u32>::new());
        // Every record is in exactly one cell.
        let total: usize = (0..3).flat_map(|t| (0..3).map(move |p| (t, p))).map(|(t, p)| confusion_records(&preds, &labels, t, p).len()).sum();
        assert_eq!(total, labels.len());
    }

    #[test]
    fn own_pictures_become_records_and_back() {
        let rec: Vec<u8> = (0..IMG_LEN).map(|i| (i * 7 % 256) as u8).collect();
        let rgba = rgba_from_record(&rec);
        assert_eq!(record_from_rgba(&rgba).unwrap(), rec, "an opaque picture round-trips exactly");
        // A transparent pixel is white, a half-transparent black one mid-grey.
        let mut rgba = vec![0u8; 32 * 32 * 4];
        rgba[7] = 128;
        let r = record_from_rgba(&rgba).unwrap();
        assert_eq!((r[0], r[1024], r[2048]), (255, 255, 255));
        assert_eq!((r[1], r[1025], r[2049]), (127, 127, 127));
        assert!(record_from_rgba(&[0; 100]).unwrap_err().contains("32x32 RGBA"));
    }

    #[test]
    fn filters_and_maps_share_one_scale_per_layer() {
        // conv1-like: 2 filters of 3x2x2; the largest |w| is 2.0 (filter 1, blue, pixel 3).
        let mut w = vec![0.0f32; 2 * 3 * 4];
        w[0] = 1.0; // filter 0, red, pixel 0
        w[12 + 2 * 4 + 3] = -2.0; // filter 1, blue, pixel 3
        let t = rgb_filters(&w, 2, 2);
        assert_eq!(t.len(), 2);
        assert_eq!(&t[0].rgba[0..4], &[192, 128, 128, 255]);
        assert_eq!(&t[1].rgba[12..16], &[128, 128, 1, 255]);
        let g = grey_filters(&w, 2, 3, 2);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0].rgba[0], 191);
        assert_eq!(g[5].rgba[12], 0);
        let m = feature_maps(&[0.0, 1.0, 2.0, 4.0, 0.0, 0.5, 0.0, 0.0], 2, 2, 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].rgba.iter().step_by(4).copied().collect::<Vec<_>>(), vec![0, 64, 128, 255]);
        assert_eq!(m[1].rgba[4], 32);
    }

    #[test]
    fn heat_maps_sit_where_the_network_sees() {
        assert_eq!((hot(0.0), hot(1.0), hot(1.0 / 3.0)), ([0, 0, 0], [255, 255, 255], [255, 0, 0]));
        // One hot conv2 output at (0, 0): its receptive field is centred on input (6.5, 6.5).
        let mut cam = vec![0.0f32; 100];
        cam[0] = 1.0;
        let up = cam_on_input(&cam);
        assert_eq!(up.len(), 1024);
        assert_eq!(up[6 * 32 + 6], 1.0, "the corner up to its centre is the output itself");
        assert_eq!(up[0], 1.0, "clamped at the edge");
        assert!((up[7 * 32 + 7] - 0.75 * 0.75).abs() < 1e-6, "half a pixel past the centre: {}", up[7 * 32 + 7]);
        assert_eq!(up[9 * 32 + 9], 0.0, "the next centre (8.5) is past: nothing");
        // The last output's centre is 2 * 9 + 6.5 = 24.5.
        let mut cam = vec![0.0f32; 100];
        cam[99] = 2.0;
        let up = cam_on_input(&cam);
        assert_eq!((up[31 * 32 + 31], up[25 * 32 + 25]), (2.0, 2.0));
        assert!(up[24 * 32 + 24] < 2.0 && up[22 * 32 + 22] == 0.0);
        assert!(cam_on_input(&[0.5; 100]).iter().all(|&v| (v - 0.5).abs() < 1e-6), "a flat map stays flat");
        // The overlay keeps a cold pixel's grey and turns the hottest one toward white.
        let rec = vec![200u8; 3072];
        let mut heat = vec![0.0f32; 1024];
        heat[5] = 3.0;
        let t = overlay(&rec, &heat);
        assert_eq!(&t.rgba[0..4], &[171, 171, 171, 255]);
        assert_eq!(&t.rgba[20..24], &[230, 230, 230, 255]);
        assert_eq!(heat_tile(&heat, 32, 32).rgba[20..23], [255, 255, 255]);
    }
}
