// net_norm.wgsl: batch norm (nn.BatchNorm2d on maps, BatchNorm1d on features: HW = 1) in
// training and evaluation, its statistics in a deterministic two-level reduction: each
// workgroup reduces one chunk of a channel's M = N*HW values in workgroup memory (a tree of
// fixed shape), then one invocation per channel combines the chunks in order. No atomics.
//   norm_partials   training: per (channel, chunk) its count, mean and sum of squared
//                   deviations from that mean (two passes over the chunk: no cancellation)
//   norm_combine    per channel: the batch mean and biased variance from the chunks (Chan's
//                   pairwise formula, chunk order), saved to scratch; the running statistics
//                   moved as PyTorch moves them (variance unbiased by M / (M - 1))
//   norm_apply      out = (inp - mean) / sqrt(var + eps) * gamma + beta, with the batch's
//                   statistics (training) or the running ones (evaluation)
//   norm_back_partials  per (channel, chunk): sum dout and sum dout * xhat
//   norm_back_combine   per channel: dgamma, dbeta of the whole batch (into grads and scratch)
//   norm_back_apply     dinp = gamma r / M (M dout - dbeta - xhat dgamma) (+= when accumulate)
//
// Shapes: inp, out, dout, dinp [N,C,HW] in acts; gamma, beta [C] in params (dgamma, dbeta in
// grads); running_mean, running_var [C] in buffers; scratch: the batch's mean[C], var[C], the
// gradient totals dgamma[C], dbeta[C], and partial[C, CHUNKS, 3].

const WG: u32 = 256u;

struct Params {
    n: u32, c: u32, hw: u32,
    chunks: u32,      // chunks per channel (workgroups in y of the partial kernels)
    inp: u32, out: u32, dout: u32, dinp: u32, // acts
    gamma: u32, beta: u32,                    // params; grads for the backward's totals
    running_mean: u32, running_var: u32,      // buffers
    mean: u32, var_: u32, dgamma: u32, dbeta: u32, partial: u32, // scratch
    eval: u32,        // norm_apply: 1 reads the running statistics
    accumulate: u32,  // norm_back_apply: 1 adds into dinp
    train_update: u32, // norm_combine: 1 moves the running statistics
    eps: f32,
    momentum: f32,
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> buffers: array<f32>;

var<workgroup> red: array<f32, WG>;
var<workgroup> red2: array<f32, WG>;

// The v-th of channel c's M values: (n, i) = (v / HW, v % HW).
fn at(base: u32, c: u32, v: u32) -> u32 {
    return base + ((v / p.hw) * p.c + c) * p.hw + v % p.hw;
}

// The chunk's values: [lo, hi) of the channel's M.
fn span(chunk: u32) -> vec2<u32> {
    let m = p.n * p.hw;
    let len = (m + p.chunks - 1u) / p.chunks;
    let lo = min(m, chunk * len);
    return vec2<u32>(lo, min(m, lo + len));
}

// The workgroup's sum of red[] (and red2[]), a tree of fixed shape; the result in [0].
fn reduce2(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
            red2[lid] += red2[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn norm_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let sp = span(wid.y);
    var s = 0.0;
    for (var v = sp.x + lid; v < sp.y; v += WG) {
        s += acts[at(p.inp, c, v)];
    }
    red[lid] = s;
    red2[lid] = 0.0;
    reduce2(lid);
    let count = f32(sp.y - sp.x);
    let mean = red[0] / max(count, 1.0);
    workgroupBarrier();
    var q = 0.0;
    for (var v = sp.x + lid; v < sp.y; v += WG) {
        let d = acts[at(p.inp, c, v)] - mean;
        q += d * d;
    }
    red[lid] = q;
    red2[lid] = 0.0;
    reduce2(lid);
    if (lid == 0u) {
        let o = p.partial + (c * p.chunks + wid.y) * 3u;
        scratch[o] = count;
        scratch[o + 1u] = mean;
        scratch[o + 2u] = red[0];
    }
}

@compute @workgroup_size(64)
fn norm_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let o = p.partial + (c * p.chunks + k) * 3u;
        let nb = scratch[o];
        if (nb == 0.0) {
            continue;
        }
        let delta = scratch[o + 1u] - mean;
        let total = n + nb;
        mean += delta * nb / total;
        m2 += scratch[o + 2u] + delta * delta * n * nb / total;
        n = total;
    }
    let var_ = m2 / max(n, 1.0);
    scratch[p.mean + c] = mean;
    scratch[p.var_ + c] = var_;
    if (p.train_update == 1u) {
        var unbias = 1.0;
        if (n > 1.0) {
            unbias = n / (n - 1.0);
        }
        buffers[p.running_mean + c] = (1.0 - p.momentum) * buffers[p.running_mean + c] + p.momentum * mean;
        buffers[p.running_var + c] = (1.0 - p.momentum) * buffers[p.running_var + c] + p.momentum * var_ * unbias;
    }
}

@compute @workgroup_size(WG)
fn norm_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.c * p.hw) {
        return;
    }
    let c = (i / p.hw) % p.c;
    var mean = scratch[p.mean + c];
    var var_ = scratch[p.var_ + c];
    if (p.eval == 1u) {
        mean = buffers[p.running_mean + c];
        var_ = buffers[p.running_var + c];
    }
    let k = params[p.gamma + c] / sqrt(var_ + p.eps);
    acts[p.out + i] = (acts[p.inp + i] - mean) * k + params[p.beta + c];
}

@compute @workgroup_size(WG)
fn norm_back_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let sp = span(wid.y);
    let mean = scratch[p.mean + c];
    let r = 1.0 / sqrt(scratch[p.var_ + c] + p.eps);
    var db = 0.0;
    var dg = 0.0;
    for (var v = sp.x + lid; v < sp.y; v += WG) {
        let g = acts[at(p.dout, c, v)];
        db += g;
        dg += g * (acts[at(p.inp, c, v)] - mean) * r;
    }
    red[lid] = db;
    red2[lid] = dg;
    reduce2(lid);
    if (lid == 0u) {
        let o = p.partial + (c * p.chunks + wid.y) * 3u;
        scratch[o] = red[0];
        scratch[o + 1u] = red2[0];
    }
}

@compute @workgroup_size(64)
fn norm_back_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    var db = 0.0;
    var dg = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let o = p.partial + (c * p.chunks + k) * 3u;
        db += scratch[o];
        dg += scratch[o + 1u];
    }
    scratch[p.dbeta + c] = db;
    scratch[p.dgamma + c] = dg;
    grads[p.beta + c] = db;
    grads[p.gamma + c] = dg;
}

@compute @workgroup_size(WG)
fn norm_back_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.c * p.hw) {
        return;
    }
    let c = (i / p.hw) % p.c;
    let m = f32(p.n * p.hw);
    let r = 1.0 / sqrt(scratch[p.var_ + c] + p.eps);
    let xhat = (acts[p.inp + i] - scratch[p.mean + c]) * r;
    let v = params[p.gamma + c] * r / m * (m * acts[p.dout + i] - scratch[p.dbeta + c] - xhat * scratch[p.dgamma + c]);
    if (p.accumulate == 1u) {
        acts[p.dinp + i] = acts[p.dinp + i] + v;
    } else {
        acts[p.dinp + i] = v;
    }
}
