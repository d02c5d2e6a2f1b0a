// net_elementwise.wgsl: the layers that read one value to write one, one invocation per
// element of [N * L], OP picking the layer:
//   0 act_forward     out = act(inp): ReLU, GELU (nn.GELU's erf form), tanh, sigmoid (ACT)
//   1 act_backward    dinp = dout * act'(inp)
//   2 dropout         out = inp / (1 - q) where kept, else 0 (its backward is the same map
//                     of dout): kept when the 24-bit draw of mix(seed ^ mix(i)) is >= q, the
//                     CPU's `dropout_keeps` bit for bit. In a step, seed is the CPU engine's
//                     for the step in ints[step_word] and this layer: mix(mix(run ^
//                     mix(step ^ 0x5eed)) ^ layer), `layer` being mix(0x9e3779b9 ^ i)
//   3 scale           out = inp * q (its backward too)
//   4 add             out = inp + other (a residual block's sum)
//   5 copy            out = inp (flatten; a block's and an identity's backward)
// A backward adds into its output when `accumulate` is set (the source has a gradient
// already). Offsets in floats of acts.

const WG: u32 = 256u;

struct Params {
    len: u32,        // N * L
    op: u32,
    act: u32,        // 0 ReLU, 1 GELU, 2 tanh, 3 sigmoid
    inp: u32,        // act_backward: the layer's input
    other: u32,      // add: the body's output; act_backward: dout
    out: u32,        // or dinp
    accumulate: u32,
    seed: u32,       // dropout: the run's seed (or, without step_word, the mask's own)
    q: f32,          // dropout's probability, or the scale
    step_word: u32,  // dropout: ints[step_word] holds the step (0xffffffff: none)
    layer: u32,      // dropout: mix(0x9e3779b9 ^ the layer's step index)
    keep: f32,       // dropout: 1 / (1 - q), rounded on the CPU as its engine rounds it
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> buffers: array<f32>;

// lowbias32, as cpu::reference::elementwise::mix.
fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// erfc(a) for a >= 0 (Abramowitz & Stegun 7.1.26, relative error < 1.5e-7 / erf's absolute
// error); WGSL has no erf.
fn erfc_pos(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * a);
    return (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
}

// GELU's Phi(x) = (1 + erf(x / sqrt 2)) / 2, from erfc on both sides so the left tail keeps
// its relative accuracy (1 + erf would cancel there).
fn phi(x: f32) -> f32 {
    let q = 0.5 * erfc_pos(abs(x) * 0.70710678118654752);
    return select(1.0 - q, q, x < 0.0);
}

fn act(x: f32) -> f32 {
    switch p.act {
        case 0u: { return max(x, 0.0); }
        case 1u: { return x * phi(x); }
        // (clamped: some drivers compute tanh as a ratio of exponentials that overflow; the
        // result is the same in f32)
        case 2u: { return tanh(clamp(x, -15.0, 15.0)); }
        default: { return 1.0 / (1.0 + exp(-x)); }
    }
}

// act'(x): ReLU's is 0 at 0 (PyTorch's); GELU's Phi(x) + x e^(-x^2/2) / sqrt(2 pi).
fn slope(x: f32) -> f32 {
    switch p.act {
        case 0u: { return select(0.0, 1.0, x > 0.0); }
        case 1u: { return phi(x) + x * exp(-0.5 * x * x) * 0.39894228040143268; }
        case 2u: { let t = tanh(clamp(x, -15.0, 15.0)); return 1.0 - t * t; }
        default: { let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 - s); }
    }
}

@compute @workgroup_size(WG)
fn elementwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.len) {
        return;
    }
    let x = acts[p.inp + i];
    var v = x;
    switch p.op {
        case 0u: { v = act(x); }
        case 1u: { v = acts[p.other + i] * slope(x); }
        case 2u: {
            var seed = p.seed;
            if (p.step_word != 0xffffffffu) {
                seed = mix(mix(p.seed ^ mix(ints[p.step_word] ^ 0x5eedu)) ^ p.layer);
            }
            let u = f32(mix(seed ^ mix(i)) >> 8u) * (1.0 / 16777216.0);
            v = select(0.0, x * p.keep, u >= p.q && p.q < 1.0);
        }
        case 3u: { v = x * p.q; }
        case 4u: { v = x + acts[p.other + i]; }
        default: {}
    }
    if (p.accumulate == 1u) {
        acts[p.out + i] = acts[p.out + i] + v;
    } else {
        acts[p.out + i] = v;
    }
}
