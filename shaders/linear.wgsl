// linear.wgsl: the fully connected layers (matmul + bias), PyTorch's weight layout [OUT,IN].
//   linear_forward:         out[N,OUT] = relu?(inp[N,IN] . weight[OUT,IN]^T + bias[OUT])
//   linear_backward_input:  dinp[N,IN] = (dout[N,OUT] . weight[OUT,IN]) * (inp > 0 if inp_relu)
//                           (the ReLU backward of the previous layer, fused)
//   linear_backward_weight: dweight[OUT,IN] = dout^T . inp;  dbias[OUT] = sum_n dout

const WG: u32 = 64u;

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
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(WG)
fn linear_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.out_f) {
        return;
    }
    let o = i % p.out_f;
    let b = i / p.out_f;
    var s = params[p.bias + o];
    let x = p.inp + b * p.in_f;
    let w = p.weight + o * p.in_f;
    for (var j = 0u; j < p.in_f; j++) {
        s += acts[x + j] * params[w + j];
    }
    if (p.relu != 0u) {
        s = max(s, 0.0);
    }
    acts[p.out + i] = s;
}

@compute @workgroup_size(WG)
fn linear_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.in_f) {
        return;
    }
    let j = i % p.in_f;
    let b = i / p.in_f;
    var s = 0.0;
    if (p.inp_relu == 0u || acts[p.inp + i] > 0.0) {
        for (var o = 0u; o < p.out_f; o++) {
            s += acts[p.dout + b * p.out_f + o] * params[p.weight + o * p.in_f + j];
        }
    }
    acts[p.dinp + i] = s;
}

@compute @workgroup_size(WG)
fn linear_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let nw = p.out_f * p.in_f;
    if (i >= nw + p.out_f) {
        return;
    }
    if (i >= nw) {
        let o = i - nw;
        var sb = 0.0;
        for (var b = 0u; b < p.n; b++) {
            sb += acts[p.dout + b * p.out_f + o];
        }
        grads[p.bias + o] = sb;
        return;
    }
    let j = i % p.in_f;
    let o = i / p.in_f;
    var s = 0.0;
    for (var b = 0u; b < p.n; b++) {
        s += acts[p.dout + b * p.out_f + o] * acts[p.inp + b * p.in_f + j];
    }
    grads[p.weight + i] = s;
}
