// conv_pool.wgsl: the conv layer of LeNet, conv2d (valid, stride 1) + ReLU + 2x2 max-pool of
// stride 2, forward and backward, as cpu::conv_pool_* computes it.
//   conv_pool_forward:         out[N,OC,OH,OW] = relu(bias[OC] + sum_{c,ky,kx} weight[OC,C,K,K] * inp[N,C,H,W]);
//                              pool[N,OC,PH,PW] = max of each 2x2 window of out;
//                              arg[N,OC,PH,PW] = oy*OW + ox of its first maximum, NONE where it is 0
//   conv_pool_backward_weight: dweight[OC,C,K,K] = sum_{n,window} dpool * inp at the window's arg;
//                              dbias[OC] = sum dpool where arg != NONE
//   conv_pool_backward_input:  dinp[N,C,H,W] = sum_{oc,window} dpool * weight at the window's arg
// OH = H-K+1, OW = W-K+1, PH = OH/2, PW = OW/2. The gradient of the conv output is dpool at
// the argmax of its window and 0 elsewhere (pool and ReLU backward), so the backward kernels
// read dpool and arg directly: a quarter of the conv output's positions carry a gradient, and
// only those are visited.
//
// Sizes are pipeline-overridable constants (one pipeline per layer), so the driver folds the
// index math and unrolls the K x K taps. Offsets into the packed buffers come in the uniform.
// Every sum runs in a fixed order (no atomics): the same inputs give the same bits.

const WG: u32 = 64u;       // conv_pool_forward, conv_pool_backward_input
const MAX_WG_R: u32 = 256u; // conv_pool_backward_weight: lanes of the workgroup that reduces one weight row
override WG_R: u32 = 256u;  // ... as launched: a power of two up to MAX_WG_R, fewer for a small batch
const MAX_K: u32 = 8u;     // K <= MAX_K (register arrays of the taps)
const MAX_B: u32 = 8u;     // OB, CB <= MAX_B channels per invocation
const W_TILE: u32 = 1600u; // floats of the workgroup's weight tile (6.4 KiB; with `red`, < 16 KiB)
const NONE: u32 = 0xffffffffu; // cpu::NO_ARG

override C: u32 = 6u;   // input channels
override H: u32 = 14u;  // input height
override W: u32 = 14u;  // input width
override OC: u32 = 16u; // output channels
override K: u32 = 5u;   // kernel size
// conv_pool_forward: output channels per invocation, and input channels per weight tile
// (OB * CC * K * K <= W_TILE); conv_pool_backward_input: input channels per invocation (OB)
// and output channels per weight tile (CC; OB * CC * K * K <= W_TILE).
override OB: u32 = 8u;
override CC: u32 = 8u;

// derived from the sizes above (the launch never sets them)
override OH: u32 = H - K + 1u;
override OW: u32 = W - K + 1u;
override PH: u32 = OH / 2u;
override PW: u32 = OW / 2u;
override KK: u32 = K * K;

struct Params {
    n: u32,      // N, batch size
    inp: u32,    // offset of inp[N,C,H,W] in acts
    out: u32,    // offset of out[N,OC,OH,OW] in acts (the post-ReLU conv output)
    pool: u32,   // offset of pool[N,OC,PH,PW] in acts
    arg: u32,    // offset of arg[N,OC,PH,PW] in ints
    dpool: u32,  // offset of dpool[N,OC,PH,PW] in acts
    dinp: u32,   // offset of dinp[N,C,H,W] in acts
    weight: u32, // offset of weight[OC,C,K,K] in params (and of its gradient in grads)
    bias: u32,   // offset of bias[OC] in params / grads
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> ints: array<u32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;

// The weight tile a workgroup shares: [OB][CC][K][K] (forward) or [CC][OB][K][K] (input
// gradient), zero past OC or C.
var<workgroup> w_tile: array<f32, W_TILE>;
// conv_pool_backward_weight: the K weight sums and the bias sum of each lane, then the tree.
var<workgroup> red: array<array<f32, MAX_WG_R>, 9>;

// weight[o, ci, t] (t = ky * K + kx), or 0 for a channel past OC or C.
fn weight_or_0(o: u32, ci: u32, t: u32) -> f32 {
    if (o >= OC || ci >= C) {
        return 0.0;
    }
    return params[p.weight + (o * C + ci) * KK + t];
}

// Grid: x covers the N x ceil(OH/2) x ceil(OW/2) cells of a pooling window (the odd last row
// or column of the conv output makes cells of 1 or 2 positions, written to out, not pooled),
// y the blocks of OB output channels. Each invocation keeps the 4 positions x OB channels of
// its cell in registers; per input channel and input row it loads the K+1 inputs its cell
// sees for 4 x 2 x K x OB multiply-adds, the weights from the workgroup's tile.
@compute @workgroup_size(WG)
fn conv_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let ch = (OH + 1u) / 2u;
    let cw = (OW + 1u) / 2u;
    let cell = gid.x;
    let valid = cell < p.n * ch * cw;
    let b = select(0u, cell / (ch * cw), valid);
    let cy = (cell / cw) % ch;
    let cx = cell % cw;
    let o0 = wid.y * OB;
    // acc[j]: channel o0 + j at positions (dy, dx) = (0,0), (0,1), (1,0), (1,1) as x, y, z, w
    var acc: array<vec4<f32>, MAX_B>;
    for (var c0 = 0u; c0 < C; c0 += CC) {
        workgroupBarrier();
        for (var i = lid; i < OB * CC * KK; i += WG) {
            w_tile[i] = weight_or_0(o0 + i / (CC * KK), c0 + (i / KK) % CC, i % KK);
        }
        workgroupBarrier();
        for (var cc = 0u; cc < CC; cc++) {
            if (c0 + cc >= C) {
                break;
            }
            // Rows 2cy .. 2cy+K of the input; rows and columns past the input (only cells of
            // the odd edge reach them) are clamped, and their results not stored.
            let plane = p.inp + (b * C + c0 + cc) * H * W;
            for (var r = 0u; r <= K; r++) {
                let row = plane + min(2u * cy + r, H - 1u) * W;
                var v: array<f32, 9>; // MAX_K + 1
                for (var t = 0u; t <= K; t++) {
                    v[t] = acts[row + min(2u * cx + t, W - 1u)];
                }
                for (var j = 0u; j < OB; j++) {
                    let wrow = (j * CC + cc) * KK;
                    for (var kx = 0u; kx < K; kx++) {
                        // input row r is kernel row r for output row 0 and r-1 for output row 1
                        if (r < K) {
                            let wv = w_tile[wrow + r * K + kx];
                            acc[j].x += v[kx] * wv;
                            acc[j].y += v[kx + 1u] * wv;
                        }
                        if (r > 0u) {
                            let wv = w_tile[wrow + (r - 1u) * K + kx];
                            acc[j].z += v[kx] * wv;
                            acc[j].w += v[kx + 1u] * wv;
                        }
                    }
                }
            }
        }
    }
    if (!valid) {
        return;
    }
    let oy = 2u * cy;
    let ox = 2u * cx;
    let pooled = cy < PH && cx < PW;
    for (var j = 0u; j < OB; j++) {
        let o = o0 + j;
        if (o >= OC) {
            break;
        }
        let v = max(acc[j] + params[p.bias + o], vec4<f32>(0.0));
        let base = p.out + ((b * OC + o) * OH + oy) * OW + ox;
        acts[base] = v.x;
        if (ox + 1u < OW) {
            acts[base + 1u] = v.y;
        }
        if (oy + 1u < OH) {
            acts[base + OW] = v.z;
            if (ox + 1u < OW) {
                acts[base + OW + 1u] = v.w;
            }
        }
        if (pooled) {
            // the first maximum in row-major order, as cpu::maxpool_forward
            var best = v.x;
            var at = oy * OW + ox;
            if (v.y > best) {
                best = v.y;
                at = oy * OW + ox + 1u;
            }
            if (v.z > best) {
                best = v.z;
                at = (oy + 1u) * OW + ox;
            }
            if (v.w > best) {
                best = v.w;
                at = (oy + 1u) * OW + ox + 1u;
            }
            let q = ((b * OC + o) * PH + cy) * PW + cx;
            acts[p.pool + q] = best;
            ints[p.arg + q] = select(NONE, at, best > 0.0);
        }
    }
}

// Grid: x covers the C x K rows (c, ky) of the weight gradient, y the output channels: one
// workgroup of WG_R lanes per row of K weights. The lanes split the N x PH x PW windows of
// channel o (lane l takes windows l, l + WG_R, ...); each window with a gradient adds dpool
// times the K inputs under its argmax. Then a tree over the lanes, in a fixed order. The
// bias gradient (the sum of dpool) comes along, stored by the workgroups of row (0, 0).
@compute @workgroup_size(WG_R)
fn conv_pool_backward_weight(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x / K;
    let ky = wid.x % K;
    let o = wid.y;
    var acc: array<f32, MAX_K>;
    var accb = 0.0;
    // (a conv output of one row or column has no window: max() keeps the division defined)
    let plane = max(PH * PW, 1u);
    let windows = p.n * PH * PW;
    for (var q = lid; q < windows; q += WG_R) {
        let b = q / plane;
        let at = (b * OC + o) * plane + q % plane;
        let a = ints[p.arg + at];
        if (a != NONE) {
            let g = acts[p.dpool + at];
            let row = p.inp + ((b * C + c) * H + a / OW + ky) * W + a % OW;
            for (var kx = 0u; kx < K; kx++) {
                acc[kx] += g * acts[row + kx];
            }
            accb += g;
        }
    }
    for (var kx = 0u; kx < K; kx++) {
        red[kx][lid] = acc[kx];
    }
    red[MAX_K][lid] = accb;
    workgroupBarrier();
    for (var s = WG_R / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var kx = 0u; kx < K; kx++) {
                red[kx][lid] += red[kx][lid + s];
            }
            red[MAX_K][lid] += red[MAX_K][lid + s];
        }
        workgroupBarrier();
    }
    if (lid < K) {
        grads[p.weight + (o * C + c) * KK + ky * K + lid] = red[lid][0];
    }
    if (lid == 0u && wid.x == 0u) {
        grads[p.bias + o] = red[MAX_K][0];
    }
}

// Grid: x covers the N x H x W input positions, y the blocks of OB input channels. Input
// (y, x) was seen by the conv outputs (y - ky, x - kx); of those only window argmaxes carry a
// gradient, so each invocation visits, per output channel, the <= 3 x 3 windows (K = 5) whose
// cells can reach it, and adds dpool times the weight of the tap that joined them. The
// weights come from the workgroup's tile of CC output channels x OB input channels.
@compute @workgroup_size(WG)
fn conv_pool_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let pos = gid.x;
    let valid = pos < p.n * H * W;
    let b = select(0u, pos / (H * W), valid);
    let y = (pos / W) % H;
    let x = pos % W;
    let c0 = wid.y * OB;
    // windows (wy, wx) whose conv outputs 2wy..2wy+1 can be y - ky for some 0 <= ky < K
    let wy0 = (max(y, K - 1u) - (K - 1u)) / 2u;
    let wy1 = min(y / 2u + 1u, PH);
    let wx0 = (max(x, K - 1u) - (K - 1u)) / 2u;
    let wx1 = min(x / 2u + 1u, PW);
    var acc: array<f32, MAX_B>;
    for (var o0 = 0u; o0 < OC; o0 += CC) {
        workgroupBarrier();
        for (var i = lid; i < CC * OB * KK; i += WG) {
            w_tile[i] = weight_or_0(o0 + i / (OB * KK), c0 + (i / KK) % OB, i % KK);
        }
        workgroupBarrier();
        for (var oc = 0u; oc < CC; oc++) {
            let o = o0 + oc;
            if (o >= OC) {
                break;
            }
            let plane = (b * OC + o) * PH * PW;
            for (var wy = wy0; wy < wy1; wy++) {
                for (var wx = wx0; wx < wx1; wx++) {
                    let at = plane + wy * PW + wx;
                    let a = ints[p.arg + at];
                    let ay = a / OW;
                    let ax = a % OW;
                    // a tap joins them when 0 <= y - ay < K and 0 <= x - ax < K (NONE fails)
                    if (a != NONE && y >= ay && y - ay < K && x >= ax && x - ax < K) {
                        let g = acts[p.dpool + at];
                        let t = (oc * OB) * KK + (y - ay) * K + (x - ax);
                        for (var j = 0u; j < OB; j++) {
                            acc[j] += g * w_tile[t + j * KK];
                        }
                    }
                }
            }
        }
    }
    if (!valid) {
        return;
    }
    for (var j = 0u; j < OB; j++) {
        if (c0 + j < C) {
            acts[p.dinp + ((b * C + c0 + j) * H + y) * W + x] = acc[j];
        }
    }
}
