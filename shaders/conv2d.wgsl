// conv2d.wgsl: 2-D convolution, valid padding, stride 1, with the ReLU fused into the forward.
//   conv2d_forward:         out[N,OC,OH,OW] = relu?(bias[OC] + sum_{c,kh,kw} weight[OC,C,K,K] * inp[N,C,H,W])
//   conv2d_backward_input:  dinp[N,C,H,W] = sum_{oc,kh,kw} dout[N,OC,OH,OW] * weight[OC,C,K,K]
//   conv2d_backward_weight: dweight[OC,C,K,K] = sum_{n,oh,ow} dout * inp;  dbias[OC] = sum dout
// OH = H-K+1, OW = W-K+1. dout is the gradient after the ReLU mask (see maxpool_backward).
// Tensors live at offsets in three packed buffers: params/grads (weights) and acts.
//
// Speed (what matters on a software adapter such as lavapipe, and does not hurt a GPU):
// - every invocation keeps a block of 8 channels in two vec4 registers, never in an indexed
//   array (indexed private arrays spill to memory on lavapipe);
// - the block, the image and the channel come from workgroup_id, so weight addresses are the
//   same for the whole workgroup, and the weights are read through a uniform binding (a 64 KiB
//   window of the parameter buffer starting at the layer's weight tensor): a uniform load at a
//   uniform address is one scalar load, where a storage load loops over the SIMD lanes.
// Channels past OC (or C) in the last block compute on neighbouring weights and are not stored.

const WG: u32 = 64u;
const WG_W: u32 = 16u; // conv2d_backward_weight: few, long-running invocations
const BLOCK: u32 = 8u; // channels per invocation (forward: output, backward_input: input)

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

// weight element i (relative to the tensor start); past the window reads the last element
fn wt(i: u32) -> f32 {
    let j = min(i, 16383u);
    return weights[j / 4u][j % 4u];
}

// Weights i, i+s, ..., i+7s as two vec4s: one weight for each channel of a block.
fn wt8(i: u32, s: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(wt(i), wt(i + s), wt(i + 2u * s), wt(i + 3u * s)),
        vec4<f32>(wt(i + 4u * s), wt(i + 5u * s), wt(i + 6u * s), wt(i + 7u * s)));
}

// Grid: x covers OH*OW output positions, y the blocks of 8 output channels, z the images.
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
    let o0 = wid.y * BLOCK;
    let kk = p.k * p.k;
    let ws = p.c * kk; // weight stride between output channels
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    for (var c = 0u; c < p.c; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w + x;
            let wrow = (o0 * p.c + c) * kk + ky * p.k;
            for (var kx = 0u; kx < p.k; kx++) {
                let v = acts[irow + kx];
                let wv = wt8(wrow + kx, ws);
                a0 += v * wv[0];
                a1 += v * wv[1];
            }
        }
    }
    let base = p.out + (b * p.oc + o0) * oh * ow + pos;
    let acc = array<vec4<f32>, 2>(a0, a1);
    for (var j = 0u; j < BLOCK; j++) {
        if (o0 + j < p.oc) {
            var s = acc[j / 4u][j % 4u] + params[p.bias + o0 + j];
            if (p.relu != 0u) {
                s = max(s, 0.0);
            }
            acts[base + j * oh * ow] = s;
        }
    }
}

// Grid: x covers H*W input positions, y the blocks of 8 input channels, z the images.
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
    let c0 = wid.y * BLOCK;
    // Only kernel rows ky with 0 <= y-ky < OH contribute (likewise kx).
    let ky0 = select(0u, y + 1u - oh, y + 1u > oh);
    let ky1 = min(p.k, y + 1u);
    let kx0 = select(0u, x + 1u - ow, x + 1u > ow);
    let kx1 = min(p.k, x + 1u);
    let kk = p.k * p.k;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    for (var o = 0u; o < p.oc; o++) {
        for (var ky = 0u; ky < p.k; ky++) {
            // Rows and columns outside the output read 0 instead of branching per invocation.
            let row_ok = ky >= ky0 && ky < ky1;
            let drow = p.dout + ((b * p.oc + o) * oh + select(0u, y - ky, row_ok)) * ow;
            let wrow = (o * p.c + c0) * kk + ky * p.k;
            for (var kx = 0u; kx < p.k; kx++) {
                let ok = row_ok && kx >= kx0 && kx < kx1;
                let v = select(0.0, acts[drow + select(0u, x - kx, ok)], ok);
                let wv = wt8(wrow + kx, kk);
                a0 += v * wv[0];
                a1 += v * wv[1];
            }
        }
    }
    let acc = array<vec4<f32>, 2>(a0, a1);
    let base = p.dinp + (b * p.c + c0) * p.h * p.w + pos;
    for (var j = 0u; j < BLOCK; j++) {
        if (c0 + j < p.c) {
            acts[base + j * p.h * p.w] = acc[j / 4u][j % 4u];
        }
    }
}

// inp[row + x], the column clamped into the row (clamped reads only meet zero gradients)
fn in_at(row: u32, x: u32) -> f32 {
    return acts[row + min(x, p.w - 1u)];
}

// dout[row + x] for x < OW, else 0
fn dout_at(row: u32, x: u32, ow: u32) -> f32 {
    return select(0.0, acts[row + min(x, ow - 1u)], x < ow);
}

// Grid: x covers the C*K lanes (c, ky), y the pairs of output channels. Each invocation keeps
// the 2 x K (<= 5) weight gradients (o, c, ky, 0..K) of its pair in registers and walks every
// image and output row in tiles of 4 columns: per tile it loads 8 inputs and 4 gradients per
// channel for 40 multiply-adds (dot products of the gradient tile with the 5 shifted input
// tiles). The bias gradient (the plain sum of dout) comes along, written by invocation 0.
@compute @workgroup_size(WG_W)
fn conv2d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = gid.x;
    let valid = lane < p.c * p.k;
    let l = select(0u, lane, valid);
    let c = l / p.k;
    let ky = l % p.k;
    let o0 = wid.y * 2u;
    let has1 = o0 + 1u < p.oc;
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    // channel o0: kx 0..3 in g0, kx 4 in e0; channel o0+1 likewise; biases in bsum
    var g0 = vec4<f32>(0.0);
    var e0 = 0.0;
    var g1 = vec4<f32>(0.0);
    var e1 = 0.0;
    var bsum = vec2<f32>(0.0);
    for (var b = 0u; b < p.n; b++) {
        for (var y = 0u; y < oh; y++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w;
            let drow0 = p.dout + ((b * p.oc + o0) * oh + y) * ow;
            let drow1 = select(drow0, drow0 + oh * ow, has1);
            for (var x0 = 0u; x0 < ow; x0 += 4u) {
                let r0 = vec4<f32>(in_at(irow, x0), in_at(irow, x0 + 1u), in_at(irow, x0 + 2u), in_at(irow, x0 + 3u));
                let r1 = vec4<f32>(in_at(irow, x0 + 4u), in_at(irow, x0 + 5u), in_at(irow, x0 + 6u), in_at(irow, x0 + 7u));
                // the input tile shifted by kx = 1..4
                let s1 = vec4<f32>(r0.yzw, r1.x);
                let s2 = vec4<f32>(r0.zw, r1.xy);
                let s3 = vec4<f32>(r0.w, r1.xyz);
                let d0 = vec4<f32>(dout_at(drow0, x0, ow), dout_at(drow0, x0 + 1u, ow), dout_at(drow0, x0 + 2u, ow), dout_at(drow0, x0 + 3u, ow));
                g0 += vec4<f32>(dot(d0, r0), dot(d0, s1), dot(d0, s2), dot(d0, s3));
                e0 += dot(d0, r1);
                var d1 = vec4<f32>(0.0);
                if (has1) {
                    d1 = vec4<f32>(dout_at(drow1, x0, ow), dout_at(drow1, x0 + 1u, ow), dout_at(drow1, x0 + 2u, ow), dout_at(drow1, x0 + 3u, ow));
                }
                g1 += vec4<f32>(dot(d1, r0), dot(d1, s1), dot(d1, s2), dot(d1, s3));
                e1 += dot(d1, r1);
                bsum += vec2<f32>(d0.x + d0.y + d0.z + d0.w, d1.x + d1.y + d1.z + d1.w);
            }
        }
    }
    if (!valid) {
        return;
    }
    let kk = p.k * p.k;
    let w0 = p.weight + (o0 * p.c + c) * kk + ky * p.k;
    let w1 = w0 + p.c * kk;
    for (var kx = 0u; kx < p.k; kx++) {
        grads[w0 + kx] = select(e0, g0[min(kx, 3u)], kx < 4u);
        if (has1) {
            grads[w1 + kx] = select(e1, g1[min(kx, 3u)], kx < 4u);
        }
    }
    if (lane == 0u) {
        grads[p.bias + o0] = bsum.x;
        if (has1) {
            grads[p.bias + o0 + 1u] = bsum.y;
        }
    }
}
