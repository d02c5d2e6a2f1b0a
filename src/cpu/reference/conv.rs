//! The reference convolution of any kernel, stride and zero padding (`nn.Conv2d`): plain loops
//! over every output and every tap, a tap in the padding reading 0. The oracle of the fast
//! CPU convolution and of the WGSL one; LeNet's fused conv + ReLU + pool is in `super`.

use super::Real;

/// The sizes of one convolution: inp[N,C,H,W], weight[OC,C,K,K], stride S, padding P, and
/// out[N,OC,OH,OW] with OH = (H + 2P - K) / S + 1 (floor, as PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl ConvDims {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.p - self.k) / self.s + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.p - self.k) / self.s + 1
    }
}

/// The input row (or column) that output `o`'s tap `t` reads: o*S + t - P, or None where it
/// falls in the zero padding.
#[inline]
pub fn tap(o: usize, t: usize, s: usize, p: usize, size: usize) -> Option<usize> {
    (o * s + t).checked_sub(p).filter(|&i| i < size)
}

/// out[N,OC,OH,OW] = bias[OC] + sum_{c,ky,kx} weight[OC,C,K,K] * inp[N,C,oy*S+ky-P,ox*S+kx-P]
/// (no bias: 0), summed in (c, ky, kx) order.
pub fn conv_forward<T: Real>(out: &mut [T], inp: &[T], weight: &[T], bias: Option<&[T]>, d: ConvDims) {
    let (oh, ow) = (d.oh(), d.ow());
    for b in 0..d.n {
        for o in 0..d.oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias.map_or(T::ZERO, |bias| bias[o]);
                    for ci in 0..d.c {
                        for ky in 0..d.k {
                            let Some(y) = tap(oy, ky, d.s, d.p, d.h) else { continue };
                            for kx in 0..d.k {
                                let Some(x) = tap(ox, kx, d.s, d.p, d.w) else { continue };
                                sum += weight[((o * d.c + ci) * d.k + ky) * d.k + kx] * inp[((b * d.c + ci) * d.h + y) * d.w + x];
                            }
                        }
                    }
                    out[((b * d.oc + o) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
}

/// dinp[N,C,H,W] = sum over every (output, tap) that read it of dout[N,OC,OH,OW] * weight.
/// Overwrites dinp.
pub fn conv_backward_input<T: Real>(dinp: &mut [T], dout: &[T], weight: &[T], d: ConvDims) {
    let (oh, ow) = (d.oh(), d.ow());
    dinp[..d.n * d.c * d.h * d.w].fill(T::ZERO);
    for b in 0..d.n {
        for o in 0..d.oc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dout[((b * d.oc + o) * oh + oy) * ow + ox];
                    for ci in 0..d.c {
                        for ky in 0..d.k {
                            let Some(y) = tap(oy, ky, d.s, d.p, d.h) else { continue };
                            for kx in 0..d.k {
                                let Some(x) = tap(ox, kx, d.s, d.p, d.w) else { continue };
                                dinp[((b * d.c + ci) * d.h + y) * d.w + x] += g * weight[((o * d.c + ci) * d.k + ky) * d.k + kx];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dweight[OC,C,K,K] = sum_{n,oy,ox} dout[N,OC,OH,OW] * the input the tap read;
/// dbias[OC] = sum_{n,oy,ox} dout. Overwrites both.
pub fn conv_backward_weight<T: Real>(dweight: &mut [T], dbias: Option<&mut [T]>, dout: &[T], inp: &[T], d: ConvDims) {
    let (oh, ow) = (d.oh(), d.ow());
    for o in 0..d.oc {
        for ci in 0..d.c {
            for ky in 0..d.k {
                for kx in 0..d.k {
                    let mut sum = T::ZERO;
                    for b in 0..d.n {
                        for oy in 0..oh {
                            let Some(y) = tap(oy, ky, d.s, d.p, d.h) else { continue };
                            for ox in 0..ow {
                                let Some(x) = tap(ox, kx, d.s, d.p, d.w) else { continue };
                                sum += dout[((b * d.oc + o) * oh + oy) * ow + ox] * inp[((b * d.c + ci) * d.h + y) * d.w + x];
                            }
                        }
                    }
                    dweight[((o * d.c + ci) * d.k + ky) * d.k + kx] = sum;
                }
            }
        }
    }
    if let Some(dbias) = dbias {
        for (o, db) in dbias[..d.oc].iter_mut().enumerate() {
            let mut sum = T::ZERO;
            for b in 0..d.n {
                for &g in &dout[(b * d.oc + o) * oh * ow..][..oh * ow] {
                    sum += g;
                }
            }
            *db = sum;
        }
    }
}
