//! One output of a layer as the arithmetic that made it, for the classroom's "convolution
//! computed in front of you": the input window under a conv output with the filter, the
//! products, their sum plus the bias and the ReLU; the four inputs of a pool output and which
//! won; an fc unit's largest contributions. Computed from the weights and the activations the
//! engine read at one step (`Inside`), so the view's result can be checked against the engine's
//! own value, which it carries beside it (`engine`).

use crate::model::{Arch, Layout, C1_IN, CLASSES, CONV1_B, CONV1_W, CONV2_B, CONV2_W, FC1_B, FC1_W, FC2_B, FC2_W, FC3_B, FC3_W, H1, H2, IMG, K, P1, P2};
use crate::outputs::Inside;
use serde::{Deserialize, Serialize};

/// A layer whose outputs the view explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer {
    Conv1,
    Pool1,
    Conv2,
    Pool2,
    Fc1,
    Fc2,
    Fc3,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Conv1 => "conv1",
            Layer::Pool1 => "pool1",
            Layer::Conv2 => "conv2",
            Layer::Pool2 => "pool2",
            Layer::Fc1 => "fc1",
            Layer::Fc2 => "fc2",
            Layer::Fc3 => "fc3",
        }
    }

    /// The layer's output shape (C, H, W); an fc layer is (units, 1, 1).
    pub fn shape(self, arch: Arch) -> (usize, usize, usize) {
        match self {
            Layer::Conv1 => (arch.c1, H1, H1),
            Layer::Pool1 => (arch.c1, P1, P1),
            Layer::Conv2 => (arch.c2, H2, H2),
            Layer::Pool2 => (arch.c2, P2, P2),
            Layer::Fc1 => (arch.f1, 1, 1),
            Layer::Fc2 => (arch.f2, 1, 1),
            Layer::Fc3 => (CLASSES, 1, 1),
        }
    }

    /// The next output in reading order (x, then y, then the channel), for the play control.
    pub fn next(self, arch: Arch, (c, y, x): (usize, usize, usize)) -> (usize, usize, usize) {
        let (cs, h, w) = self.shape(arch);
        if x + 1 < w {
            (c, y, x + 1)
        } else if y + 1 < h {
            (c, y + 1, 0)
        } else {
            ((c + 1) % cs, 0, 0)
        }
    }
}

/// One conv output, relu(sum over c, ky, kx of input[c, y+ky, x+kx] * weight[oc, c, ky, kx] + bias[oc]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvWindow {
    pub layer: Layer,
    pub oc: usize,
    pub y: usize,
    pub x: usize,
    /// Input channels C and kernel size K.
    pub c: usize,
    pub k: usize,
    pub inputs: Vec<f32>,   // [C,K,K] the layer's input under the window
    pub weights: Vec<f32>,  // [C,K,K] filter oc
    pub products: Vec<f32>, // [C,K,K] inputs * weights
    pub partial: Vec<f32>,  // [C] each channel's sum of products
    pub bias: f32,
    /// Sum of all products plus the bias (summed in f64, then rounded once).
    pub pre: f32,
    /// max(pre, 0): the view's value of the map.
    pub value: f32,
    /// The engine's activation at (oc, y, x).
    pub engine: f32,
}

/// The four conv outputs under one pool output, and which of them the max took.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolWindow {
    pub layer: Layer,
    pub c: usize,
    pub y: usize,
    pub x: usize,
    /// [2,2] conv outputs (after ReLU) at (2y+dy, 2x+dx), row-major.
    pub four: [f32; 4],
    /// Index into `four` of the winner (the first of equal ones, as the engines take it).
    pub winner: usize,
    pub value: f32,
    pub engine: f32,
}

/// One fc unit: sum over i of input[i] * weight[unit, i] + bias, with its largest terms.
#[derive(Clone, Debug, PartialEq)]
pub struct FcUnit {
    pub layer: Layer,
    pub unit: usize,
    pub inputs: usize,
    /// The largest |input * weight| terms, largest first: (input index, input, weight, product).
    pub top: Vec<(usize, f32, f32, f32)>,
    /// Sum of the terms not in `top`.
    pub rest: f32,
    /// Sum over all terms of |input * weight|: the scale of the sum's rounding.
    pub abs_sum: f32,
    pub bias: f32,
    pub pre: f32,
    /// relu(pre) for fc1 and fc2; pre itself for fc3 (the logit).
    pub value: f32,
    pub engine: f32,
}

/// What the view shows for one output.
#[derive(Clone, Debug, PartialEq)]
pub enum Explained {
    Conv(ConvWindow),
    Pool(PoolWindow),
    Fc(FcUnit),
}

impl Explained {
    /// (the view's value, the engine's value).
    pub fn values(&self) -> (f32, f32) {
        match self {
            Explained::Conv(w) => (w.value, w.engine),
            Explained::Pool(p) => (p.value, p.engine),
            Explained::Fc(f) => (f.value, f.engine),
        }
    }

    /// How far the engine's f32 value may be from the view's and still be the same sum: an f32
    /// sum of n products in any order is within n * 2^-24 of the sum of their magnitudes (plus
    /// the bias's) of the exact one (Higham's gamma_(n+1), to first order), and the view rounds
    /// its exact sum once (one more 2^-24). The ReLU and the pool's max are exact.
    pub fn rounding_bound(&self) -> f32 {
        const U: f64 = 1.0 / (1u64 << 24) as f64;
        let (n, magnitude) = match self {
            Explained::Conv(w) => (w.products.len(), w.products.iter().map(|p| p.abs() as f64).sum::<f64>() + w.bias.abs() as f64),
            Explained::Pool(p) => (0, p.value.abs() as f64),
            Explained::Fc(f) => (f.inputs, f.abs_sum as f64 + f.bias.abs() as f64),
        };
        ((n + 2) as f64 * U * magnitude) as f32
    }
}

/// Output (c, y, x) of `layer` for the image whose activations are `inside`, computed from
/// `params` (the weights of the same step). An fc unit is (unit, 0, 0); `top` of its terms are
/// listed. Refused, with what is wrong, when the place is outside the layer or the tensors are
/// not of `arch`.
pub fn explain(arch: Arch, params: &[f32], inside: &Inside, layer: Layer, (c, y, x): (usize, usize, usize), top: usize) -> Result<Explained, String> {
    let l = Layout::new(arch);
    if params.len() != l.total {
        return Err(format!("{} parameters, but {} packs {}", params.len(), arch.name(), l.total));
    }
    if inside.h1.len() != arch.c1 * H1 * H1 || inside.h2.len() != arch.c2 * H2 * H2 || inside.a1.len() != arch.f1 || inside.a2.len() != arch.f2 {
        return Err(format!("the activations are not those of {}", arch.name()));
    }
    let (cs, h, w) = layer.shape(arch);
    if c >= cs || y >= h || x >= w {
        return Err(format!("{} has outputs [{cs},{h},{w}]: ({c},{y},{x}) is outside it", layer.name()));
    }
    let t = |i: usize| &params[l.specs[i].range()];
    Ok(match layer {
        Layer::Conv1 => Explained::Conv(conv(layer, &inside.x, C1_IN, IMG, t(CONV1_W), t(CONV1_B), &inside.h1, H1, (c, y, x))),
        Layer::Conv2 => Explained::Conv(conv(layer, &inside.p1, arch.c1, P1, t(CONV2_W), t(CONV2_B), &inside.h2, H2, (c, y, x))),
        Layer::Pool1 => Explained::Pool(pool(layer, &inside.h1, H1, &inside.p1, (c, y, x))),
        Layer::Pool2 => Explained::Pool(pool(layer, &inside.h2, H2, &inside.p2, (c, y, x))),
        Layer::Fc1 => Explained::Fc(fc(layer, &inside.p2, t(FC1_W), t(FC1_B), &inside.a1, c, top, true)),
        Layer::Fc2 => Explained::Fc(fc(layer, &inside.a1, t(FC2_W), t(FC2_B), &inside.a2, c, top, true)),
        Layer::Fc3 => Explained::Fc(fc(layer, &inside.a2, t(FC3_W), t(FC3_B), &inside.logits, c, top, false)),
    })
}

/// inp [C,S,S], weight [OC,C,K,K], bias [OC], out [OC,OS,OS] (OS = S-K+1).
fn conv(layer: Layer, inp: &[f32], c: usize, s: usize, weight: &[f32], bias: &[f32], out: &[f32], os: usize, (oc, y, x): (usize, usize, usize)) -> ConvWindow {
    let mut inputs = Vec::with_capacity(c * K * K);
    for ci in 0..c {
        for ky in 0..K {
            inputs.extend_from_slice(&inp[(ci * s + y + ky) * s + x..][..K]);
        }
    }
    let weights = weight[oc * c * K * K..(oc + 1) * c * K * K].to_vec();
    let products: Vec<f32> = inputs.iter().zip(&weights).map(|(a, b)| a * b).collect();
    let exact = |r: &[f32], q: &[f32]| r.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
    let partial = (0..c).map(|ci| exact(&inputs[ci * K * K..][..K * K], &weights[ci * K * K..][..K * K]) as f32).collect();
    let pre = (exact(&inputs, &weights) + bias[oc] as f64) as f32;
    ConvWindow { layer, oc, y, x, c, k: K, inputs, weights, products, partial, bias: bias[oc], pre, value: pre.max(0.0), engine: out[(oc * os + y) * os + x] }
}

/// conv [C,S,S] (after ReLU), pooled [C,S/2,S/2].
fn pool(layer: Layer, conv: &[f32], s: usize, pooled: &[f32], (c, y, x): (usize, usize, usize)) -> PoolWindow {
    let at = |dy: usize, dx: usize| conv[(c * s + 2 * y + dy) * s + 2 * x + dx];
    let four = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
    // The engines' rule: the first of equal maxima wins.
    let winner = (1..4).fold(0, |b, i| if four[i] > four[b] { i } else { b });
    PoolWindow { layer, c, y, x, four, winner, value: four[winner], engine: pooled[(c * (s / 2) + y) * (s / 2) + x] }
}

/// inp [IN], weight [OUT,IN], bias [OUT], out [OUT].
fn fc(layer: Layer, inp: &[f32], weight: &[f32], bias: &[f32], out: &[f32], unit: usize, top: usize, relu: bool) -> FcUnit {
    let n = inp.len();
    let row = &weight[unit * n..(unit + 1) * n];
    let mut terms: Vec<(usize, f32, f32, f32)> = inp.iter().zip(row).enumerate().map(|(i, (&a, &w))| (i, a, w, a * w)).collect();
    let pre = (inp.iter().zip(row).map(|(&a, &w)| a as f64 * w as f64).sum::<f64>() + bias[unit] as f64) as f32;
    terms.sort_by(|a, b| b.3.abs().total_cmp(&a.3.abs()).then(a.0.cmp(&b.0)));
    let top = terms[..top.min(n)].to_vec();
    let rest = terms[top.len()..].iter().map(|t| t.1 as f64 * t.2 as f64).sum::<f64>() as f32;
    let abs_sum = terms.iter().map(|t| (t.1 as f64 * t.2 as f64).abs()).sum::<f64>() as f32;
    FcUnit { layer, unit, inputs: n, top, rest, abs_sum, bias: bias[unit], pre, value: if relu { pre.max(0.0) } else { pre }, engine: out[unit] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Rng, IMG_LEN};

    fn case(arch: Arch, seed: u64) -> (Vec<f32>, Inside) {
        let params = init_params(&Layout::new(arch), seed);
        let mut rng = Rng::new(seed + 1);
        let image: Vec<u8> = (0..IMG_LEN).map(|_| (rng.next_u64() % 256) as u8).collect();
        let inside = crate::cpu::inspect(arch, &params, &image);
        (params, inside)
    }

    #[test]
    fn every_output_the_view_explains_is_the_engines() {
        for arch in [Arch::LENET, Arch { c1: 3, c2: 7, f1: 9, f2: 5 }] {
            let (params, inside) = case(arch, 7);
            let mut worst = 0.0f32;
            for layer in [Layer::Conv1, Layer::Pool1, Layer::Conv2, Layer::Pool2, Layer::Fc1, Layer::Fc2, Layer::Fc3] {
                let (cs, h, w) = layer.shape(arch);
                for c in 0..cs {
                    for y in 0..h {
                        for x in 0..w {
                            let e = explain(arch, &params, &inside, layer, (c, y, x), 8).unwrap();
                            let (view, engine) = e.values();
                            let (d, bound) = ((view - engine).abs(), e.rounding_bound());
                            worst = worst.max(d / bound.max(f32::MIN_POSITIVE));
                            assert!(d <= bound, "{} ({c},{y},{x}): view {view} against the reference's {engine}, bound {bound}", layer.name());
                        }
                    }
                }
            }
            println!("{}: every output within its rounding bound, the largest difference {worst:.2} of its bound", arch.name());
        }
    }

    #[test]
    fn a_window_holds_its_inputs_weights_and_products() {
        let arch = Arch::LENET;
        let (params, inside) = case(arch, 3);
        let Explained::Conv(w) = explain(arch, &params, &inside, Layer::Conv2, (4, 2, 5), 0).unwrap() else { panic!("conv2 is a conv") };
        assert_eq!((w.c, w.k, w.inputs.len()), (6, 5, 150));
        // Input channel 3, kernel row 1, column 4 lies at p1[3, 2+1, 5+4].
        assert_eq!(w.inputs[3 * 25 + 5 + 4], inside.p1[(3 * P1 + 3) * P1 + 9]);
        let l = Layout::new(arch);
        assert_eq!(w.weights[3 * 25 + 9], params[l.specs[CONV2_W].offset + (4 * 6 + 3) * 25 + 9]);
        assert_eq!(w.products[7], w.inputs[7] * w.weights[7]);
        let sum: f32 = w.partial.iter().sum::<f32>() + w.bias;
        assert!((sum - w.pre).abs() <= 1e-5 * w.pre.abs().max(1.0), "channel sums {sum} and the total {}", w.pre);
        let Explained::Pool(p) = explain(arch, &params, &inside, Layer::Pool1, (0, 13, 13), 0).unwrap() else { panic!("pool1 is a pool") };
        assert_eq!(p.four[3], inside.h1[27 * H1 + 27]);
        assert_eq!(p.four[p.winner], p.four.iter().copied().fold(f32::MIN, f32::max));
        let Explained::Fc(f) = explain(arch, &params, &inside, Layer::Fc1, (5, 0, 0), 10).unwrap() else { panic!("fc1 is fc") };
        assert_eq!((f.top.len(), f.inputs), (10, 400));
        assert!(f.top.windows(2).all(|t| t[0].3.abs() >= t[1].3.abs()), "largest terms first");
        let all: f32 = f.top.iter().map(|t| t.3).sum::<f32>() + f.rest + f.bias;
        assert!((all - f.pre).abs() <= 1e-4 * f.pre.abs().max(1.0));
    }

    #[test]
    fn places_outside_a_layer_and_wrong_tensors_are_refused() {
        let arch = Arch::LENET;
        let (params, inside) = case(arch, 1);
        assert!(explain(arch, &params, &inside, Layer::Conv1, (6, 0, 0), 0).unwrap_err().contains("conv1 has outputs [6,28,28]"));
        assert!(explain(arch, &params, &inside, Layer::Pool2, (0, 5, 0), 0).is_err());
        assert!(explain(arch, &params[1..], &inside, Layer::Conv1, (0, 0, 0), 0).unwrap_err().contains("parameters"));
        assert!(explain(Arch::WIDE, &init_params(&Layout::new(Arch::WIDE), 1), &inside, Layer::Conv1, (0, 0, 0), 0).unwrap_err().contains("activations"));
        // The play control walks the whole map, then the next channel.
        assert_eq!(Layer::Conv1.next(arch, (0, 0, 27)), (0, 1, 0));
        assert_eq!(Layer::Conv1.next(arch, (5, 27, 27)), (0, 0, 0));
        assert_eq!(Layer::Fc2.next(arch, (3, 0, 0)), (4, 0, 0));
    }
}
