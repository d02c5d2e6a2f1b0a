//! The reference batch norm (`nn.BatchNorm2d` on maps, `nn.BatchNorm1d` on features: HW = 1),
//! in PyTorch's two modes. Training normalises by the batch's own statistics over the M = N*HW
//! values of each channel and moves the running ones; evaluation normalises by the running ones.
//!
//! Shapes: inp, out [N,C,HW]; gamma, beta, mean, var, running_mean, running_var [C].

use super::Real;

/// Training mode: mean[C] and var[C] (biased: over M, as the normalisation uses) of each
/// channel, and out = (inp - mean) / sqrt(var + eps) * gamma + beta.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward<T: Real>(out: &mut [T], mean: &mut [T], var: &mut [T], inp: &[T], gamma: &[T], beta: &[T], n: usize, c: usize, hw: usize, eps: T) {
    let m = T::from_usize(n * hw);
    for ch in 0..c {
        let values = || (0..n).flat_map(move |b| (b * c + ch) * hw..(b * c + ch + 1) * hw);
        let mut sum = T::ZERO;
        for i in values() {
            sum += inp[i];
        }
        let mu = sum / m;
        // The two-pass variance: no cancellation when the mean is large against the spread.
        let mut sq = T::ZERO;
        for i in values() {
            sq += (inp[i] - mu) * (inp[i] - mu);
        }
        let v = sq / m;
        let k = gamma[ch] / (v + eps).sqrt();
        for i in values() {
            out[i] = (inp[i] - mu) * k + beta[ch];
        }
        mean[ch] = mu;
        var[ch] = v;
    }
}

/// PyTorch's running statistics after a training forward: r = (1 - momentum) r + momentum x,
/// the variance taken unbiased (var * M / (M - 1); M = 1 keeps the biased one, 0).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_running<T: Real>(running_mean: &mut [T], running_var: &mut [T], mean: &[T], var: &[T], n: usize, c: usize, hw: usize, momentum: T) {
    let m = n * hw;
    let unbias = if m > 1 { T::from_usize(m) / T::from_usize(m - 1) } else { T::ONE };
    for ch in 0..c {
        running_mean[ch] = (T::ONE - momentum) * running_mean[ch] + momentum * mean[ch];
        running_var[ch] = (T::ONE - momentum) * running_var[ch] + momentum * var[ch] * unbias;
    }
}

/// Evaluation mode: out = (inp - running_mean) / sqrt(running_var + eps) * gamma + beta.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval<T: Real>(out: &mut [T], inp: &[T], gamma: &[T], beta: &[T], running_mean: &[T], running_var: &[T], n: usize, c: usize, hw: usize, eps: T) {
    for b in 0..n {
        for ch in 0..c {
            let k = gamma[ch] / (running_var[ch] + eps).sqrt();
            for i in (b * c + ch) * hw..(b * c + ch + 1) * hw {
                out[i] = (inp[i] - running_mean[ch]) * k + beta[ch];
            }
        }
    }
}

/// The training-mode backward, the batch's statistics depending on every input:
/// xhat = (inp - mean) r with r = 1/sqrt(var + eps); dbeta[C] = sum dout; dgamma[C] =
/// sum dout * xhat; dinp = gamma r / M (M dout - dbeta - xhat dgamma). Overwrites all three.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward<T: Real>(
    dinp: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
    dout: &[T],
    inp: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    n: usize,
    c: usize,
    hw: usize,
    eps: T,
) {
    let m = T::from_usize(n * hw);
    for ch in 0..c {
        let values = || (0..n).flat_map(move |b| (b * c + ch) * hw..(b * c + ch + 1) * hw);
        let r = T::ONE / (var[ch] + eps).sqrt();
        let (mut db, mut dg) = (T::ZERO, T::ZERO);
        for i in values() {
            db += dout[i];
            dg += dout[i] * (inp[i] - mean[ch]) * r;
        }
        let k = gamma[ch] * r / m;
        for i in values() {
            dinp[i] = k * (m * dout[i] - db - (inp[i] - mean[ch]) * r * dg);
        }
        dgamma[ch] = dg;
        dbeta[ch] = db;
    }
}

/// The evaluation-mode backward (the views' gradients through a trained network): an affine map
/// per channel, dinp = dout * gamma / sqrt(running_var + eps); dgamma = sum dout * xhat and
/// dbeta = sum dout with the running statistics. Overwrites all three.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_eval<T: Real>(
    dinp: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
    dout: &[T],
    inp: &[T],
    gamma: &[T],
    running_mean: &[T],
    running_var: &[T],
    n: usize,
    c: usize,
    hw: usize,
    eps: T,
) {
    for ch in 0..c {
        let r = T::ONE / (running_var[ch] + eps).sqrt();
        let (mut db, mut dg) = (T::ZERO, T::ZERO);
        for b in 0..n {
            for i in (b * c + ch) * hw..(b * c + ch + 1) * hw {
                db += dout[i];
                dg += dout[i] * (inp[i] - running_mean[ch]) * r;
                dinp[i] = dout[i] * gamma[ch] * r;
            }
        }
        dgamma[ch] = dg;
        dbeta[ch] = db;
    }
}
