// net_pool.wgsl: nn.MaxPool2d(K, S) and nn.AvgPool2d(K, S) (no padding, floor; windows
// overlap when S < K) and the global average pool. Forwards run one invocation per output;
// backwards one per input, gathering from the windows that hold it (no scatter, no atomics):
//   max_forward    out[N,C,OH,OW] = each window's maximum; arg (ints) = y*W + x of its first
//                  maximum in row-major order (PyTorch's tie rule), in the input's plane
//   max_backward   dinp = the sum of dout over the windows whose maximum it was
//   avg_forward    out = each window's mean;  avg_backward  dinp = sum of dout / (K K)
//   gap_forward    out[N,C] = the plane's mean;  gap_backward  dinp = dout / HW
// Backwards add into dinp when `accumulate` is set (the source has a gradient already).
//
// Shapes: inp, dinp [N,C,H,W] and out, dout [N,C,OH,OW] in acts; arg [N,C,OH,OW] in ints.

const WG: u32 = 256u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, s: u32, oh: u32, ow: u32,
    inp: u32, out: u32, dout: u32, dinp: u32, // acts
    arg: u32,                                 // ints
    accumulate: u32,
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> buffers: array<f32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn put(i: u32, v: f32) {
    if (p.accumulate == 1u) {
        acts[p.dinp + i] = acts[p.dinp + i] + v;
    } else {
        acts[p.dinp + i] = v;
    }
}

@compute @workgroup_size(WG)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = p.inp + (i / (p.ow * p.oh)) * p.h * p.w;
    var at = oy * p.s * p.w + ox * p.s;
    var best = acts[plane + at];
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let j = (oy * p.s + ky) * p.w + ox * p.s + kx;
            let v = acts[plane + j];
            if (v > best) {
                best = v;
                at = j;
            }
        }
    }
    acts[p.out + i] = best;
    ints[p.arg + i] = at;
}

// The outputs whose windows hold input row (or column) y: oy*S <= y < oy*S + K, oy < OH.
fn windows(y: u32, o: u32) -> vec2<u32> {
    var lo = 0u;
    if (y + 1u > p.k) {
        lo = (y + 1u - p.k + p.s - 1u) / p.s;
    }
    return vec2<u32>(lo, min(o, y / p.s + 1u));
}

@compute @workgroup_size(WG)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let plane = i / (p.w * p.h);
    let me = y * p.w + x;
    let ys = windows(y, p.oh);
    let xs = windows(x, p.ow);
    var s = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        for (var ox = xs.x; ox < xs.y; ox++) {
            let o = (plane * p.oh + oy) * p.ow + ox;
            if (ints[p.arg + o] == me) {
                s += acts[p.dout + o];
            }
        }
    }
    put(i, s);
}

@compute @workgroup_size(WG)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = p.inp + (i / (p.ow * p.oh)) * p.h * p.w;
    var s = 0.0;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            s += acts[plane + (oy * p.s + ky) * p.w + ox * p.s + kx];
        }
    }
    acts[p.out + i] = s / f32(p.k * p.k);
}

@compute @workgroup_size(WG)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let plane = i / (p.w * p.h);
    let ys = windows(y, p.oh);
    let xs = windows(x, p.ow);
    var s = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        for (var ox = xs.x; ox < xs.y; ox++) {
            s += acts[p.dout + (plane * p.oh + oy) * p.ow + ox] / f32(p.k * p.k);
        }
    }
    put(i, s);
}

@compute @workgroup_size(WG)
fn gap_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c) {
        return;
    }
    let hw = p.h * p.w;
    var s = 0.0;
    for (var j = 0u; j < hw; j++) {
        s += acts[p.inp + i * hw + j];
    }
    acts[p.out + i] = s / f32(hw);
}

@compute @workgroup_size(WG)
fn gap_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * p.c * hw) {
        return;
    }
    put(i, acts[p.dout + i / hw] / f32(hw));
}
