// conv2d.wgsl: 2-D convolution, valid padding, stride 1, with the ReLU fused into the forward.
//   conv2d_forward:         out[N,OC,OH,OW] = relu?(bias[OC] + sum_{c,kh,kw} weight[OC,C,K,K] * inp[N,C,H,W])
//   conv2d_backward_input:  dinp[N,C,H,W] = sum_{oc,kh,kw} dout[N,OC,OH,OW] * weight[OC,C,K,K]
//   conv2d_backward_weight: dweight[OC,C,K,K] = sum_{n,oh,ow} dout * inp;  dbias[OC] = sum dout
// OH = H-K+1, OW = W-K+1. dout is the gradient after the ReLU mask (see maxpool_backward).
// Tensors live at offsets in three packed buffers: params/grads (weights) and acts.
//
// Speed: every invocation keeps a block of outputs in registers (OCB output channels, or CB
// input channels), and the block, the image and the channel come from workgroup_id, so they
// are the same for the whole workgroup. The weights are then read at uniform addresses (one
// load for all invocations) and each per-invocation load of the input feeds OCB multiply-adds.
// OCB and CB are pipeline-overridable constants so the block loops unroll into registers.
// The weights are read through a uniform binding (a 64 KiB window of the parameter buffer
// starting at the layer's weight tensor): uniform loads at uniform addresses are scalar loads,
// where a storage load costs a loop over the SIMD lanes on software rasterisers (lavapipe).

const WG: u32 = 64u;
const MAX_BLOCK: u32 = 16u; // registers per invocation; OCB, CB <= MAX_BLOCK

override OCB: u32 = 8u; // output channels per invocation (forward, backward_weight)
override CB: u32 = 8u;  // input channels per invocation (backward_input)

struct Params {
    n: u32, c: u32, h: u32, w: u32,   // N, C, H, W of inp
    oc: u32, k: u32, relu: u32,       // OC, K, fused ReLU on the forward output (0/1)
    inp: u32,    // offset of inp[N,C,H,W] in acts
    out: u32,    // offset of out[N,OC,OH,OW] in acts
    dinp: u32,   // offset of dinp[N,C,H,W] in acts
    dout: u32,   // offset of dout[N,OC,OH,OW] in acts
    weight: u32, // offset of weight[OC,C,K,K] in params (and of its gradient in grads); the
                 // `weights` window starts here, so it is a multiple of 64 (256 bytes)
    bias: u32,   // offset of bias[OC] in params / grads
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
// weight[OC,C,K,K] (and whatever follows it) as a 64 KiB uniform window: OC*C*K*K <= 16384.
@group(0) @binding(4) var<uniform> weights: array<vec4<f32>, 4096>;

// weight element i (relative to the tensor start)
fn wt(i: u32) -> f32 {
    return weights[i / 4u][i % 4u];
}

// Grid: x covers OH*OW output positions, y the blocks of OCB output channels, z the images.
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    let pos = gid.x;
    if (pos >= oh * ow) {
        return;
    }
    let y = pos / ow;
    let x = pos % ow;
    let b = wid.z;
    let o0 = wid.y * OCB;
    var acc: array<f32, MAX_BLOCK>;
    for (var j = 0u; j < OCB; j++) {
        if (o0 + j < p.oc) {
            acc[j] = params[p.bias + o0 + j];
        }
    }
    let kk = p.k * p.k;
    for (var c = 0u; c < p.c; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w + x;
            let wrow = (o0 * p.c + c) * kk + ky * p.k;
            for (var kx = 0u; kx < p.k; kx++) {
                let v = acts[irow + kx];
                for (var j = 0u; j < OCB; j++) {
                    if (o0 + j < p.oc) {
                        acc[j] += v * wt(wrow + j * p.c * kk + kx);
                    }
                }
            }
        }
    }
    for (var j = 0u; j < OCB; j++) {
        if (o0 + j < p.oc) {
            var s = acc[j];
            if (p.relu != 0u) {
                s = max(s, 0.0);
            }
            acts[p.out + ((b * p.oc + o0 + j) * oh) * ow + pos] = s;
        }
    }
}

// Grid: x covers H*W input positions, y the blocks of CB input channels, z the images.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let pos = gid.x;
    if (pos >= p.h * p.w) {
        return;
    }
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    let y = pos / p.w;
    let x = pos % p.w;
    let b = wid.z;
    let c0 = wid.y * CB;
    // Only kernel rows ky with 0 <= y-ky < OH contribute (likewise kx).
    let ky0 = select(0u, y + 1u - oh, y + 1u > oh);
    let ky1 = min(p.k, y + 1u);
    let kx0 = select(0u, x + 1u - ow, x + 1u > ow);
    let kx1 = min(p.k, x + 1u);
    let kk = p.k * p.k;
    var acc: array<f32, MAX_BLOCK>;
    for (var o = 0u; o < p.oc; o++) {
        for (var ky = 0u; ky < p.k; ky++) {
            // Rows and columns outside the output read 0 instead of branching per invocation.
            let row_ok = ky >= ky0 && ky < ky1;
            let drow = p.dout + ((b * p.oc + o) * oh + select(0u, y - ky, row_ok)) * ow;
            let wrow = (o * p.c + c0) * kk + ky * p.k;
            for (var kx = 0u; kx < p.k; kx++) {
                let ok = row_ok && kx >= kx0 && kx < kx1;
                let v = select(0.0, acts[drow + select(0u, x - kx, ok)], ok);
                for (var j = 0u; j < CB; j++) {
                    if (c0 + j < p.c) {
                        acc[j] += v * wt(wrow + j * kk + kx);
                    }
                }
            }
        }
    }
    for (var j = 0u; j < CB; j++) {
        if (c0 + j < p.c) {
            acts[p.dinp + (b * p.c + c0 + j) * p.h * p.w + pos] = acc[j];
        }
    }
}

// Grid: x covers the C*K*K weight positions, y the blocks of OCB output channels. Each
// invocation sums over every image and output position; dout is read at uniform addresses, and
// the bias gradient (the plain sum of dout) comes along for free, written by invocation 0.
@compute @workgroup_size(WG)
fn conv2d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let kk = p.k * p.k;
    let i = gid.x;
    let valid = i < p.c * kk;
    let ii = select(0u, i, valid);
    let c = ii / kk;
    let ky = (ii % kk) / p.k;
    let kx = ii % p.k;
    let o0 = wid.y * OCB;
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    var acc: array<f32, MAX_BLOCK>;
    var accb: array<f32, MAX_BLOCK>;
    for (var b = 0u; b < p.n; b++) {
        for (var y = 0u; y < oh; y++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w + kx;
            let drow = p.dout + ((b * p.oc + o0) * oh + y) * ow;
            for (var x = 0u; x < ow; x++) {
                let v = acts[irow + x];
                for (var j = 0u; j < OCB; j++) {
                    if (o0 + j < p.oc) {
                        let d = acts[drow + j * oh * ow + x];
                        acc[j] += d * v;
                        accb[j] += d;
                    }
                }
            }
        }
    }
    if (!valid) {
        return;
    }
    for (var j = 0u; j < OCB; j++) {
        if (o0 + j < p.oc) {
            grads[p.weight + (o0 + j) * p.c * kk + i] = acc[j];
            if (i == 0u) {
                grads[p.bias + o0 + j] = accb[j];
            }
        }
    }
}
