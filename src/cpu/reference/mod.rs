//! The CPU reference: every layer as a plain-loop forward/backward pair with the same names,
//! argument order (outputs, then inputs, then sizes; gradients `d*`) and shapes as the WGSL
//! kernels in shaders/ and the fast layers of cpu/layers.rs, and `RefEngine`, the plain
//! training step built from them. It is the oracle of every kernel and engine test; kept
//! simple on purpose (one thread, loops that read like the math), the CPU engine that trains
//! is cpu/engine.rs.
//!
//! ReLU is fused as in the kernels: conv_pool_forward is conv2d + ReLU + max-pool, and its
//! backward reads the pooled gradient at the kept argmax (NO_ARG where ReLU cut the window);
//! linear_forward applies it when `relu` is set, and linear_backward masks by `inp > 0`.
//!
//! Any network (`crate::net::Net`): one file per layer type (`conv`, `norm`, `pool`,
//! `elementwise`; linear layers are the ones here) and `net`, the forward and backward of a
//! whole network as one loop over its layers.

pub mod conv;
pub mod elementwise;
pub mod net;
pub mod norm;
pub mod pool;

use crate::augment::{self, Augment};
use crate::model::*;
use crate::outputs::{Inside, Looks};
use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// The float the reference layers compute in: f32 for the engine, f64 for the finite-difference
/// checks of the backward passes.
pub trait Real: Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + AddAssign + std::fmt::Debug {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    /// The error function (libm's, as exact as the type allows): GELU's Phi(x) = (1 + erf(x / sqrt 2)) / 2.
    fn erf(self) -> Self;
    fn from_usize(v: usize) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn relu(self) -> Self {
        if self > Self::ZERO {
            self
        } else {
            Self::ZERO
        }
    }
}

macro_rules! real {
    ($t:ty, $erf:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
real!(f32, libm::erff);
real!(f64, libm::erf);

/// x[N,3,32,32] = (u8 / 255 - 0.5) / 0.5 of records `index[base + n]`; y[N] their labels.
/// `images` is R x 3072 bytes (CHW), `labels` R bytes.
pub fn gather(x: &mut [f32], y: &mut [u32], images: &[u8], labels: &[u8], index: &[u32], base: usize, n: usize) {
    gather_augmented(x, y, images, labels, index, base, n, &Augment::default());
}

/// `gather`, each image cropped and flipped as `augment::draw` says for its position
/// `base + i` in the epoch's order (gather.wgsl's augmented path).
#[allow(clippy::too_many_arguments)]
pub fn gather_augmented(x: &mut [f32], y: &mut [u32], images: &[u8], labels: &[u8], index: &[u32], base: usize, n: usize, aug: &Augment) {
    for i in 0..n {
        let r = index[base + i] as usize;
        let src = &images[r * IMG_LEN..(r + 1) * IMG_LEN];
        let dst = &mut x[i * IMG_LEN..(i + 1) * IMG_LEN];
        if aug.enabled() {
            let (flip, dx, dy) = augment::draw(aug, (base + i) as u32);
            for (e, d) in dst.iter_mut().enumerate() {
                *d = normalize(augment::source(e, flip, dx, dy).map_or(0, |s| src[s]));
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = normalize(s);
            }
        }
        y[i] = labels[r] as u32;
    }
}

/// The tutorial's transform: ToTensor (x/255) then Normalize(0.5, 0.5). Written as the kernel
/// computes it so both round identically.
#[inline]
pub fn normalize(v: u8) -> f32 {
    (v as f32 / 255.0 - 0.5) / 0.5
}

/// out[N,OC,OH,OW] = (relu?)(bias[OC] + sum_{c,kh,kw} weight[OC,C,K,K] * inp[N,C,H,W]), valid
/// padding, stride 1: OH = H-K+1, OW = W-K+1.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward<T: Real>(out: &mut [T], inp: &[T], weight: &[T], bias: &[T], n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize, relu: bool) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    // Each output plane starts at its bias and takes the taps in (ci, ky, kx) order, the order
    // of the kernel's sum, a whole output row at a time (contiguous, so it vectorises).
    for b in 0..n {
        for o in 0..oc {
            let plane = &mut out[(b * oc + o) * oh * ow..][..oh * ow];
            plane.fill(bias[o]);
            for ci in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        let wv = weight[((o * c + ci) * k + ky) * k + kx];
                        for y in 0..oh {
                            let irow = &inp[((b * c + ci) * h + y + ky) * w + kx..][..ow];
                            for (o, &i) in plane[y * ow..][..ow].iter_mut().zip(irow) {
                                *o += wv * i;
                            }
                        }
                    }
                }
            }
            if relu {
                for v in plane.iter_mut() {
                    *v = v.relu();
                }
            }
        }
    }
}

/// dinp[N,C,H,W] = sum over the outputs each input feeds of dout[N,OC,OH,OW] * weight[OC,C,K,K].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input<T: Real>(dinp: &mut [T], dout: &[T], weight: &[T], n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    // Scatter each output gradient row into the input rows it came from, in (o, ky, kx) order.
    for b in 0..n {
        for ci in 0..c {
            let plane = &mut dinp[(b * c + ci) * h * w..][..h * w];
            plane.fill(T::ZERO);
            for o in 0..oc {
                for ky in 0..k {
                    for kx in 0..k {
                        let wv = weight[((o * c + ci) * k + ky) * k + kx];
                        for oy in 0..oh {
                            let drow = &dout[((b * oc + o) * oh + oy) * ow..][..ow];
                            for (d, &g) in plane[(oy + ky) * w + kx..][..ow].iter_mut().zip(drow) {
                                *d += g * wv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dweight[OC,C,K,K] = sum_{n,oy,ox} dout[N,OC,OH,OW] * inp[N,C,H,W] (shifted);
/// dbias[OC] = sum_{n,oy,ox} dout. Overwrites (gradients are not accumulated across steps).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight<T: Real>(dweight: &mut [T], dbias: &mut [T], dout: &[T], inp: &[T], n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    // Per tap, a row of partial sums over (n, oy) for each ox, added up at the end: the rows
    // are contiguous (they vectorise), the sum is over the same terms as the kernel's.
    let mut acc = vec![T::ZERO; k * k * ow];
    for o in 0..oc {
        for ci in 0..c {
            acc.fill(T::ZERO);
            for b in 0..n {
                for y in 0..oh {
                    let drow = &dout[((b * oc + o) * oh + y) * ow..][..ow];
                    for ky in 0..k {
                        for kx in 0..k {
                            let irow = &inp[((b * c + ci) * h + y + ky) * w + kx..][..ow];
                            for ((a, &g), &i) in acc[(ky * k + kx) * ow..][..ow].iter_mut().zip(drow).zip(irow) {
                                *a += g * i;
                            }
                        }
                    }
                }
            }
            for t in 0..k * k {
                let mut s = T::ZERO;
                for &a in &acc[t * ow..(t + 1) * ow] {
                    s += a;
                }
                dweight[(o * c + ci) * k * k + t] = s;
            }
        }
        let mut s = T::ZERO;
        for b in 0..n {
            for i in 0..oh * ow {
                s += dout[(b * oc + o) * oh * ow + i];
            }
        }
        dbias[o] = s;
    }
}

/// out[N,C,OH,OW] = max over each 2x2 window (stride 2, OH = H/2) of inp[N,C,H,W];
/// argmax[N,C,OH,OW] = flat index into inp of the first maximum in row-major window order
/// (PyTorch's tie rule).
pub fn maxpool_forward<T: Real>(out: &mut [T], argmax: &mut [u32], inp: &[T], n: usize, c: usize, h: usize, w: usize) {
    let (oh, ow) = (h / 2, w / 2);
    for bc in 0..n * c {
        for y in 0..oh {
            for x in 0..ow {
                let mut best = T::NEG_INF;
                let mut arg = 0usize;
                for dy in 0..2 {
                    for dx in 0..2 {
                        let i = (bc * h + 2 * y + dy) * w + 2 * x + dx;
                        let v = inp[i];
                        if v > best || (dy == 0 && dx == 0) {
                            best = v;
                            arg = i;
                        }
                    }
                }
                out[(bc * oh + y) * ow + x] = best;
                argmax[(bc * oh + y) * ow + x] = arg as u32;
            }
        }
    }
}

/// Marks a pooling window whose maximum is 0: ReLU cut all four of its inputs, so no gradient
/// flows back through it (NONE in conv_pool.wgsl).
pub const NO_ARG: u32 = u32::MAX;

/// The conv layer of LeNet, as the GPU runs it in one kernel: conv2d (valid, stride 1), ReLU,
/// then a 2x2 max-pool of stride 2 that keeps where each maximum came from.
/// out[N,OC,OH,OW] = relu(conv2d(inp[N,C,H,W], weight[OC,C,K,K], bias[OC]));
/// pool[N,OC,PH,PW] = max of each 2x2 window of out (PH = OH/2, PW = OW/2);
/// arg[N,OC,PH,PW] = oy * OW + ox of the window's first maximum (row-major, PyTorch's tie
/// rule), or NO_ARG where that maximum is 0.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_forward<T: Real>(
    out: &mut [T],
    pool: &mut [T],
    arg: &mut [u32],
    inp: &[T],
    weight: &[T],
    bias: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    conv2d_forward(out, inp, weight, bias, n, c, h, w, oc, k, true);
    maxpool_forward(pool, arg, out, n, oc, oh, ow);
    let window = (oh / 2) * (ow / 2);
    for (i, a) in arg[..n * oc * window].iter_mut().enumerate() {
        // maxpool_forward's index is into the whole tensor: keep the place in the plane.
        *a = if pool[i] > T::ZERO { *a - ((i / window) * oh * ow) as u32 } else { NO_ARG };
    }
}

/// dout[N,OC,OH,OW]: the gradient of the conv output (after the ReLU mask) that the pooled
/// gradient dpool[N,OC,PH,PW] sends back: dpool at each window's argmax, 0 elsewhere (and 0
/// where arg is NO_ARG, the ReLU backward).
pub fn unpool<T: Real>(dout: &mut [T], dpool: &[T], arg: &[u32], n: usize, oc: usize, oh: usize, ow: usize) {
    dout[..n * oc * oh * ow].fill(T::ZERO);
    let window = (oh / 2) * (ow / 2);
    for (i, &a) in arg[..n * oc * window].iter().enumerate() {
        if a != NO_ARG {
            dout[(i / window) * oh * ow + a as usize] = dpool[i];
        }
    }
}

/// The weight half of conv_pool's backward: dweight[OC,C,K,K], dbias[OC] from the pooled
/// gradient dpool[N,OC,PH,PW], arg and inp[N,C,H,W]. dout[N,OC,OH,OW] is scratch (the
/// unpooled gradient; the kernel reads dpool at arg directly).
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_backward_weight<T: Real>(
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &mut [T],
    dpool: &[T],
    arg: &[u32],
    inp: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    unpool(dout, dpool, arg, n, oc, oh, ow);
    conv2d_backward_weight(dweight, dbias, dout, inp, n, c, h, w, oc, k);
}

/// The input half of conv_pool's backward: dinp[N,C,H,W] from dpool[N,OC,PH,PW], arg and
/// weight[OC,C,K,K]; dout[N,OC,OH,OW] is scratch, as in conv_pool_backward_weight.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_backward_input<T: Real>(dinp: &mut [T], dout: &mut [T], dpool: &[T], arg: &[u32], weight: &[T], n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    unpool(dout, dpool, arg, n, oc, oh, ow);
    conv2d_backward_input(dinp, dout, weight, n, c, h, w, oc, k);
}

/// out[N,OUT] = (relu?)(inp[N,IN] . weight[OUT,IN]^T + bias[OUT]).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward<T: Real>(out: &mut [T], inp: &[T], weight: &[T], bias: &[T], n: usize, in_f: usize, out_f: usize, relu: bool) {
    for b in 0..n {
        let x = &inp[b * in_f..(b + 1) * in_f];
        for o in 0..out_f {
            let wr = &weight[o * in_f..(o + 1) * in_f];
            let mut s = bias[o];
            for i in 0..in_f {
                s += x[i] * wr[i];
            }
            out[b * out_f + o] = if relu { s.relu() } else { s };
        }
    }
}

/// dinp[N,IN] = dout[N,OUT] . weight[OUT,IN], times the ReLU mask inp > 0 when `relu` is set
/// (inp is the post-ReLU output of the previous layer): the fused linear + ReLU backward.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input<T: Real>(dinp: &mut [T], dout: &[T], weight: &[T], inp: &[T], n: usize, in_f: usize, out_f: usize, relu: bool) {
    for b in 0..n {
        // Rows of the weight scaled by each output's gradient, summed in o order.
        let row = &mut dinp[b * in_f..(b + 1) * in_f];
        row.fill(T::ZERO);
        for o in 0..out_f {
            let g = dout[b * out_f + o];
            for (d, &wv) in row.iter_mut().zip(&weight[o * in_f..(o + 1) * in_f]) {
                *d += g * wv;
            }
        }
        if relu {
            for (d, &x) in row.iter_mut().zip(&inp[b * in_f..(b + 1) * in_f]) {
                if x <= T::ZERO {
                    *d = T::ZERO;
                }
            }
        }
    }
}

/// dweight[OUT,IN] = dout[N,OUT]^T . inp[N,IN]; dbias[OUT] = sum_n dout.
pub fn linear_backward_weight<T: Real>(dweight: &mut [T], dbias: &mut [T], dout: &[T], inp: &[T], n: usize, in_f: usize, out_f: usize) {
    for o in 0..out_f {
        // Input rows scaled by this output's gradient, summed in batch order.
        let row = &mut dweight[o * in_f..(o + 1) * in_f];
        row.fill(T::ZERO);
        let mut s = T::ZERO;
        for b in 0..n {
            let g = dout[b * out_f + o];
            for (d, &x) in row.iter_mut().zip(&inp[b * in_f..(b + 1) * in_f]) {
                *d += g * x;
            }
            s += g;
        }
        dbias[o] = s;
    }
}

/// Both halves of a linear layer's backward, as the GPU runs them in one dispatch:
/// dinp[N,IN] (masked by inp > 0 when `relu`: the previous layer's ReLU backward) and
/// dweight[OUT,IN], dbias[OUT], from dout[N,OUT].
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(dinp: &mut [T], dweight: &mut [T], dbias: &mut [T], dout: &[T], inp: &[T], weight: &[T], n: usize, in_f: usize, out_f: usize, relu: bool) {
    linear_backward_weight(dweight, dbias, dout, inp, n, in_f, out_f);
    linear_backward_input(dinp, dout, weight, inp, n, in_f, out_f, relu);
}

/// Softmax cross-entropy, mean over the batch. dlogits[N,10] = (softmax - onehot) / N.
/// Returns (sum over the batch of the per-sample loss, number of correct argmax predictions).
pub fn cross_entropy<T: Real>(dlogits: &mut [T], logits: &[T], labels: &[u32], n: usize) -> (T, u32) {
    cross_entropy_part(dlogits, logits, labels, n, n)
}

/// `cross_entropy` of N rows that are part of a batch of `batch` (the mean is over the whole
/// batch: dlogits[N,10] = (softmax - onehot) / batch), for an engine that splits its batch.
pub fn cross_entropy_part<T: Real>(dlogits: &mut [T], logits: &[T], labels: &[u32], n: usize, batch: usize) -> (T, u32) {
    cross_entropy_smoothed_part(dlogits, logits, labels, n, batch, 0.0)
}

/// `cross_entropy_part` with PyTorch's label smoothing s: the target is (1 - s) onehot + s/10,
/// the loss -sum_j target_j log softmax_j = lse - (1 - s) z_y - (s/10) sum_j z_j, and
/// dlogits = (softmax - target) / batch. s = 0 is the plain loss, bit for bit.
pub fn cross_entropy_smoothed_part<T: Real>(dlogits: &mut [T], logits: &[T], labels: &[u32], n: usize, batch: usize, smoothing: f32) -> (T, u32) {
    let s = T::from_f64(smoothing as f64);
    let spread = s / T::from_usize(CLASSES);
    let mut loss = T::ZERO;
    let mut correct = 0;
    for b in 0..n {
        let l = &logits[b * CLASSES..(b + 1) * CLASSES];
        let y = labels[b] as usize;
        let (arg, max) = argmax(l);
        let mut sum = T::ZERO;
        for &v in l {
            sum += (v - max).exp();
        }
        let lse = max + sum.ln();
        if smoothing > 0.0 {
            let mut all = T::ZERO;
            for &v in l {
                all += v;
            }
            loss += lse - (T::ONE - s) * l[y] - spread * all;
        } else {
            loss += lse - l[y];
        }
        if arg == y {
            correct += 1;
        }
        for j in 0..CLASSES {
            let p = (l[j] - max).exp() / sum;
            let target = if j == y { T::ONE - s } else { T::ZERO } + if smoothing > 0.0 { spread } else { T::ZERO };
            dlogits[b * CLASSES + j] = (p - target) / T::from_usize(batch);
        }
    }
    (loss, correct)
}

/// The prediction of one row of logits [10]: the first maximum's class, marked
/// `outputs::NOT_FINITE` when a logit is NaN or infinite (then argmax means nothing).
pub fn prediction(z: &[f32]) -> u32 {
    argmax(z).0 as u32 | if z.iter().all(|v| v.is_finite()) { 0 } else { crate::outputs::NOT_FINITE }
}

/// Index and value of the first maximum (the prediction rule everywhere).
pub fn argmax<T: Real>(v: &[T]) -> (usize, T) {
    let mut best = (0, v[0]);
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// PyTorch SGD with momentum, no dampening: g' = g + wd * p; v = mu * v + g'; p -= lr * v.
pub fn sgd_update(params: &mut [f32], momentum: &mut [f32], grads: &[f32], len: usize, lr: f32, mu: f32, wd: f32) {
    for i in 0..len {
        let g = grads[i] + wd * params[i];
        let v = mu * momentum[i] + g;
        momentum[i] = v;
        params[i] -= lr * v;
    }
}

/// Activations of one batch of N, forward and backward, as separate vectors (the GPU engine
/// packs the same tensors into one buffer at named offsets).
#[derive(Clone, Debug)]
pub struct Acts<T = f32> {
    pub n: usize,
    /// The widths C1, C2, F1, F2 of the shapes below (LeNet: 6, 16, 120, 84).
    pub arch: Arch,
    pub x: Vec<T>,       // [N,3,32,32]
    pub y: Vec<u32>,     // [N]
    pub h1: Vec<T>,      // [N,C1,28,28] relu(conv1)
    pub p1: Vec<T>,      // [N,C1,14,14]
    pub arg1: Vec<u32>,  // [N,C1,14,14] argmax in the plane of h1, or NO_ARG
    pub h2: Vec<T>,      // [N,C2,10,10] relu(conv2)
    pub p2: Vec<T>,      // [N,C2,5,5] = [N,C2*25]
    pub arg2: Vec<u32>,  // [N,C2,5,5]
    pub a1: Vec<T>,      // [N,F1] relu(fc1)
    pub a2: Vec<T>,      // [N,F2] relu(fc2)
    pub logits: Vec<T>,  // [N,10]
    pub dlogits: Vec<T>, // [N,10]
    pub da2: Vec<T>,     // [N,F2] (ReLU mask applied: gradient wrt fc2's pre-activation)
    pub da1: Vec<T>,     // [N,F1]
    pub dp2: Vec<T>,     // [N,C2*25]
    pub dh2: Vec<T>,     // [N,C2,10,10] scratch: dp2 unpooled (the GPU reads dp2 at arg2)
    pub dp1: Vec<T>,     // [N,C1,14,14]
    pub dh1: Vec<T>,     // [N,C1,28,28] scratch: dp1 unpooled
}

/// Images per forward of `predict` (and per piece of the page's evaluation on the CPU engine).
pub const PREDICT_BATCH: usize = 100;

/// The most the CPU engine's activations may take (a batch of the widest network at 1,024 would
/// take 2.6 GB: past what a tab's wasm memory holds). Checked before anything is allocated.
pub const MAX_CPU_ACTS_BYTES: u64 = 1 << 30;

/// Bytes of `Acts::<f32>::new(n, arch)`, without allocating it: per image x and y, h1, p1,
/// arg1, dp1, dh1 (C1 planes), h2, p2, arg2, dp2, dh2 (C2 planes), a1, da1, a2, da2, logits
/// and dlogits; 4 bytes each.
pub fn acts_bytes(n: usize, arch: Arch) -> u64 {
    let Arch { c1, c2, f1, f2 } = arch;
    let per_image = IMG_LEN + 1 + c1 * (2 * H1 * H1 + 3 * P1 * P1) + c2 * (2 * H2 * H2) + 3 * arch.fc1_in() + 2 * f1 + 2 * f2 + 2 * CLASSES;
    4 * (n as u64) * per_image as u64
}

/// Whether the CPU engine can train `arch` at batch `batch`; the error names the size.
pub fn check_memory(arch: Arch, batch: usize) -> Result<(), crate::outputs::EngineError> {
    let bytes = acts_bytes(batch, arch);
    if bytes > MAX_CPU_ACTS_BYTES {
        return Err(crate::outputs::EngineError::limits(format!(
            "batch {batch} of the {} network needs {} MiB of activations on the CPU engine, more than the {} MiB it may use: a smaller batch or a narrower network trains",
            arch.name(),
            bytes >> 20,
            MAX_CPU_ACTS_BYTES >> 20
        )));
    }
    Ok(())
}

impl<T: Real> Acts<T> {
    pub fn new(n: usize, arch: Arch) -> Acts<T> {
        let z = |len: usize| vec![T::ZERO; n * len];
        let Arch { c1, c2, f1, f2 } = arch;
        let fc1_in = arch.fc1_in();
        Acts {
            n,
            arch,
            x: z(IMG_LEN),
            y: vec![0; n],
            h1: z(c1 * H1 * H1),
            p1: z(c1 * P1 * P1),
            arg1: vec![0; n * c1 * P1 * P1],
            h2: z(c2 * H2 * H2),
            p2: z(fc1_in),
            arg2: vec![0; n * fc1_in],
            a1: z(f1),
            a2: z(f2),
            logits: z(CLASSES),
            dlogits: z(CLASSES),
            da2: z(f2),
            da1: z(f1),
            dp2: z(fc1_in),
            dh2: z(c2 * H2 * H2),
            dp1: z(c1 * P1 * P1),
            dh1: z(c1 * H1 * H1),
        }
    }
}

/// The whole LeNet forward on a batch already in `a.x`: fills every activation up to logits.
/// Layer by layer as the GPU pass (gpu/pass.rs) dispatches it.
pub fn forward<T: Real>(a: &mut Acts<T>, p: &[T], l: &Layout) {
    assert_eq!(a.arch, l.arch, "activations and parameters of one network");
    let n = a.n;
    let Arch { c1, c2, f1, f2 } = l.arch;
    let t = |i: usize| &p[l.specs[i].range()];
    conv_pool_forward(&mut a.h1, &mut a.p1, &mut a.arg1, &a.x, t(CONV1_W), t(CONV1_B), n, C1_IN, IMG, IMG, c1, K);
    conv_pool_forward(&mut a.h2, &mut a.p2, &mut a.arg2, &a.p1, t(CONV2_W), t(CONV2_B), n, c1, P1, P1, c2, K);
    linear_forward(&mut a.a1, &a.p2, t(FC1_W), t(FC1_B), n, l.arch.fc1_in(), f1, true);
    linear_forward(&mut a.a2, &a.a1, t(FC2_W), t(FC2_B), n, f1, f2, true);
    linear_forward(&mut a.logits, &a.a2, t(FC3_W), t(FC3_B), n, f2, CLASSES, false);
}

/// The whole backward from `a.dlogits`: writes every parameter gradient into `g` (packed like
/// the parameters). Layer by layer as the GPU pass dispatches it; conv1's input gradient is
/// not needed.
pub fn backward<T: Real>(g: &mut [T], a: &mut Acts<T>, p: &[T], l: &Layout) {
    let n = a.n;
    let Arch { c1, c2, f1, f2 } = l.arch;
    let fc1_in = l.arch.fc1_in();
    let t = |i: usize| &p[l.specs[i].range()];
    let (gw3, gb3) = split2(g, l, FC3_W, FC3_B);
    linear_backward(&mut a.da2, gw3, gb3, &a.dlogits, &a.a2, t(FC3_W), n, f2, CLASSES, true);
    let (gw2, gb2) = split2(g, l, FC2_W, FC2_B);
    linear_backward(&mut a.da1, gw2, gb2, &a.da2, &a.a1, t(FC2_W), n, f1, f2, true);
    let (gw1, gb1) = split2(g, l, FC1_W, FC1_B);
    linear_backward(&mut a.dp2, gw1, gb1, &a.da1, &a.p2, t(FC1_W), n, fc1_in, f1, false);
    let (gwc2, gbc2) = split2(g, l, CONV2_W, CONV2_B);
    conv_pool_backward_weight(gwc2, gbc2, &mut a.dh2, &a.dp2, &a.arg2, &a.p1, n, c1, P1, P1, c2, K);
    conv_pool_backward_input(&mut a.dp1, &mut a.dh2, &a.dp2, &a.arg2, t(CONV2_W), n, c1, P1, P1, c2, K);
    let (gwc1, gbc1) = split2(g, l, CONV1_W, CONV1_B);
    conv_pool_backward_weight(gwc1, gbc1, &mut a.dh1, &a.dp1, &a.arg1, &a.x, n, C1_IN, IMG, IMG, c1, K);
}

/// Mutable views of two disjoint tensors of a packed vector, `wi` before `bi`.
pub(crate) fn split2<'a, T>(g: &'a mut [T], l: &Layout, wi: usize, bi: usize) -> (&'a mut [T], &'a mut [T]) {
    let (w, b) = (l.specs[wi].range(), l.specs[bi].range());
    assert!(w.end <= b.start);
    let (lo, hi) = g.split_at_mut(b.start);
    (&mut lo[w], &mut hi[..b.end - b.start])
}

impl Inside {
    /// The activations of image 0 of a forward pass.
    pub fn from_acts(a: &Acts<f32>) -> Inside {
        let first = |v: &Vec<f32>| v[..v.len() / a.n].to_vec();
        Inside { x: first(&a.x), h1: first(&a.h1), p1: first(&a.p1), h2: first(&a.h2), p2: first(&a.p2), a1: first(&a.a1), a2: first(&a.a2), logits: first(&a.logits) }
    }
}

/// softmax of one row of logits [10].
pub fn softmax(z: &[f32]) -> [f32; CLASSES] {
    let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f32> = z.iter().map(|&v| (v - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    std::array::from_fn(|c| e[c] / sum)
}

/// The forward of one u8 CHW image [3,32,32] (a test record or the visitor's own picture)
/// through the network `arch` with packed parameters `params`, every activation kept.
pub fn inspect(arch: Arch, params: &[f32], image: &[u8]) -> Inside {
    assert_eq!(image.len(), IMG_LEN, "one 3x32x32 image");
    let mut a = Acts::<f32>::new(1, arch);
    gather(&mut a.x, &mut a.y, image, &[0], &[0], 0, 1);
    forward(&mut a, params, &Layout::new(arch));
    Inside::from_acts(&a)
}

/// Where the network `arch` looks for `class` in one image (outputs::Looks): the forward,
/// a backward from the one-hot gradient of that class's logit, and the conv1 input gradient
/// the training step does not compute. The oracle of the engines' `looks`.
pub fn looks(arch: Arch, params: &[f32], image: &[u8], class: usize) -> Looks {
    assert!(image.len() == IMG_LEN && class < CLASSES, "one 3x32x32 image and a class");
    let l = Layout::new(arch);
    let mut a = Acts::<f32>::new(1, arch);
    gather(&mut a.x, &mut a.y, image, &[0], &[0], 0, 1);
    forward(&mut a, params, &l);
    a.dlogits.fill(0.0);
    a.dlogits[class] = 1.0;
    let mut g = vec![0.0; l.total];
    backward(&mut g, &mut a, params, &l);
    let mut dx = vec![0.0; IMG_LEN];
    conv_pool_backward_input(&mut dx, &mut a.dh1, &a.dp1, &a.arg1, &params[l.specs[CONV1_W].range()], 1, C1_IN, IMG, IMG, arch.c1, K);
    Looks { class, logits: a.logits, dx, h2: a.h2, dbias2: g[l.specs[CONV2_B].range()].to_vec() }
}

/// The plain training step: parameters, gradients and momentum packed like the GPU buffers,
/// the whole batch through the layers above on one thread. The oracle of the engines' tests.
pub struct RefEngine {
    pub layout: Layout,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub momentum: Vec<f32>,
    pub acts: Acts<f32>,
    /// Augmentation of the training batches (off: the recipe).
    pub augment: Augment,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepResult {
    pub loss_sum: f32,
    pub correct: u32,
}

impl RefEngine {
    /// The network `arch` with packed parameters `params`, training at batch `batch`.
    pub fn new(arch: Arch, params: Vec<f32>, batch: usize) -> RefEngine {
        let layout = Layout::new(arch);
        assert_eq!(params.len(), layout.total, "parameters packed for {}", arch.name());
        RefEngine { grads: vec![0.0; layout.total], momentum: vec![0.0; layout.total], acts: Acts::new(batch, arch), augment: Augment::default(), layout, params }
    }

    /// One SGD step on the batch `index[base..base+N]` of (images, labels).
    pub fn step(&mut self, images: &[u8], labels: &[u8], index: &[u32], base: usize, lr: f32, mu: f32, wd: f32) -> StepResult {
        let n = self.acts.n;
        gather_augmented(&mut self.acts.x, &mut self.acts.y, images, labels, index, base, n, &self.augment);
        forward(&mut self.acts, &self.params, &self.layout);
        let (loss_sum, correct) = cross_entropy(&mut self.acts.dlogits, &self.acts.logits, &self.acts.y, n);
        backward(&mut self.grads, &mut self.acts, &self.params, &self.layout);
        let len = self.layout.total;
        sgd_update(&mut self.params, &mut self.momentum, &self.grads, len, lr, mu, wd);
        StepResult { loss_sum, correct }
    }

    /// Softmax probabilities [10] of the records `index` of `images` (the page's prediction grid).
    pub fn probabilities(&self, images: &[u8], index: &[u32]) -> Vec<[f32; CLASSES]> {
        let n = index.len();
        if n == 0 {
            return Vec::new();
        }
        let mut a = Acts::<f32>::new(n, self.layout.arch);
        let labels = vec![0u8; images.len() / IMG_LEN];
        gather(&mut a.x, &mut a.y, images, &labels, index, 0, n);
        forward(&mut a, &self.params, &self.layout);
        a.logits.chunks_exact(CLASSES).map(softmax).collect()
    }

    /// Predicted class of each of the R records (batched forward passes).
    pub fn predict(&self, images: &[u8], count: usize) -> Vec<u32> {
        self.predict_range(images, 0, count)
    }

    /// The predictions of records `start .. start + count` (in batches of PREDICT_BATCH).
    pub fn predict_range(&self, images: &[u8], start: usize, count: usize) -> Vec<u32> {
        let bs = PREDICT_BATCH;
        let mut a = Acts::<f32>::new(bs, self.layout.arch);
        let (mut start, end) = (start, start + count);
        // gather reads a label per record it is given (indexes up to `end`); predictions need none
        let labels = vec![0u8; end];
        let mut preds = Vec::with_capacity(count);
        while start < end {
            let m = bs.min(end - start);
            if m != a.n {
                a = Acts::new(m, self.layout.arch);
            }
            let index: Vec<u32> = (start as u32..(start + m) as u32).collect();
            gather(&mut a.x, &mut a.y, images, &labels, &index, 0, m);
            forward(&mut a, &self.params, &self.layout);
            for b in 0..m {
                preds.push(prediction(&a.logits[b * CLASSES..(b + 1) * CLASSES]));
            }
            start += m;
        }
        preds
    }
}

#[cfg(test)]
mod tests;
