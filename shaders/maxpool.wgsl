// maxpool.wgsl: 2x2 max pooling, stride 2 (OH = H/2, OW = W/2), keeping the argmax, and its
// backward fused with the ReLU backward of the layer before it.
//   maxpool_forward:  out[N,C,OH,OW] = max of the window of inp[N,C,H,W];
//                     argmax[N,C,OH,OW] = flat index in inp of the first maximum (PyTorch's rule)
//   maxpool_backward: dinp[N,C,H,W] = dout[N,C,OH,OW] where this element is its window's argmax
//                     and inp > 0 (the ReLU mask; inp is post-ReLU), else 0. Windows do not
//                     overlap, so each input is written by one invocation: no atomics.

const WG: u32 = 64u;

struct Params {
    n: u32, c: u32, h: u32, w: u32, // N, C, H, W of inp
    inp: u32,    // offset of inp[N,C,H,W] in acts
    out: u32,    // offset of out[N,C,OH,OW] in acts
    argmax: u32, // offset of argmax[N,C,OH,OW] in ints (indices relative to inp)
    dinp: u32,   // offset of dinp[N,C,H,W] in acts
    dout: u32,   // offset of dout[N,C,OH,OW] in acts
    _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;

@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    if (i >= p.n * p.c * oh * ow) {
        return;
    }
    let x = i % ow;
    let y = (i / ow) % oh;
    let bc = i / (ow * oh);
    let first = (bc * p.h + 2u * y) * p.w + 2u * x;
    var best = acts[p.inp + first];
    var arg = first;
    for (var d = 1u; d < 4u; d++) {
        let j = first + (d / 2u) * p.w + (d % 2u);
        let v = acts[p.inp + j];
        if (v > best) {
            best = v;
            arg = j;
        }
    }
    acts[p.out + i] = best;
    ints[p.argmax + i] = arg;
}

@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.c * p.h * p.w) {
        return;
    }
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let bc = i / (p.w * p.h);
    var g = 0.0;
    if (y / 2u < oh && x / 2u < ow) {
        let o = (bc * oh + y / 2u) * ow + x / 2u;
        if (ints[p.argmax + o] == i && acts[p.inp + i] > 0.0) {
            g = acts[p.dout + o];
        }
    }
    acts[p.dinp + i] = g;
}
