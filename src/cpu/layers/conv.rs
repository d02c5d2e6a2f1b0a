//! The fast convolution of any kernel, stride and zero padding: the reference's
//! `conv::conv_forward` and its backward as im2col and one GEMM per image (the scheme of
//! `super`'s LeNet layers, with the padding read as zeros and the stride skipping columns).
//! A 1x1 convolution of stride 1 without padding reads the image as its own im2col.
//!
//! Shapes: inp[N,C,H,W], weight[OC,C*K*K], out[N,OC,OH,OW], cols[C*K*K, OH*OW] (one image).

use super::matmul;
use crate::cpu::reference::conv::ConvDims;

/// The outputs ox whose tap kx reads a column inside the image: ox*S + kx - P in [0, W).
fn inside(o: usize, t: usize, s: usize, p: usize, size: usize) -> std::ops::Range<usize> {
    let lo = p.saturating_sub(t).div_ceil(s);
    let hi = (size + p).saturating_sub(t).div_ceil(s).min(o);
    lo..hi.max(lo)
}

/// Whether the image is its own im2col (1x1, stride 1, no padding).
fn direct(d: &ConvDims) -> bool {
    d.k == 1 && d.s == 1 && d.p == 0
}

/// cols[C*K*K, OH*OW] of one image inp[C,H,W]: row (c, ky, kx), column (oy, ox) holds
/// inp[c, oy*S + ky - P, ox*S + kx - P], 0 in the padding.
pub fn im2col(cols: &mut [f32], inp: &[f32], d: ConvDims) {
    let (oh, ow) = (d.oh(), d.ow());
    for ci in 0..d.c {
        for ky in 0..d.k {
            let rows = inside(oh, ky, d.s, d.p, d.h);
            for kx in 0..d.k {
                let row = &mut cols[((ci * d.k + ky) * d.k + kx) * oh * ow..][..oh * ow];
                let xs = inside(ow, kx, d.s, d.p, d.w);
                for oy in 0..oh {
                    let dst = &mut row[oy * ow..][..ow];
                    if !rows.contains(&oy) || xs.is_empty() {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &inp[(ci * d.h + oy * d.s + ky - d.p) * d.w..][..d.w];
                    dst[..xs.start].fill(0.0);
                    dst[xs.end..].fill(0.0);
                    let x0 = xs.start * d.s + kx - d.p;
                    if d.s == 1 {
                        dst[xs.clone()].copy_from_slice(&src[x0..x0 + xs.len()]);
                    } else {
                        for (j, v) in dst[xs.clone()].iter_mut().enumerate() {
                            *v = src[x0 + j * d.s];
                        }
                    }
                }
            }
        }
    }
}

/// dinp[C,H,W] of one image = the sum, over the places im2col copied each input to, of
/// dcols[C*K*K, OH*OW] (im2col's adjoint; the padding's share is dropped). Overwrites dinp.
pub fn col2im(dinp: &mut [f32], dcols: &[f32], d: ConvDims) {
    let (oh, ow) = (d.oh(), d.ow());
    dinp[..d.c * d.h * d.w].fill(0.0);
    for ci in 0..d.c {
        for ky in 0..d.k {
            let rows = inside(oh, ky, d.s, d.p, d.h);
            for kx in 0..d.k {
                let row = &dcols[((ci * d.k + ky) * d.k + kx) * oh * ow..][..oh * ow];
                let xs = inside(ow, kx, d.s, d.p, d.w);
                if xs.is_empty() {
                    continue;
                }
                let x0 = xs.start * d.s + kx - d.p;
                for oy in rows.clone() {
                    let dst = &mut dinp[(ci * d.h + oy * d.s + ky - d.p) * d.w..][..d.w];
                    for (j, &g) in row[oy * ow..][xs.clone()].iter().enumerate() {
                        dst[x0 + j * d.s] += g;
                    }
                }
            }
        }
    }
}

/// out[N,OC,OH,OW] = weight[OC,CKK] . im2col(inp) + bias[OC] (no bias: 0), per image.
/// cols: [C*K*K, OH*OW] scratch (unused for a direct 1x1).
pub fn conv_forward(out: &mut [f32], cols: &mut [f32], inp: &[f32], weight: &[f32], bias: Option<&[f32]>, d: ConvDims) {
    let (p, ckk, img) = (d.oh() * d.ow(), d.c * d.k * d.k, d.c * d.h * d.w);
    for b in 0..d.n {
        let image = &inp[b * img..][..img];
        let cols: &[f32] = if direct(&d) {
            image
        } else {
            im2col(&mut cols[..ckk * p], image, d);
            &cols[..ckk * p]
        };
        let o = &mut out[b * d.oc * p..][..d.oc * p];
        match bias {
            Some(bias) => {
                for (plane, &bv) in o.chunks_exact_mut(p).zip(bias) {
                    plane.fill(bv);
                }
            }
            None => o.fill(0.0),
        }
        matmul(o, weight, ckk, 1, cols, p, 1, d.oc, p, ckk, true);
    }
}

/// dinp[N,C,H,W] = col2im(weight^T . dout) per image; dcols [C*K*K, OH*OW] scratch.
/// Overwrites dinp.
pub fn conv_backward_input(dinp: &mut [f32], dcols: &mut [f32], dout: &[f32], weight: &[f32], d: ConvDims) {
    let (p, ckk, img) = (d.oh() * d.ow(), d.c * d.k * d.k, d.c * d.h * d.w);
    for b in 0..d.n {
        let g = &dout[b * d.oc * p..][..d.oc * p];
        let di = &mut dinp[b * img..][..img];
        // weight^T[CKK, OC]: row stride 1, column stride CKK.
        if direct(&d) {
            matmul(di, weight, 1, ckk, g, p, 1, ckk, p, d.oc, false);
        } else {
            let dcols = &mut dcols[..ckk * p];
            matmul(dcols, weight, 1, ckk, g, p, 1, ckk, p, d.oc, false);
            col2im(di, dcols, d);
        }
    }
}

/// dweight[OC,CKK] = sum over the N images of dout[OC,P] . im2col(inp)^T, dbias[OC] = sum of
/// dout; cols [C*K*K, OH*OW] scratch. Overwrites both.
pub fn conv_backward_weight(dweight: &mut [f32], dbias: Option<&mut [f32]>, cols: &mut [f32], dout: &[f32], inp: &[f32], d: ConvDims) {
    let (p, ckk, img) = (d.oh() * d.ow(), d.c * d.k * d.k, d.c * d.h * d.w);
    let dweight = &mut dweight[..d.oc * ckk];
    if d.n == 0 {
        dweight.fill(0.0);
    }
    for b in 0..d.n {
        let image = &inp[b * img..][..img];
        let cols: &[f32] = if direct(&d) {
            image
        } else {
            im2col(&mut cols[..ckk * p], image, d);
            &cols[..ckk * p]
        };
        // cols^T[P, CKK]: row stride 1, column stride P.
        matmul(dweight, &dout[b * d.oc * p..][..d.oc * p], p, 1, cols, 1, p, d.oc, ckk, p, b > 0);
    }
    if let Some(dbias) = dbias {
        dbias[..d.oc].fill(0.0);
        for b in 0..d.n {
            for (db, plane) in dbias.iter_mut().zip(dout[b * d.oc * p..][..d.oc * p].chunks_exact(p)) {
                *db += plane.iter().sum::<f32>();
            }
        }
    }
}
