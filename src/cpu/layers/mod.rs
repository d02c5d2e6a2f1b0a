//! The CPU engine's fast layers: the same forward/backward pairs as cpu/reference.rs (names,
//! argument order, shapes; scratch buffers after the outputs), computed as matrix products on
//! the `gemm` crate. A convolution is im2col then one GEMM per image:
//!   forward         out[OC,P]   = weight[OC,CKK] . cols[CKK,P]          (P = OH*OW, CKK = C*K*K)
//!   backward weight dweight     += dout[OC,P] . cols[CKK,P]^T            (summed over images)
//!   backward input  dcols[CKK,P] = weight[OC,CKK]^T . dout[OC,P], then col2im into dinp
//! and a linear layer is one GEMM a direction. ReLU and the 2x2 max-pool are fused into one
//! pass over each conv output plane, with the reference's tie rule and NO_ARG.
//!
//! Every function takes the images of one lane of the batch (cpu/engine.rs splits a batch
//! over threads); each call computes in a fixed order, so a result depends on the inputs only.
//!
//! Any network's layers: `conv` (any kernel, stride and padding) and `norm` (batch norm split
//! into the lanes' partial sums and their use); the pools and elementwise layers are the
//! reference's own loops (they are one pass over memory already).

pub mod conv;
pub mod norm;

use super::reference::NO_ARG;

/// dst[M,N] (row-major, contiguous) = (dst if `accumulate`) + lhs[M,K] . rhs[K,N], the
/// operands given by their row and column strides (a transpose is a swap of strides).
/// Single-threaded: the engine's threads split the batch, not the products.
#[allow(clippy::too_many_arguments)]
pub fn matmul(dst: &mut [f32], lhs: &[f32], lhs_rs: usize, lhs_cs: usize, rhs: &[f32], rhs_rs: usize, rhs_cs: usize, m: usize, n: usize, k: usize, accumulate: bool) {
    assert_eq!(dst.len(), m * n, "dst is [{m},{n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // The last element each operand's strides reach must lie inside it: what makes the
    // unchecked call below sound.
    assert!((m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(), "lhs [{m},{k}] strides ({lhs_rs},{lhs_cs}) past its {} values", lhs.len());
    assert!((k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(), "rhs [{k},{n}] strides ({rhs_rs},{rhs_cs}) past its {} values", rhs.len());
    // SAFETY: every index the strides reach is in bounds (checked above); dst is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// cols[C*K*K, OH*OW] of one image inp[C,H,W]: row (c, ky, kx), column (oy, ox) holds
/// inp[c, oy + ky, ox + kx] (valid padding, stride 1).
pub fn im2col(cols: &mut [f32], inp: &[f32], c: usize, h: usize, w: usize, k: usize) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    for ci in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((ci * k + ky) * k + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    row[oy * ow..][..ow].copy_from_slice(&inp[(ci * h + oy + ky) * w + kx..][..ow]);
                }
            }
        }
    }
}

/// dinp[C,H,W] of one image = the sum, over the places each input was copied to by im2col, of
/// dcols[C*K*K, OH*OW] (im2col's adjoint).
pub fn col2im(dinp: &mut [f32], dcols: &[f32], c: usize, h: usize, w: usize, k: usize) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    dinp[..c * h * w].fill(0.0);
    for ci in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let row = &dcols[((ci * k + ky) * k + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    for (d, &g) in dinp[(ci * h + oy + ky) * w + kx..][..ow].iter_mut().zip(&row[oy * ow..][..ow]) {
                        *d += g;
                    }
                }
            }
        }
    }
}

/// One plane: out[OH,OW] = relu(out) in place, pool[OH/2,OW/2] its 2x2 maxima and arg[OH/2,OW/2]
/// the place in the plane of each window's first maximum (row-major), NO_ARG where it is 0.
fn relu_pool(out: &mut [f32], pool: &mut [f32], arg: &mut [u32], oh: usize, ow: usize) {
    for v in out.iter_mut() {
        *v = v.max(0.0);
    }
    let (ph, pw) = (oh / 2, ow / 2);
    for y in 0..ph {
        for x in 0..pw {
            let mut best = out[2 * y * ow + 2 * x];
            let mut at = 2 * y * ow + 2 * x;
            for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                let i = (2 * y + dy) * ow + 2 * x + dx;
                if out[i] > best {
                    best = out[i];
                    at = i;
                }
            }
            pool[y * pw + x] = best;
            arg[y * pw + x] = if best > 0.0 { at as u32 } else { NO_ARG };
        }
    }
}

/// out[N,OC,OH,OW] = relu(conv2d(inp[N,C,H,W], weight[OC,C,K,K], bias[OC])); pool[N,OC,PH,PW]
/// and arg[N,OC,PH,PW] its 2x2 max-pool as in the reference. cols: [C*K*K, OH*OW] scratch.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_forward(
    out: &mut [f32],
    pool: &mut [f32],
    arg: &mut [u32],
    cols: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    let (p, pp, ckk) = (oh * ow, (oh / 2) * (ow / 2), c * k * k);
    let cols = &mut cols[..ckk * p];
    for b in 0..n {
        im2col(cols, &inp[b * c * h * w..][..c * h * w], c, h, w, k);
        let o = &mut out[b * oc * p..][..oc * p];
        for (plane, &bv) in o.chunks_exact_mut(p).zip(bias) {
            plane.fill(bv);
        }
        matmul(o, weight, ckk, 1, cols, p, 1, oc, p, ckk, true);
        for j in 0..oc {
            let at = (b * oc + j) * pp;
            relu_pool(&mut o[j * p..][..p], &mut pool[at..][..pp], &mut arg[at..][..pp], oh, ow);
        }
    }
}

/// dout[OC,OH,OW] of one image: dpool[OC,PH,PW] at each window's argmax, 0 elsewhere (and
/// nothing where arg is NO_ARG: the ReLU's backward).
fn unpool_image(dout: &mut [f32], dpool: &[f32], arg: &[u32], oc: usize, p: usize, pp: usize) {
    dout[..oc * p].fill(0.0);
    for j in 0..oc {
        for (&a, &g) in arg[j * pp..][..pp].iter().zip(&dpool[j * pp..][..pp]) {
            if a != NO_ARG {
                dout[j * p + a as usize] = g;
            }
        }
    }
}

/// dweight[OC,C,K,K] = sum over the N images of dout . cols^T and dbias[OC] = sum of dout, where
/// dout[OC,OH,OW] is dpool[N,OC,PH,PW] unpooled at arg (per image, scratch) and cols the
/// image's im2col of inp[N,C,H,W] (scratch). Overwrites dweight and dbias.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_backward_weight(
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &mut [f32],
    cols: &mut [f32],
    dpool: &[f32],
    arg: &[u32],
    inp: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    let (p, pp, ckk) = (oh * ow, (oh / 2) * (ow / 2), c * k * k);
    let (cols, dout) = (&mut cols[..ckk * p], &mut dout[..oc * p]);
    dbias[..oc].fill(0.0);
    for b in 0..n {
        unpool_image(dout, &dpool[b * oc * pp..], &arg[b * oc * pp..], oc, p, pp);
        im2col(cols, &inp[b * c * h * w..][..c * h * w], c, h, w, k);
        // cols^T[P, CKK]: row stride 1, column stride P.
        matmul(&mut dweight[..oc * ckk], dout, p, 1, cols, 1, p, oc, ckk, p, b > 0);
        for (d, plane) in dbias.iter_mut().zip(dout.chunks_exact(p)) {
            *d += plane.iter().sum::<f32>();
        }
    }
}

/// dinp[N,C,H,W] = col2im(weight^T . dout) per image, dout[OC,OH,OW] being dpool[N,OC,PH,PW]
/// unpooled at arg (scratch) and dcols[C*K*K, OH*OW] scratch.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_backward_input(
    dinp: &mut [f32],
    dout: &mut [f32],
    dcols: &mut [f32],
    dpool: &[f32],
    arg: &[u32],
    weight: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: usize,
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    let (p, pp, ckk) = (oh * ow, (oh / 2) * (ow / 2), c * k * k);
    let (dcols, dout) = (&mut dcols[..ckk * p], &mut dout[..oc * p]);
    for b in 0..n {
        unpool_image(dout, &dpool[b * oc * pp..], &arg[b * oc * pp..], oc, p, pp);
        // weight^T[CKK, OC]: row stride 1, column stride CKK.
        matmul(dcols, weight, 1, ckk, dout, p, 1, ckk, p, oc, false);
        col2im(&mut dinp[b * c * h * w..][..c * h * w], dcols, c, h, w, k);
    }
}

/// out[N,OUT] = (relu?)(inp[N,IN] . weight[OUT,IN]^T + bias[OUT]).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(out: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], n: usize, in_f: usize, out_f: usize, relu: bool) {
    let out = &mut out[..n * out_f];
    for row in out.chunks_exact_mut(out_f) {
        row.copy_from_slice(&bias[..out_f]);
    }
    // weight^T[IN, OUT]: row stride 1, column stride IN.
    matmul(out, inp, in_f, 1, weight, 1, in_f, n, out_f, in_f, true);
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// dinp[N,IN] = dout[N,OUT] . weight[OUT,IN] (masked by inp > 0 when `relu`); dweight[OUT,IN] =
/// dout^T . inp[N,IN]; dbias[OUT] = sum over the batch of dout. Overwrites all three.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(dinp: &mut [f32], dweight: &mut [f32], dbias: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], n: usize, in_f: usize, out_f: usize, relu: bool) {
    // dout^T[OUT, N]: row stride 1, column stride OUT.
    matmul(&mut dweight[..out_f * in_f], dout, 1, out_f, inp, in_f, 1, out_f, in_f, n, false);
    dbias[..out_f].fill(0.0);
    for row in dout[..n * out_f].chunks_exact(out_f) {
        for (d, &g) in dbias.iter_mut().zip(row) {
            *d += g;
        }
    }
    let dinp = &mut dinp[..n * in_f];
    matmul(dinp, dout, out_f, 1, weight, in_f, 1, n, in_f, out_f, false);
    if relu {
        for (d, &x) in dinp.iter_mut().zip(inp) {
            if x <= 0.0 {
                *d = 0.0;
            }
        }
    }
}
