// conv2d.wgsl: 2-D convolution, valid padding, stride 1, with the ReLU fused into the forward.
//   conv2d_forward:         out[N,OC,OH,OW] = relu?(bias[OC] + sum_{c,kh,kw} weight[OC,C,K,K] * inp[N,C,H,W])
//   conv2d_backward_input:  dinp[N,C,H,W] = sum_{oc,kh,kw} dout[N,OC,OH,OW] * weight[OC,C,K,K]
//   conv2d_backward_weight: dweight[OC,C,K,K] = sum_{n,oh,ow} dout * inp;  dbias[OC] = sum dout
// OH = H-K+1, OW = W-K+1. dout is the gradient after the ReLU mask (see maxpool_backward).
// Tensors live at offsets in three packed buffers: params/grads (weights) and acts.

const WG: u32 = 64u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,   // N, C, H, W of inp
    oc: u32, k: u32, relu: u32,       // OC, K, fused ReLU on the forward output (0/1)
    inp: u32,    // offset of inp[N,C,H,W] in acts
    out: u32,    // offset of out[N,OC,OH,OW] in acts
    dinp: u32,   // offset of dinp[N,C,H,W] in acts
    dout: u32,   // offset of dout[N,OC,OH,OW] in acts
    weight: u32, // offset of weight[OC,C,K,K] in params (and of its gradient in grads)
    bias: u32,   // offset of bias[OC] in params / grads
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    if (i >= p.n * p.oc * oh * ow) {
        return;
    }
    let x = i % ow;
    let y = (i / ow) % oh;
    let o = (i / (ow * oh)) % p.oc;
    let b = i / (ow * oh * p.oc);
    var s = params[p.bias + o];
    for (var c = 0u; c < p.c; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w + x;
            let wrow = p.weight + ((o * p.c + c) * p.k + ky) * p.k;
            for (var kx = 0u; kx < p.k; kx++) {
                s += params[wrow + kx] * acts[irow + kx];
            }
        }
    }
    if (p.relu != 0u) {
        s = max(s, 0.0);
    }
    acts[p.out + i] = s;
}

@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let c = (i / (p.w * p.h)) % p.c;
    let b = i / (p.w * p.h * p.c);
    // Only kernel rows ky with 0 <= y-ky < OH contribute (likewise kx).
    let ky0 = select(0u, y + 1u - oh, y + 1u > oh);
    let ky1 = min(p.k, y + 1u);
    let kx0 = select(0u, x + 1u - ow, x + 1u > ow);
    let kx1 = min(p.k, x + 1u);
    var s = 0.0;
    for (var o = 0u; o < p.oc; o++) {
        for (var ky = ky0; ky < ky1; ky++) {
            let drow = p.dout + ((b * p.oc + o) * oh + y - ky) * ow + x;
            let wrow = p.weight + ((o * p.c + c) * p.k + ky) * p.k;
            for (var kx = kx0; kx < kx1; kx++) {
                s += acts[drow - kx] * params[wrow + kx];
            }
        }
    }
    acts[p.dinp + i] = s;
}

@compute @workgroup_size(WG)
fn conv2d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let nw = p.oc * p.c * p.k * p.k;
    if (i >= nw + p.oc) {
        return;
    }
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    if (i >= nw) {
        // dbias[o] = sum over n, oh, ow of dout
        let o = i - nw;
        var sb = 0.0;
        for (var b = 0u; b < p.n; b++) {
            let base = p.dout + (b * p.oc + o) * oh * ow;
            for (var j = 0u; j < oh * ow; j++) {
                sb += acts[base + j];
            }
        }
        grads[p.bias + o] = sb;
        return;
    }
    let kx = i % p.k;
    let ky = (i / p.k) % p.k;
    let c = (i / (p.k * p.k)) % p.c;
    let o = i / (p.k * p.k * p.c);
    var s = 0.0;
    for (var b = 0u; b < p.n; b++) {
        for (var y = 0u; y < oh; y++) {
            let drow = p.dout + ((b * p.oc + o) * oh + y) * ow;
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w + kx;
            for (var x = 0u; x < ow; x++) {
                s += acts[drow + x] * acts[irow + x];
            }
        }
    }
    grads[p.weight + i] = s;
}
