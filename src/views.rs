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

/// The softmax probabilities as "class p %" lines, most probable first (`k` of them).
pub fn top_lines(p: &[f32; CLASSES], classes: &[String], k: usize) -> Vec<String> {
    crate::app::top_k(p, k).into_iter().map(|(c, pr)| format!("{} {:.1} %", classes[c], pr * 100.0)).collect()
}

#[cfg(test)]
mod tests {
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
}
