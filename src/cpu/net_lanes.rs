//! The CPU engine's step for any network (`net::Plan`): the batch split into lanes, one a
//! thread, each with its own activations, gradients and scratch, run as one loop over the
//! layers as `reference::net` runs them. Layers that see one image at a time run a stretch of
//! the network per lane in one dispatch; a batch norm in training needs the whole batch, so
//! there the lanes give their partial sums, the engine adds them in lane order and the lanes
//! apply the totals (`layers::norm`). Every sum has a fixed order: the same lanes give the
//! same result bit for bit. Everything a step touches is allocated by `NetLanes::new`.

use super::engine::{split as split_batch, Threads};
use super::layers::conv::{conv_backward_input, conv_backward_weight, conv_forward};
use super::layers::matmul;
use super::layers::norm::*;
use super::reference::conv::ConvDims;
use super::reference::elementwise::{act_backward, act_forward, dropout_keeps, residual_forward, scale_forward};
use super::reference::net::{dropout_seed, Mode};
use super::reference::pool::*;
use super::reference::{cross_entropy_smoothed_part, gather_augmented};
use crate::augment::Augment;
use crate::model::{CLASSES, IMG_LEN};
use crate::net::plan::Plan;
use crate::net::{Layer, Pool, Shape};

/// (C, H, W) of maps, (F, 1, 1) of features: batch norm and the pools see a plane of H*W.
fn chw(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Maps { c, h, w } => (c, h, w),
        Shape::Flat(f) => (f, 1, 1),
    }
}

fn conv_dims(plan: &Plan, i: usize, n: usize) -> Option<ConvDims> {
    let (c, h, w) = chw(plan.steps[i].input);
    match plan.steps[i].layer {
        Layer::Conv { out, k, stride, pad, .. } => Some(ConvDims { n, c, h, w, oc: out, k, s: stride, p: pad }),
        _ => None,
    }
}

fn is_norm(plan: &Plan, i: usize) -> bool {
    matches!(plan.steps[i].layer, Layer::BatchNorm { .. })
}

/// Floats of a lane's scratch: im2col of the largest convolution [C*K*K, OH*OW], a layer's
/// input gradient [N, the largest input], the widest batch norm's channels.
fn scratch_len(plan: &Plan, n: usize) -> (usize, usize, usize) {
    let steps = 0..plan.steps.len();
    let cols = steps.clone().filter_map(|i| conv_dims(plan, i, 1)).map(|d| d.c * d.k * d.k * d.oh() * d.ow()).max().unwrap_or(0);
    let dinp = steps.clone().map(|i| n * plan.input_len(i)).max().unwrap_or(0);
    let norm = steps.filter(|&i| is_norm(plan, i)).map(|i| plan.steps[i].input.channels()).max().unwrap_or(0);
    (cols, dinp, norm)
}

/// Bytes of a lane of `n` images, without allocating it: the image and labels, every step's
/// output, max pools' argmax, the logits' gradient, im2col; training adds every step's output
/// gradient, the gradient share and the input-gradient scratch.
pub fn net_lane_bytes(plan: &Plan, n: usize, training: bool) -> u64 {
    let outs: u64 = plan.steps.iter().map(|s| s.output.len64()).sum();
    let args: u64 = (0..plan.steps.len()).filter(|&i| matches!(plan.steps[i].layer, Layer::Pool { kind: Pool::Max, .. })).map(|i| plan.steps[i].output.len64()).sum();
    let (cols, dinp, norm) = scratch_len(plan, n);
    let per_image = IMG_LEN as u64 + 1 + outs + args + CLASSES as u64;
    let train = if training { n as u64 * outs + plan.params.total as u64 + dinp as u64 } else { 0 };
    4 * (n as u64 * per_image + cols as u64 + train) + 16 * norm as u64
}

/// One lane: a contiguous run of the batch with everything its layers write.
pub struct NetLane {
    /// Index in the batch of the lane's first image.
    pub lo: usize,
    pub n: usize,
    pub x: Vec<f32>,    // [n,3,32,32]
    pub y: Vec<u32>,    // [n]
    out: Vec<Vec<f32>>, // out[i]: [n, output_len(i)]
    /// dout[i]: the gradient of out[i] (training lanes only), `written[i]` once it has one.
    dout: Vec<Vec<f32>>,
    written: Vec<bool>,
    arg: Vec<Vec<u32>>, // a max pool's argmax [n, output_len] in its input's plane
    dlogits: Vec<f32>,  // [n,10]
    /// The lane's share of the gradient, packed as the parameters.
    grads: Vec<f32>,
    cols: Vec<f32>,    // [C*K*K, OH*OW] of the largest convolution
    scratch: Vec<f32>, // a layer's input gradient when its source has one already
    sums: Vec<f64>,    // a batch norm's partial sums [C]
    sums2: Vec<f64>,
    pub loss: f32,
    pub correct: u32,
}

impl NetLane {
    fn new(plan: &Plan, lo: usize, n: usize, training: bool) -> NetLane {
        let steps = plan.steps.len();
        let (cols, dinp, norm) = scratch_len(plan, n);
        let train = |len: usize| if training { len } else { 0 };
        NetLane {
            lo,
            n,
            x: vec![0.0; n * IMG_LEN],
            y: vec![0; n],
            out: (0..steps).map(|i| vec![0.0; n * plan.output_len(i)]).collect(),
            dout: (0..steps).map(|i| vec![0.0; train(n * plan.output_len(i))]).collect(),
            written: vec![false; steps],
            arg: (0..steps).map(|i| vec![0; if matches!(plan.steps[i].layer, Layer::Pool { kind: Pool::Max, .. }) { n * plan.output_len(i) } else { 0 }]).collect(),
            dlogits: vec![0.0; n * CLASSES],
            grads: vec![0.0; train(plan.params.total)],
            cols: vec![0.0; cols],
            scratch: vec![0.0; train(dinp)],
            sums: vec![0.0; norm],
            sums2: vec![0.0; norm],
            loss: 0.0,
            correct: 0,
        }
    }

    /// The logits [n,10] of the last forward.
    pub fn logits<'a>(&'a self, plan: &Plan) -> &'a [f32] {
        &self.out[plan.output]
    }

    /// Adds `d` into dout[j] (the first gradient it gets is copied).
    fn send(&mut self, j: usize, d: &[f32]) {
        if self.written[j] {
            self.dout[j].iter_mut().zip(d).for_each(|(v, &g)| *v += g);
        } else {
            self.dout[j].copy_from_slice(d);
            self.written[j] = true;
        }
    }

    /// Step i's backward once dout[i] is whole: its parameters' gradients, then its input's,
    /// written straight into its source's gradient when that has none yet, else through the
    /// scratch and added. The image's gradient is not needed to train.
    fn backward_layer(&mut self, plan: &Plan, p: &[f32], norm: &NormTotals, seed: u32, batch: usize, i: usize) {
        if matches!(plan.steps[i].layer, Layer::Res(_)) {
            let dout = std::mem::take(&mut self.dout[i]);
            self.send(plan.last[i], &dout);
            self.dout[i] = dout;
        }
        self.param_grads(plan, i);
        let Some(src) = plan.src[i] else { return };
        let len = self.n * plan.input_len(i);
        if self.written[src] {
            let mut d = std::mem::take(&mut self.scratch);
            self.input_grad(&mut d[..len], plan, p, norm, seed, batch, i);
            self.dout[src].iter_mut().zip(&d[..len]).for_each(|(v, &g)| *v += g);
            self.scratch = d;
        } else {
            let mut d = std::mem::take(&mut self.dout[src]);
            self.input_grad(&mut d, plan, p, norm, seed, batch, i);
            self.dout[src] = d;
            self.written[src] = true;
        }
    }

    /// Step i's forward for the lane's images (a batch norm here is evaluation's, or the
    /// training one's last part with the batch's `mean` and `var`).
    fn forward_layer(&mut self, plan: &Plan, p: &[f32], stats: (&[f32], &[f32]), seed: u32, i: usize) {
        let n = self.n;
        let mut out = std::mem::take(&mut self.out[i]);
        let inp = plan.src[i].map_or(&self.x[..], |j| &self.out[j][..]);
        let s = &plan.slots[i];
        let t = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &p[r]);
        let (c, h, w) = chw(plan.steps[i].input);
        match plan.steps[i].layer {
            Layer::Conv { .. } => conv_forward(&mut out, &mut self.cols, inp, t(&s.weight).unwrap(), t(&s.bias), conv_dims(plan, i, n).unwrap()),
            Layer::Linear { out: of, .. } => {
                match t(&s.bias) {
                    Some(b) => out.chunks_exact_mut(of).for_each(|row| row.copy_from_slice(b)),
                    None => out.fill(0.0),
                }
                // weight^T[IN, OUT]: row stride 1, column stride IN.
                matmul(&mut out, inp, c, 1, t(&s.weight).unwrap(), 1, c, n, of, c, true);
            }
            Layer::BatchNorm { eps, .. } => batchnorm_apply(&mut out, inp, stats.0, stats.1, t(&s.gamma).unwrap(), t(&s.beta).unwrap(), n, c, h * w, eps),
            Layer::Act(f) => act_forward(&mut out, inp, f),
            Layer::Pool { kind: Pool::Max, k, stride } => maxpool2d_forward(&mut out, &mut self.arg[i], inp, n, c, h, w, k, stride),
            Layer::Pool { kind: Pool::Avg, k, stride } => avgpool2d_forward(&mut out, inp, n, c, h, w, k, stride),
            Layer::Gap => gap_forward(&mut out, inp, n, c, h * w),
            Layer::Dropout(q) if seed != NO_DROPOUT => dropout_lane(&mut out, inp, q, dropout_seed(seed, i), self.lo * plan.input_len(i)),
            Layer::Flatten | Layer::Dropout(_) => out.copy_from_slice(inp),
            Layer::Scale(f) => scale_forward(&mut out, inp, f),
            Layer::Res(_) => residual_forward(&mut out, inp, &self.out[plan.last[i]]),
        }
        self.out[i] = out;
    }

    /// Step i's parameter gradients into the lane's share (batch norm's are the engine's).
    fn param_grads(&mut self, plan: &Plan, i: usize) {
        let n = self.n;
        let s = &plan.slots[i];
        let (dout, inp) = (&self.dout[i], plan.src[i].map_or(&self.x[..], |j| &self.out[j][..]));
        match plan.steps[i].layer {
            Layer::Conv { .. } => {
                let (gw, gb) = split_grads(&mut self.grads, s.weight.clone().unwrap(), s.bias.clone());
                conv_backward_weight(gw, gb, &mut self.cols, dout, inp, conv_dims(plan, i, n).unwrap());
            }
            Layer::Linear { out: of, .. } => {
                let c = plan.input_len(i);
                let (gw, gb) = split_grads(&mut self.grads, s.weight.clone().unwrap(), s.bias.clone());
                // dout^T[OUT, N]: row stride 1, column stride OUT.
                matmul(gw, dout, 1, of, inp, c, 1, of, c, n, false);
                if let Some(gb) = gb {
                    gb.fill(0.0);
                    for row in dout.chunks_exact(of) {
                        gb.iter_mut().zip(row).for_each(|(d, &g)| *d += g);
                    }
                }
            }
            _ => {}
        }
    }

    /// Step i's input gradient from dout[i] into `dinp` [n, input_len(i)] (overwritten); a
    /// batch norm's uses the batch's `mean`, `var` and the whole batch's `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn input_grad(&mut self, dinp: &mut [f32], plan: &Plan, p: &[f32], norm: &NormTotals, seed: u32, batch: usize, i: usize) {
        let n = self.n;
        let dout = &self.dout[i];
        let inp = plan.src[i].map_or(&self.x[..], |j| &self.out[j][..]);
        let (c, h, w) = chw(plan.steps[i].input);
        let s = &plan.slots[i];
        match plan.steps[i].layer {
            Layer::Conv { .. } => conv_backward_input(dinp, &mut self.cols, dout, &p[s.weight.clone().unwrap()], conv_dims(plan, i, n).unwrap()),
            Layer::Linear { out: of, .. } => matmul(dinp, dout, of, 1, &p[s.weight.clone().unwrap()], c, 1, n, c, of, false),
            Layer::BatchNorm { eps, .. } => {
                let gamma = &p[s.gamma.clone().unwrap()];
                batchnorm_backward_apply(dinp, dout, inp, &norm.mean[i], &norm.var[i], gamma, &norm.dgamma, &norm.dbeta, n, c, h * w, batch, eps)
            }
            Layer::Act(f) => act_backward(dinp, dout, inp, f),
            Layer::Pool { kind: Pool::Max, k, stride } => maxpool2d_backward(dinp, dout, &self.arg[i], n, c, h, w, k, stride),
            Layer::Pool { kind: Pool::Avg, k, stride } => avgpool2d_backward(dinp, dout, n, c, h, w, k, stride),
            Layer::Gap => gap_backward(dinp, dout, n, c, h * w),
            Layer::Dropout(q) => dropout_lane(dinp, dout, q, dropout_seed(seed, i), self.lo * plan.input_len(i)),
            Layer::Scale(f) => scale_forward(dinp, dout, f),
            Layer::Flatten | Layer::Res(_) => dinp.copy_from_slice(dout),
        }
    }
}

/// The seed that turns dropout off (evaluation).
const NO_DROPOUT: u32 = u32::MAX;

/// Dropout on a lane whose first element is element `first` of the batch's [N * L]: the mask
/// is the batch's, whatever the split (`reference::elementwise::dropout_forward`).
fn dropout_lane(out: &mut [f32], inp: &[f32], p: f32, seed: u32, first: usize) {
    let keep = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for (j, (o, &x)) in out.iter_mut().zip(inp).enumerate() {
        *o = if dropout_keeps(seed, first + j, p) { x * keep } else { 0.0 };
    }
}

/// Mutable views of a layer's two gradient tensors in a packed vector (`first` before
/// `second`, as Params packs a layer's tensors).
fn split_grads(g: &mut [f32], first: std::ops::Range<usize>, second: Option<std::ops::Range<usize>>) -> (&mut [f32], Option<&mut [f32]>) {
    match second {
        None => (&mut g[first], None),
        Some(second) => {
            let (lo, hi) = g.split_at_mut(second.start);
            (&mut lo[first], Some(&mut hi[..second.len()]))
        }
    }
}

/// The whole batch's batch-norm numbers: each norm step's batch mean and variance [C] (empty
/// for other steps), and the gradient totals [C] of the norm being taken back.
struct NormTotals {
    mean: Vec<Vec<f32>>,
    var: Vec<Vec<f32>>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

/// A batch of any network split into lanes, with the batch norms' totals and the summed
/// gradient (`grads`, packed as the parameters).
pub struct NetLanes {
    pub plan: Plan,
    pub lanes: Vec<NetLane>,
    pub batch: usize,
    norm: NormTotals,
    pub grads: Vec<f32>,
}

impl NetLanes {
    /// A batch of `batch` images split `parts` ways; `training` gives the lanes their
    /// gradients (evaluation's lanes run forward only).
    pub fn new(plan: Plan, batch: usize, parts: usize, training: bool) -> NetLanes {
        let lanes = split_batch(batch, parts).map(|(lo, n)| NetLane::new(&plan, lo, n, training)).collect();
        let widest = (0..plan.steps.len()).filter(|&i| is_norm(&plan, i)).map(|i| plan.steps[i].input.channels()).max().unwrap_or(0);
        let per_norm = |i: usize| vec![0.0; if is_norm(&plan, i) { plan.steps[i].input.channels() } else { 0 }];
        let norm = NormTotals {
            mean: (0..plan.steps.len()).map(per_norm).collect(),
            var: (0..plan.steps.len()).map(per_norm).collect(),
            dgamma: vec![0.0; widest],
            dbeta: vec![0.0; widest],
        };
        let grads = vec![0.0; if training { plan.params.total } else { 0 }];
        NetLanes { plan, lanes, batch, norm, grads }
    }

    /// Every activation, gradient and scratch value set to NaN (the tests': a value read before
    /// it is written shows).
    pub fn poison(&mut self) {
        for l in &mut self.lanes {
            for v in l.out.iter_mut().chain(&mut l.dout).chain([&mut l.dlogits, &mut l.grads, &mut l.cols, &mut l.scratch]) {
                v.fill(f32::NAN);
            }
            l.arg.iter_mut().for_each(|a| a.fill(u32::MAX));
        }
        self.grads.fill(f32::NAN);
    }

    /// Each lane's images and labels: records `index[base + lo ..]` of (images, labels),
    /// augmented as the image's place in the epoch says.
    pub fn gather(&mut self, images: &[u8], labels: &[u8], index: &[u32], base: usize, augment: &Augment) {
        for l in &mut self.lanes {
            gather_augmented(&mut l.x, &mut l.y, images, labels, index, base + l.lo, l.n, augment);
        }
    }

    /// The forward of the images in the lanes to the logits. In training the batch norms use
    /// the batch's statistics and move the running ones in `buffers`, and dropout draws its
    /// masks from `seed`; in evaluation both are as `net.eval()` has them.
    pub fn forward(&mut self, threads: &Threads, p: &[f32], buffers: &mut [f32], mode: Mode, seed: u32) {
        let seed = if mode == Mode::Train { seed.min(NO_DROPOUT - 1) } else { NO_DROPOUT };
        let order = self.plan.order.clone();
        let mut at = 0;
        while at < order.len() {
            // Everything up to the next batch norm that needs the whole batch, a lane at a time.
            let end = (at..order.len()).find(|&j| mode == Mode::Train && is_norm(&self.plan, order[j])).unwrap_or(order.len());
            let (plan, norm, stretch) = (&self.plan, &self.norm, &order[at..end]);
            let bufs: &[f32] = buffers;
            threads.each(self.lanes.iter_mut(), |lane| {
                for &i in stretch {
                    let stats = match &plan.slots[i] {
                        s if is_norm(plan, i) => (&bufs[s.running_mean.clone().unwrap()], &bufs[s.running_var.clone().unwrap()]),
                        _ => (&norm.mean[i][..], &norm.var[i][..]),
                    };
                    lane.forward_layer(plan, p, stats, seed, i);
                }
            });
            if end < order.len() {
                self.norm_forward(threads, p, buffers, seed, order[end]);
            }
            at = end + 1;
        }
    }

    /// A batch norm's training forward: the batch's mean from the lanes' sums, its variance
    /// from their squared deviations, the running statistics moved, then each lane normalised.
    fn norm_forward(&mut self, threads: &Threads, p: &[f32], buffers: &mut [f32], seed: u32, i: usize) {
        let plan = &self.plan;
        let (c, h, w) = chw(plan.steps[i].input);
        let m = (self.batch * h * w) as f64;
        threads.each(self.lanes.iter_mut(), |l| {
            let inp = plan.src[i].map_or(&l.x[..], |j| &l.out[j][..]);
            batchnorm_sums(&mut l.sums, inp, l.n, c, h * w);
        });
        for ch in 0..c {
            self.norm.mean[i][ch] = (self.lanes.iter().map(|l| l.sums[ch]).sum::<f64>() / m) as f32;
        }
        let mean = &self.norm.mean[i];
        threads.each(self.lanes.iter_mut(), |l| {
            let inp = plan.src[i].map_or(&l.x[..], |j| &l.out[j][..]);
            batchnorm_squares(&mut l.sums2, inp, mean, l.n, c, h * w);
        });
        for ch in 0..c {
            self.norm.var[i][ch] = (self.lanes.iter().map(|l| l.sums2[ch]).sum::<f64>() / m) as f32;
        }
        let Layer::BatchNorm { momentum, .. } = plan.steps[i].layer else { unreachable!() };
        let (rm, rv) = (plan.slots[i].running_mean.clone().unwrap(), plan.slots[i].running_var.clone().unwrap());
        // PyTorch's update, the variance unbiased: r = (1 - momentum) r + momentum x.
        let unbias = if m > 1.0 { (m / (m - 1.0)) as f32 } else { 1.0 };
        for ch in 0..c {
            buffers[rm.start + ch] = (1.0 - momentum) * buffers[rm.start + ch] + momentum * self.norm.mean[i][ch];
            buffers[rv.start + ch] = (1.0 - momentum) * buffers[rv.start + ch] + momentum * self.norm.var[i][ch] * unbias;
        }
        let norm = &self.norm;
        threads.each(self.lanes.iter_mut(), |l| l.forward_layer(plan, p, (&norm.mean[i], &norm.var[i]), seed, i));
    }

    /// The loss of the last training forward (label smoothing `smoothing`), a mean over the
    /// whole batch: each lane's dlogits, loss sum and correct predictions. Returns the batch's
    /// (loss sum, correct).
    pub fn loss(&mut self, smoothing: f32) -> (f32, u32) {
        let (plan, batch) = (&self.plan, self.batch);
        for l in &mut self.lanes {
            (l.loss, l.correct) = cross_entropy_smoothed_part(&mut l.dlogits, &l.out[plan.output], &l.y, l.n, batch, smoothing);
        }
        (self.lanes.iter().map(|l| l.loss).sum(), self.lanes.iter().map(|l| l.correct).sum())
    }

    /// The backward from the lanes' dlogits after a training forward: every parameter's
    /// gradient, the lanes' shares summed in lane order into `grads`.
    pub fn backward(&mut self, threads: &Threads, p: &[f32], seed: u32) {
        let seed = seed.min(NO_DROPOUT - 1);
        let (order, output) = (self.plan.order.clone(), self.plan.output);
        for l in &mut self.lanes {
            l.written.fill(false);
            l.grads.fill(0.0);
            let d = std::mem::take(&mut l.dlogits);
            l.send(output, &d);
            l.dlogits = d;
        }
        let mut at = order.len();
        while at > 0 {
            let start = (0..at).rev().find(|&j| is_norm(&self.plan, order[j])).map_or(0, |j| j + 1);
            let (plan, norm, batch, stretch) = (&self.plan, &self.norm, self.batch, &order[start..at]);
            threads.each(self.lanes.iter_mut(), |lane| {
                for &i in stretch.iter().rev() {
                    lane.backward_layer(plan, p, norm, seed, batch, i);
                }
            });
            if start > 0 {
                self.norm_backward(threads, p, seed, order[start - 1]);
            }
            at = start.saturating_sub(1);
        }
        let lanes = &self.lanes;
        for (k, g) in self.grads.iter_mut().enumerate() {
            *g = lanes.iter().map(|l| l.grads[k]).fold(0.0, |a, b| a + b);
        }
    }

    /// A batch norm's backward: dgamma and dbeta of the whole batch from the lanes' partial
    /// sums (lane 0's share holds the totals), then each lane's input gradient.
    fn norm_backward(&mut self, threads: &Threads, p: &[f32], seed: u32, i: usize) {
        let plan = &self.plan;
        let (c, h, w) = chw(plan.steps[i].input);
        let Layer::BatchNorm { eps, .. } = plan.steps[i].layer else { unreachable!() };
        let norm = &self.norm;
        threads.each(self.lanes.iter_mut(), |l| {
            let inp = plan.src[i].map_or(&l.x[..], |j| &l.out[j][..]);
            batchnorm_backward_sums(&mut l.sums, &mut l.sums2, &l.dout[i], inp, &norm.mean[i], &norm.var[i], l.n, c, h * w, eps);
        });
        for ch in 0..c {
            self.norm.dgamma[ch] = self.lanes.iter().map(|l| l.sums[ch]).sum::<f64>() as f32;
            self.norm.dbeta[ch] = self.lanes.iter().map(|l| l.sums2[ch]).sum::<f64>() as f32;
        }
        let (gr, br) = (plan.slots[i].gamma.clone().unwrap(), plan.slots[i].beta.clone().unwrap());
        self.lanes[0].grads[gr].copy_from_slice(&self.norm.dgamma[..c]);
        self.lanes[0].grads[br].copy_from_slice(&self.norm.dbeta[..c]);
        let (norm, batch) = (&self.norm, self.batch);
        threads.each(self.lanes.iter_mut(), |l| l.backward_layer(plan, p, norm, seed, batch, i));
    }
}
