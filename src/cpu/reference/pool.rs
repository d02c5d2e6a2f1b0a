//! The reference pooling layers: `nn.MaxPool2d(K, S)` and `nn.AvgPool2d(K, S)` (no padding,
//! floor: OH = (H - K) / S + 1; windows overlap when S < K) and the global average pool
//! (`nn.AdaptiveAvgPool2d(1)`).
//!
//! Shapes: inp[N,C,H,W], out[N,C,OH,OW]; the global pool's out[N,C] from inp[N,C,HW].

use super::Real;

/// out[N,C,OH,OW] = the maximum of each K x K window at (oy*S, ox*S); arg[N,C,OH,OW] = y*W + x
/// of its first maximum in row-major window order (PyTorch's tie rule), in the input's plane.
#[allow(clippy::too_many_arguments)]
pub fn maxpool2d_forward<T: Real>(out: &mut [T], arg: &mut [u32], inp: &[T], n: usize, c: usize, h: usize, w: usize, k: usize, s: usize) {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    for plane in 0..n * c {
        let x = &inp[plane * h * w..][..h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (oy * s * w + ox * s, x[oy * s * w + ox * s]);
                for ky in 0..k {
                    for kx in 0..k {
                        let i = (oy * s + ky) * w + ox * s + kx;
                        if x[i] > best.1 {
                            best = (i, x[i]);
                        }
                    }
                }
                out[(plane * oh + oy) * ow + ox] = best.1;
                arg[(plane * oh + oy) * ow + ox] = best.0 as u32;
            }
        }
    }
}

/// dinp[N,C,H,W] = the sum of dout[N,C,OH,OW] over the windows whose maximum it was (several
/// when windows overlap), 0 elsewhere. Overwrites dinp.
#[allow(clippy::too_many_arguments)]
pub fn maxpool2d_backward<T: Real>(dinp: &mut [T], dout: &[T], arg: &[u32], n: usize, c: usize, h: usize, w: usize, k: usize, s: usize) {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    dinp[..n * c * h * w].fill(T::ZERO);
    for plane in 0..n * c {
        for o in 0..oh * ow {
            dinp[plane * h * w + arg[plane * oh * ow + o] as usize] += dout[plane * oh * ow + o];
        }
    }
}

/// out[N,C,OH,OW] = the mean of each K x K window at (oy*S, ox*S).
#[allow(clippy::too_many_arguments)]
pub fn avgpool2d_forward<T: Real>(out: &mut [T], inp: &[T], n: usize, c: usize, h: usize, w: usize, k: usize, s: usize) {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let area = T::from_usize(k * k);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = T::ZERO;
                for ky in 0..k {
                    for kx in 0..k {
                        sum += inp[(plane * h + oy * s + ky) * w + ox * s + kx];
                    }
                }
                out[(plane * oh + oy) * ow + ox] = sum / area;
            }
        }
    }
}

/// dinp[N,C,H,W] = the sum over the windows holding it of dout[N,C,OH,OW] / (K K).
/// Overwrites dinp.
#[allow(clippy::too_many_arguments)]
pub fn avgpool2d_backward<T: Real>(dinp: &mut [T], dout: &[T], n: usize, c: usize, h: usize, w: usize, k: usize, s: usize) {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let area = T::from_usize(k * k);
    dinp[..n * c * h * w].fill(T::ZERO);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let g = dout[(plane * oh + oy) * ow + ox] / area;
                for ky in 0..k {
                    for kx in 0..k {
                        dinp[(plane * h + oy * s + ky) * w + ox * s + kx] += g;
                    }
                }
            }
        }
    }
}

/// out[N,C] = the mean of each plane of inp[N,C,HW].
pub fn gap_forward<T: Real>(out: &mut [T], inp: &[T], n: usize, c: usize, hw: usize) {
    for plane in 0..n * c {
        let mut sum = T::ZERO;
        for &v in &inp[plane * hw..][..hw] {
            sum += v;
        }
        out[plane] = sum / T::from_usize(hw);
    }
}

/// dinp[N,C,HW] = dout[N,C] / HW at every place of its plane.
pub fn gap_backward<T: Real>(dinp: &mut [T], dout: &[T], n: usize, c: usize, hw: usize) {
    for plane in 0..n * c {
        dinp[plane * hw..][..hw].fill(dout[plane] / T::from_usize(hw));
    }
}
