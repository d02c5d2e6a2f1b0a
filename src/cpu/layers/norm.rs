//! The fast batch norm for a batch split into lanes: the batch's statistics span every lane,
//! so the reference's forward and backward are cut where they need the whole batch. Each lane
//! gives its partial sums (a plane summed in f32, planes added in f64), the engine adds the
//! lanes' partials in lane order (fixed: the result depends on the lane split only), and each
//! lane then applies the totals to its own images.
//!
//! Shapes: inp, out, dout, dinp [N,C,HW] (one lane's N); mean, var, gamma, beta, dgamma,
//! dbeta [C]; the partial sums [C] in f64.

/// sums[C] = the sum of each channel's values over the lane.
pub fn batchnorm_sums(sums: &mut [f64], inp: &[f32], n: usize, c: usize, hw: usize) {
    sums[..c].fill(0.0);
    for b in 0..n {
        for (ch, s) in sums[..c].iter_mut().enumerate() {
            *s += inp[(b * c + ch) * hw..][..hw].iter().sum::<f32>() as f64;
        }
    }
}

/// squares[C] = the sum over the lane of each value's squared distance from its channel's
/// batch mean[C] (the two-pass variance: no cancellation).
pub fn batchnorm_squares(squares: &mut [f64], inp: &[f32], mean: &[f32], n: usize, c: usize, hw: usize) {
    squares[..c].fill(0.0);
    for b in 0..n {
        for (ch, s) in squares[..c].iter_mut().enumerate() {
            let m = mean[ch];
            *s += inp[(b * c + ch) * hw..][..hw].iter().map(|&x| (x - m) * (x - m)).sum::<f32>() as f64;
        }
    }
}

/// out = (inp - mean) / sqrt(var + eps) * gamma + beta: training with the batch's statistics,
/// evaluation with the running ones.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_apply(out: &mut [f32], inp: &[f32], mean: &[f32], var: &[f32], gamma: &[f32], beta: &[f32], n: usize, c: usize, hw: usize, eps: f32) {
    for b in 0..n {
        for ch in 0..c {
            let k = gamma[ch] / (var[ch] + eps).sqrt();
            let (m, shift) = (mean[ch], beta[ch]);
            let at = (b * c + ch) * hw;
            for (o, &x) in out[at..][..hw].iter_mut().zip(&inp[at..][..hw]) {
                *o = (x - m) * k + shift;
            }
        }
    }
}

/// The lane's share of dbeta[C] = sum dout and dgamma[C] = sum dout * xhat, xhat = (inp -
/// mean) / sqrt(var + eps), as partial sums.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_sums(dgamma: &mut [f64], dbeta: &mut [f64], dout: &[f32], inp: &[f32], mean: &[f32], var: &[f32], n: usize, c: usize, hw: usize, eps: f32) {
    dgamma[..c].fill(0.0);
    dbeta[..c].fill(0.0);
    for b in 0..n {
        for ch in 0..c {
            let (m, r) = (mean[ch], 1.0 / (var[ch] + eps).sqrt());
            let at = (b * c + ch) * hw;
            let (g, x) = (&dout[at..][..hw], &inp[at..][..hw]);
            dbeta[ch] += g.iter().sum::<f32>() as f64;
            dgamma[ch] += g.iter().zip(x).map(|(&g, &x)| g * (x - m) * r).sum::<f32>() as f64;
        }
    }
}

/// dinp = gamma r / M (M dout - dbeta - xhat dgamma), with the whole batch's dgamma and dbeta
/// and M = batch * HW values per channel. Overwrites dinp.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_apply(
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    dgamma: &[f32],
    dbeta: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    batch: usize,
    eps: f32,
) {
    let m = (batch * hw) as f32;
    for b in 0..n {
        for ch in 0..c {
            let r = 1.0 / (var[ch] + eps).sqrt();
            let (k, mu, db, dg) = (gamma[ch] * r / m, mean[ch], dbeta[ch], dgamma[ch]);
            let at = (b * c + ch) * hw;
            for ((d, &g), &x) in dinp[at..][..hw].iter_mut().zip(&dout[at..][..hw]).zip(&inp[at..][..hw]) {
                *d = k * (m * g - db - (x - mu) * r * dg);
            }
        }
    }
}
