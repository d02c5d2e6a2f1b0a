// conv2d.wgsl: 2-D convolution, valid padding, stride 1, with the ReLU fused into the forward.
//   conv2d_forward:         out[N,OC,OH,OW] = relu?(bias[OC] + sum_{c,kh,kw} weight[OC,C,K,K] * inp[N,C,H,W])
//   conv2d_backward_input:  dinp[N,C,H,W] = sum_{oc,kh,kw} dout[N,OC,OH,OW] * weight[OC,C,K,K]
//   conv2d_backward_weight: dweight[OC,C,K,K] = sum_{n,oh,ow} dout * inp;  dbias[OC] = sum dout
// OH = H-K+1, OW = W-K+1. dout is the gradient after the ReLU mask (see maxpool_backward).
// Tensors live at offsets in three packed buffers: params/grads (weights) and acts.
//
// Speed (what matters on a software adapter such as lavapipe, and does not hurt a GPU):
// - every invocation keeps a tile of 4 columns x 8 channels in vec4 registers, indexed only
//   by constants (arrays indexed at run time spill to memory on lavapipe), and loads each
//   input once per tile and kernel row;
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
    window: u32, // offset in acts of the tensor `act_window` holds a copy of (SMALL_IN/_DOUT)
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
// weight[OC,C,K,K] (and whatever follows it) as a 64 KiB uniform window: OC*C*K*K <= 16384.
@group(0) @binding(4) var<uniform> weights: array<vec4<f32>, 4096>;

// SMALL_IN / SMALL_DOUT: inp / dout fit in 64 KiB and are read through `act_window`, a copy
// the step made just before (uniform loads: scalar or gathered, where a storage load loops over
// the SIMD lanes on lavapipe). At most one is set per pipeline.
override SMALL_IN: bool = false;
override SMALL_DOUT: bool = false;
@group(0) @binding(5) var<uniform> act_window: array<vec4<f32>, 4096>;

fn from_window(i: u32) -> f32 {
    let j = i - p.window;
    return act_window[j / 4u][j % 4u];
}

// acts[i] of inp
fn ld_in(i: u32) -> f32 {
    if (SMALL_IN) {
        return from_window(i);
    }
    return acts[i];
}

// acts[i] of dout
fn ld_dout(i: u32) -> f32 {
    if (SMALL_DOUT) {
        return from_window(i);
    }
    return acts[i];
}

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

// acc[2t], acc[2t+1]: channels 0-3 and 4-7 of tile column t. One tap of the kernel: the four
// tile columns' values `v` times the eight channels' weights `w`. Constant indices only, so
// the accumulators stay in registers.
fn taps(acc: ptr<function, array<vec4<f32>, 8>>, v: vec4<f32>, w: array<vec4<f32>, 2>) {
    (*acc)[0] += v.x * w[0];
    (*acc)[1] += v.x * w[1];
    (*acc)[2] += v.y * w[0];
    (*acc)[3] += v.y * w[1];
    (*acc)[4] += v.z * w[0];
    (*acc)[5] += v.z * w[1];
    (*acc)[6] += v.w * w[0];
    (*acc)[7] += v.w * w[1];
}

// The K (<= 5) taps of one kernel row: `lo`, `hi` hold the 8 values the 4 tile columns see
// through kx = 0..4 (column t, tap kx reads value t + kx), `wi` the weight of tap 0 of
// channel 0, `ws` the weight stride between channels.
fn row_taps(acc: ptr<function, array<vec4<f32>, 8>>, lo: vec4<f32>, hi: vec4<f32>, wi: u32, ws: u32) {
    taps(acc, lo, wt8(wi, ws));
    if (p.k > 1u) {
        taps(acc, vec4<f32>(lo.yzw, hi.x), wt8(wi + 1u, ws));
    }
    if (p.k > 2u) {
        taps(acc, vec4<f32>(lo.zw, hi.xy), wt8(wi + 2u, ws));
    }
    if (p.k > 3u) {
        taps(acc, vec4<f32>(lo.w, hi.xyz), wt8(wi + 3u, ws));
    }
    if (p.k > 4u) {
        taps(acc, hi, wt8(wi + 4u, ws));
    }
}

// Store tile column t (value v of 8 channels as v0, v1) at `base` + channel * stride, for the
// channels below `count` and if the column exists.
fn store8(base: u32, stride: u32, count: u32, ok: bool, v0: vec4<f32>, v1: vec4<f32>) {
    if (!ok) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (j < count) {
            acts[base + j * stride] = v0[j];
        }
        if (j + 4u < count) {
            acts[base + (j + 4u) * stride] = v1[j];
        }
    }
}

fn relu_if(v: vec4<f32>, on: bool) -> vec4<f32> {
    return select(v, max(v, vec4<f32>(0.0)), on);
}

// Grid: x covers the OH * ceil(OW/4) tiles of 4 output columns, y the blocks of 8 output
// channels, z the images. Per input channel and kernel row a tile loads 8 inputs for
// 4 x 8 x K multiply-adds.
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    let tw = (ow + 3u) / 4u;
    let tile = gid.x;
    if (tile >= oh * tw) {
        return;
    }
    let y = tile / tw;
    let x0 = (tile % tw) * 4u;
    let b = wid.z;
    let o0 = wid.y * BLOCK;
    let kk = p.k * p.k;
    let ws = p.c * kk; // weight stride between output channels
    let last = p.w - 1u;
    var acc: array<vec4<f32>, 8>;
    for (var c = 0u; c < p.c; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let irow = p.inp + ((b * p.c + c) * p.h + y + ky) * p.w;
            // Columns past the row (only reached by tile columns past OW) are clamped.
            let lo = vec4<f32>(ld_in(irow + min(x0, last)), ld_in(irow + min(x0 + 1u, last)), ld_in(irow + min(x0 + 2u, last)), ld_in(irow + min(x0 + 3u, last)));
            let hi = vec4<f32>(ld_in(irow + min(x0 + 4u, last)), ld_in(irow + min(x0 + 5u, last)), ld_in(irow + min(x0 + 6u, last)), ld_in(irow + min(x0 + 7u, last)));
            row_taps(&acc, lo, hi, (o0 * p.c + c) * kk + ky * p.k, ws);
        }
    }
    let count = min(BLOCK, p.oc - o0);
    // bias of the 8 channels (channels past OC read a clamped index and are not stored)
    let bl = p.bias + min(o0, p.oc - 1u);
    let bmax = p.bias + p.oc - 1u;
    let b0 = vec4<f32>(params[bl], params[min(bl + 1u, bmax)], params[min(bl + 2u, bmax)], params[min(bl + 3u, bmax)]);
    let b1 = vec4<f32>(params[min(bl + 4u, bmax)], params[min(bl + 5u, bmax)], params[min(bl + 6u, bmax)], params[min(bl + 7u, bmax)]);
    let on = p.relu != 0u;
    let base = p.out + ((b * p.oc + o0) * oh + y) * ow + x0;
    let st = oh * ow;
    store8(base, st, count, x0 < ow, relu_if(acc[0] + b0, on), relu_if(acc[1] + b1, on));
    store8(base + 1u, st, count, x0 + 1u < ow, relu_if(acc[2] + b0, on), relu_if(acc[3] + b1, on));
    store8(base + 2u, st, count, x0 + 2u < ow, relu_if(acc[4] + b0, on), relu_if(acc[5] + b1, on));
    store8(base + 3u, st, count, x0 + 3u < ow, relu_if(acc[6] + b0, on), relu_if(acc[7] + b1, on));
}

// dout[row + x] for 0 <= x < OW (x given as x + 4 to stay unsigned), else 0; and 0 for a row
// outside the output.
fn dout_or_0(row: u32, row_ok: bool, x4: u32, ow: u32) -> f32 {
    let ok = row_ok && x4 >= 4u && x4 - 4u < ow;
    return select(0.0, ld_dout(row + select(0u, x4 - 4u, ok)), ok);
}

// Grid: x covers the H * ceil(W/4) tiles of 4 input columns, y the blocks of 8 input channels,
// z the images. dinp[x] = sum_kx dout[x - kx] * w[kx]: per output channel and kernel row a
// tile loads the 8 gradients at columns x0-4 .. x0+3 for 4 x 8 x K multiply-adds.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tw = (p.w + 3u) / 4u;
    let tile = gid.x;
    if (tile >= p.h * tw) {
        return;
    }
    let oh = p.h - p.k + 1u;
    let ow = p.w - p.k + 1u;
    let y = tile / tw;
    let x0 = (tile % tw) * 4u;
    let b = wid.z;
    let c0 = wid.y * BLOCK;
    let kk = p.k * p.k;
    var acc: array<vec4<f32>, 8>;
    for (var o = 0u; o < p.oc; o++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let row_ok = y >= ky && y - ky < oh;
            let drow = p.dout + ((b * p.oc + o) * oh + select(0u, y - ky, row_ok)) * ow;
            // g[m] = dout column x0 - 4 + m, m = 0..7 (0 outside the output)
            let g0 = vec4<f32>(dout_or_0(drow, row_ok, x0, ow), dout_or_0(drow, row_ok, x0 + 1u, ow), dout_or_0(drow, row_ok, x0 + 2u, ow), dout_or_0(drow, row_ok, x0 + 3u, ow));
            let g1 = vec4<f32>(dout_or_0(drow, row_ok, x0 + 4u, ow), dout_or_0(drow, row_ok, x0 + 5u, ow), dout_or_0(drow, row_ok, x0 + 6u, ow), dout_or_0(drow, row_ok, x0 + 7u, ow));
            // tile column t, tap kx reads g[t - kx + 4]
            let wi = (o * p.c + c0) * kk + ky * p.k;
            taps(&acc, g1, wt8(wi, kk));
            if (p.k > 1u) {
                taps(&acc, vec4<f32>(g0.w, g1.xyz), wt8(wi + 1u, kk));
            }
            if (p.k > 2u) {
                taps(&acc, vec4<f32>(g0.zw, g1.xy), wt8(wi + 2u, kk));
            }
            if (p.k > 3u) {
                taps(&acc, vec4<f32>(g0.yzw, g1.x), wt8(wi + 3u, kk));
            }
            if (p.k > 4u) {
                taps(&acc, g0, wt8(wi + 4u, kk));
            }
        }
    }
    let count = min(BLOCK, p.c - c0);
    let base = p.dinp + ((b * p.c + c0) * p.h + y) * p.w + x0;
    let st = p.h * p.w;
    store8(base, st, count, x0 < p.w, acc[0], acc[1]);
    store8(base + 1u, st, count, x0 + 1u < p.w, acc[2], acc[3]);
    store8(base + 2u, st, count, x0 + 2u < p.w, acc[4], acc[5]);
    store8(base + 3u, st, count, x0 + 3u < p.w, acc[6], acc[7]);
}

// inp[row + x], the column clamped into the row (clamped reads only meet zero gradients)
fn in_at(row: u32, x: u32) -> f32 {
    return ld_in(row + min(x, p.w - 1u));
}

// dout[row + x] for x < OW, else 0
fn dout_at(row: u32, x: u32, ow: u32) -> f32 {
    return select(0.0, ld_dout(row + min(x, ow - 1u)), x < ow);
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
