// maxpool.wgsl: 2x2 max pooling, stride 2 (OH = H/2, OW = W/2), keeping the argmax, and its
// backward fused with the ReLU backward of the layer before it.
//   maxpool_forward:  out[N,C,OH,OW] = max of the window of inp[N,C,H,W];
//                     argmax[N,C,OH,OW] = flat index in inp of the first maximum (PyTorch's rule)
//   maxpool_backward: dinp[N,C,H,W] = dout[N,C,OH,OW] where this element is its window's argmax
//                     and inp > 0 (the ReLU mask; inp is post-ReLU), else 0. Windows do not
//                     overlap, so each input is written by one invocation: no atomics.
// H and W are at least 2.

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

// One invocation per pooled output: it writes the whole 2x2 window of dinp (the gradient at
// the argmax, zeros elsewhere), and the odd last row / column when H or W is odd. The ReLU
// mask inp[argmax] > 0 is read as out > 0 (out is that same value).
@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    let oh = p.h / 2u;
    let ow = p.w / 2u;
    if (o >= p.n * p.c * oh * ow) {
        return;
    }
    let ox = o % ow;
    let oy = (o / ow) % oh;
    let bc = o / (ow * oh);
    let first = (bc * p.h + 2u * oy) * p.w + 2u * ox;
    let arg = ints[p.argmax + o];
    let g = select(0.0, acts[p.dout + o], acts[p.out + o] > 0.0);
    acts[p.dinp + first] = select(0.0, g, arg == first);
    acts[p.dinp + first + 1u] = select(0.0, g, arg == first + 1u);
    acts[p.dinp + first + p.w] = select(0.0, g, arg == first + p.w);
    acts[p.dinp + first + p.w + 1u] = select(0.0, g, arg == first + p.w + 1u);
    // Inputs no window covers (the last column / row of an odd W / H) get no gradient.
    let odd_w = p.w % 2u == 1u && ox == ow - 1u;
    let odd_h = p.h % 2u == 1u && oy == oh - 1u;
    if (odd_w) {
        acts[p.dinp + first + 2u] = 0.0;
        acts[p.dinp + first + p.w + 2u] = 0.0;
    }
    if (odd_h) {
        acts[p.dinp + first + 2u * p.w] = 0.0;
        acts[p.dinp + first + 2u * p.w + 1u] = 0.0;
        if (odd_w) {
            acts[p.dinp + first + 2u * p.w + 2u] = 0.0;
        }
    }
}
