// linear.wgsl: the fully connected layers (matmul + bias), PyTorch's weight layout [OUT,IN].
//   linear_forward:         out[N,OUT] = relu?(inp[N,IN] . weight[OUT,IN]^T + bias[OUT])
//   linear_backward_input:  dinp[N,IN] = (dout[N,OUT] . weight[OUT,IN]) * (inp > 0 if inp_relu)
//                           (the ReLU backward of the previous layer, fused)
//   linear_backward_weight: dweight[OUT,IN] = dout^T . inp;  dbias[OUT] = sum_n dout
//
// Speed: each invocation accumulates NB batch rows (or OB output features); the block comes
// from workgroup_id so the activations of the block are read at uniform addresses and each
// per-invocation weight load feeds NB multiply-adds. NB and OB are pipeline-overridable.
// Where the compiler does not unroll the block loops (lavapipe, behind wgpu's loop bounding),
// `acc` stays in memory; BENCHMARKS.md says what that costs and what was tried.

const WG: u32 = 64u;
const MAX_BLOCK: u32 = 16u;

override NB: u32 = 4u; // batch rows per invocation (forward, backward_input)
override OB: u32 = 8u; // output features per invocation (backward_weight)
// SMALL: the activations every invocation of a workgroup reads alike (inp in the forward, dout
// in the backward) fit in 64 KiB and are read through the uniform `window`, a copy the step
// made just before: one scalar load each on lavapipe, where a storage load loops over the
// SIMD lanes. Set per pipeline.
override SMALL: bool = false;

struct Params {
    n: u32, in_f: u32, out_f: u32, // N, IN, OUT
    relu: u32,     // fused ReLU on the forward output (0/1)
    inp_relu: u32, // inp is a post-ReLU activation: mask dinp by inp > 0 (0/1)
    inp: u32,      // offset of inp[N,IN] in acts
    out: u32,      // offset of out[N,OUT] in acts
    dinp: u32,     // offset of dinp[N,IN] in acts
    dout: u32,     // offset of dout[N,OUT] in acts
    weight: u32,   // offset of weight[OUT,IN] in params / grads
    bias: u32,     // offset of bias[OUT] in params / grads
    window: u32,   // offset in acts of the tensor `window` holds a copy of (SMALL)
    _pad0: u32, _pad1: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
// A copy of acts[p.window ..] (up to 64 KiB), read only when SMALL.
@group(0) @binding(4) var<uniform> window: array<vec4<f32>, 4096>;

// acts[i] for an index shared by the workgroup: from the window copy when SMALL.
fn act(i: u32) -> f32 {
    if (SMALL) {
        let j = i - p.window;
        return window[j / 4u][j % 4u];
    }
    return acts[i];
}

// Grid: x covers OUT, y the blocks of NB batch rows.
@compute @workgroup_size(WG)
fn linear_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let o = gid.x;
    if (o >= p.out_f) {
        return;
    }
    let b0 = wid.y * NB;
    var acc: array<f32, MAX_BLOCK>;
    let w = p.weight + o * p.in_f;
    for (var j = 0u; j < p.in_f; j++) {
        let wv = params[w + j];
        for (var r = 0u; r < NB; r++) {
            if (b0 + r < p.n) {
                acc[r] += act(p.inp + (b0 + r) * p.in_f + j) * wv;
            }
        }
    }
    let bias = params[p.bias + o];
    for (var r = 0u; r < NB; r++) {
        if (b0 + r < p.n) {
            var s = acc[r] + bias;
            if (p.relu != 0u) {
                s = max(s, 0.0);
            }
            acts[p.out + (b0 + r) * p.out_f + o] = s;
        }
    }
}

// Grid: x covers IN, y the blocks of NB batch rows.
@compute @workgroup_size(WG)
fn linear_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.in_f) {
        return;
    }
    let b0 = wid.y * NB;
    var acc: array<f32, MAX_BLOCK>;
    for (var o = 0u; o < p.out_f; o++) {
        let wv = params[p.weight + o * p.in_f + j];
        for (var r = 0u; r < NB; r++) {
            if (b0 + r < p.n) {
                acc[r] += act(p.dout + (b0 + r) * p.out_f + o) * wv;
            }
        }
    }
    for (var r = 0u; r < NB; r++) {
        if (b0 + r < p.n) {
            let i = (b0 + r) * p.in_f + j;
            acts[p.dinp + i] = select(acc[r], 0.0, p.inp_relu != 0u && acts[p.inp + i] <= 0.0);
        }
    }
}

// Grid: x covers IN, y the blocks of OB output features. dbias comes along (sum of dout at
// uniform addresses), written by the invocation with j == 0.
@compute @workgroup_size(WG)
fn linear_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let j = gid.x;
    let o0 = wid.y * OB;
    let valid = j < p.in_f;
    let jj = select(0u, j, valid);
    var acc: array<f32, MAX_BLOCK>;
    var accb: array<f32, MAX_BLOCK>;
    for (var b = 0u; b < p.n; b++) {
        let v = acts[p.inp + b * p.in_f + jj];
        for (var q = 0u; q < OB; q++) {
            if (o0 + q < p.out_f) {
                let d = act(p.dout + b * p.out_f + o0 + q);
                acc[q] += d * v;
                accb[q] += d;
            }
        }
    }
    if (!valid) {
        return;
    }
    for (var q = 0u; q < OB; q++) {
        if (o0 + q < p.out_f) {
            grads[p.weight + (o0 + q) * p.in_f + j] = acc[q];
            if (j == 0u) {
                grads[p.bias + o0 + q] = accb[q];
            }
        }
    }
}
