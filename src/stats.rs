//! Per-layer statistics of the weights and of the last step's gradient, for the page's
//! "signal of vanishing or exploding gradients": each layer's (weight and bias together) L2
//! norms and histograms. Computed between chunks from what the engine already holds; nothing
//! of it runs in a training step.

use crate::model::Layout;
use serde::{Deserialize, Serialize};

/// Bins of each histogram (odd, so 0 sits in the middle bin).
pub const BINS: usize = 41;

/// Counts of values in BINS equal bins over [-range, range].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub range: f32,
    pub counts: Vec<u32>,
}

impl Histogram {
    /// Over [-max|v|, max|v|] (a layer's own scale: weights and gradients differ by orders of
    /// magnitude); NaN and infinities are not counted.
    pub fn of(values: &[f32]) -> Histogram {
        let range = values.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
        let mut counts = vec![0u32; BINS];
        if range > 0.0 {
            for &v in values.iter().filter(|v| v.is_finite()) {
                let b = ((v / range + 1.0) * 0.5 * BINS as f32).floor() as usize;
                counts[b.min(BINS - 1)] += 1;
            }
        } else {
            counts[BINS / 2] = values.iter().filter(|v| v.is_finite()).count() as u32;
        }
        Histogram { range, counts }
    }
}

/// One layer (its weight and bias tensors): norms and histograms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// "conv1", "conv2", "fc1", "fc2", "fc3".
    pub name: String,
    pub weight_norm: f32,
    pub grad_norm: f32,
    pub weights: Histogram,
    pub grads: Histogram,
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32
}

/// Each layer's statistics from packed parameters and gradients (both [P], as `layout`).
pub fn layer_stats(layout: &Layout, params: &[f32], grads: &[f32]) -> Vec<LayerStats> {
    assert!(params.len() == layout.total && grads.len() == layout.total, "params and grads packed as the layout");
    layout
        .specs
        .chunks(2)
        .map(|wb| {
            let take = |v: &[f32]| wb.iter().flat_map(|s| v[s.range()].iter().copied()).collect::<Vec<f32>>();
            let (w, g) = (take(params), take(grads));
            LayerStats {
                name: wb[0].name.trim_end_matches(".weight").to_string(),
                weight_norm: norm(&w),
                grad_norm: norm(&g),
                weights: Histogram::of(&w),
                grads: Histogram::of(&g),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Arch};

    #[test]
    fn histograms_count_every_value_in_its_bin() {
        let h = Histogram::of(&[-2.0, -1.0, 0.0, 0.01, 1.0, 2.0, f32::NAN]);
        assert_eq!(h.range, 2.0);
        assert_eq!(h.counts.iter().sum::<u32>(), 6, "NaN is not counted");
        assert_eq!((h.counts[0], h.counts[BINS - 1], h.counts[BINS / 2]), (1, 1, 2), "the ends in the end bins, 0 and 0.01 in the middle one");
        assert_eq!(h.counts[(BINS - 1) / 4], 1, "-1 in the bin a quarter along");
        let z = Histogram::of(&[0.0; 5]);
        assert_eq!((z.range, z.counts[BINS / 2]), (0.0, 5));
    }

    #[test]
    fn each_layer_has_its_weights_and_gradients() {
        let l = Layout::new(Arch::LENET);
        let p = init_params(&l, 1);
        let mut g = vec![0.0f32; l.total];
        g[l.specs[2].offset] = 3.0; // conv2.weight
        g[l.specs[3].offset] = 4.0; // conv2.bias
        let s = layer_stats(&l, &p, &g);
        assert_eq!(s.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["conv1", "conv2", "fc1", "fc2", "fc3"]);
        assert_eq!((s[1].grad_norm, s[0].grad_norm), (5.0, 0.0));
        assert_eq!(s[2].weights.counts.iter().sum::<u32>() as usize, 400 * 120 + 120, "fc1's weights and biases");
        let want = p[l.specs[8].range()].iter().chain(&p[l.specs[9].range()]).map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
        assert!((s[4].weight_norm - want).abs() <= 1e-6 * want);
    }
}
