// net_gemm.wgsl: a convolution of any kernel, stride and zero padding, and a linear layer (a
// 1x1 convolution of a 1x1 map), as tiled implicit matrix products: no im2col is stored; each
// workgroup loads a TK-deep slice of its A and B tiles into workgroup memory, the im2col
// indices computed as it loads. MODE picks the product:
//   0 forward         out[OC, (n,oy,ox)]   = weight[OC, (c,ky,kx)] . inp_col + bias[OC]
//   1 backward input  dinp[C, (n,y,x)]     = weight^T[C, (o,ky,kx)] . dout gathered where the
//                                            tap (y + P - ky) / S lands on an output (+= when
//                                            `accumulate`: the source has a gradient already)
//   2 backward weight partial[z, OC, CKK+1] = dout[OC, r] . inp_col^T[r, (c,ky,kx) | 1] over
//                                            the z-th chunk of r = (n,oy,ox); column CKK is the
//                                            bias's (a column of ones). Split-K: weight_reduce
//                                            adds the chunks in order (no float atomics).
// Each invocation owns a 4x4 block of the 64x64 tile, rows and columns strided by 16 (the
// loads and stores of a row of lanes touch consecutive addresses), and sums its products in
// k order: the result depends on the inputs only.
//
// Shapes: inp[N,C,H,W], weight[OC,C,K,K], bias[OC], out / dout[N,OC,OH,OW], dinp[N,C,H,W],
// OH = (H + 2P - K) / S + 1. Offsets are in floats: acts for activations, params for weights,
// grads for gradients, scratch for the partials.

const TM: u32 = 64u;  // rows of the tile
const TN: u32 = 64u;  // columns of the tile
const TK: u32 = 16u;  // depth of a slice
const WG: u32 = 256u; // 16 x 16 invocations
const NONE: u32 = 0xffffffffu;

override MODE: u32 = 0u;

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    oc: u32, k: u32, s: u32, p: u32,
    oh: u32, ow: u32,
    inp: u32,        // acts: inp[N,C,H,W]
    out: u32,        // acts: out[N,OC,OH,OW] (forward), dout (backward)
    dinp: u32,       // acts: dinp[N,C,H,W] (backward input)
    weight: u32,     // params: weight[OC,C,K,K]
    bias: u32,       // params (forward) / grads (reduce): bias[OC], or NONE
    accumulate: u32, // backward input: 1 adds into dinp
    chunk: u32,      // backward weight: the reduction's columns per chunk (grid z)
    partial: u32,    // scratch: partial[Z, OC, CKK+1]
    dweight: u32,    // grads: dweight[OC,C,K,K] (weight_reduce)
    split: u32,      // weight_reduce: Z, the chunks
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> buffers: array<f32>;

var<workgroup> a_tile: array<f32, 1024>; // [TK][TM]
var<workgroup> b_tile: array<f32, 1024>; // [TK][TN]

// The product's sizes: rows M, columns N, depth K.
fn dims() -> vec3<u32> {
    let ckk = p.c * p.k * p.k;
    let r = p.n * p.oh * p.ow;
    if (MODE == 0u) {
        return vec3<u32>(p.oc, r, ckk);
    }
    if (MODE == 1u) {
        return vec3<u32>(p.c, p.n * p.h * p.w, p.oc * p.k * p.k);
    }
    return vec3<u32>(p.oc, ckk + 1u, p.chunk);
}

// inp[n, c, oy*S + ky - P, ox*S + kx - P], 0 in the padding: im2col's (row k, column j) with
// k = (c, ky, kx) and j = (n, oy, ox).
fn inp_col(k: u32, j: u32) -> f32 {
    let kx = k % p.k;
    let ky = (k / p.k) % p.k;
    let c = k / (p.k * p.k);
    let ox = j % p.ow;
    let oy = (j / p.ow) % p.oh;
    let n = j / (p.ow * p.oh);
    let y = i32(oy * p.s + ky) - i32(p.p);
    let x = i32(ox * p.s + kx) - i32(p.p);
    if (y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w)) {
        return 0.0;
    }
    return acts[p.inp + ((n * p.c + c) * p.h + u32(y)) * p.w + u32(x)];
}

// A[m][kk] of the product (kk: the depth index within the whole product).
fn a_at(m: u32, kk: u32, z: u32) -> f32 {
    if (MODE == 0u) {
        return params[p.weight + m * p.c * p.k * p.k + kk];
    }
    if (MODE == 1u) {
        // m = c, kk = (o, ky, kx): weight[o, c, ky, kx]
        let kx = kk % p.k;
        let ky = (kk / p.k) % p.k;
        let o = kk / (p.k * p.k);
        return params[p.weight + ((o * p.c + m) * p.k + ky) * p.k + kx];
    }
    // m = o, kk = r within chunk z: dout[n, o, oy, ox]
    let r = z * p.chunk + kk;
    let plane = p.oh * p.ow;
    return acts[p.out + ((r / plane) * p.oc + m) * plane + r % plane];
}

// B[kk][j] of the product.
fn b_at(kk: u32, j: u32, z: u32) -> f32 {
    if (MODE == 0u) {
        return inp_col(kk, j);
    }
    if (MODE == 1u) {
        // kk = (o, ky, kx), j = (n, y, x): the output the tap reads from, if there is one
        let kx = kk % p.k;
        let ky = (kk / p.k) % p.k;
        let o = kk / (p.k * p.k);
        let x = j % p.w;
        let y = (j / p.w) % p.h;
        let n = j / (p.w * p.h);
        let ty = i32(y + p.p) - i32(ky);
        let tx = i32(x + p.p) - i32(kx);
        if (ty < 0 || tx < 0 || u32(ty) % p.s != 0u || u32(tx) % p.s != 0u) {
            return 0.0;
        }
        let oy = u32(ty) / p.s;
        let ox = u32(tx) / p.s;
        if (oy >= p.oh || ox >= p.ow) {
            return 0.0;
        }
        return acts[p.out + ((n * p.oc + o) * p.oh + oy) * p.ow + ox];
    }
    // kk = r within chunk z, j = (c, ky, kx), or CKK: the bias's column of ones
    let r = z * p.chunk + kk;
    if (j == p.c * p.k * p.k) {
        return 1.0;
    }
    return inp_col(j, r);
}

fn store(m: u32, j: u32, z: u32, v: f32) {
    if (MODE == 0u) {
        let plane = p.oh * p.ow;
        var b = 0.0;
        if (p.bias != NONE) {
            b = params[p.bias + m];
        }
        acts[p.out + ((j / plane) * p.oc + m) * plane + j % plane] = v + b;
        return;
    }
    if (MODE == 1u) {
        let plane = p.h * p.w;
        let at = p.dinp + ((j / plane) * p.c + m) * plane + j % plane;
        if (p.accumulate == 1u) {
            acts[at] = acts[at] + v;
        } else {
            acts[at] = v;
        }
        return;
    }
    scratch[p.partial + (z * p.oc + m) * (p.c * p.k * p.k + 1u) + j] = v;
}

@compute @workgroup_size(16, 16)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let d = dims();
    // MODE 2's z is its chunk; MODE 0 and 1 fold column tiles past 32,768 into z (a grid
    // dimension holds at most 65,535 workgroups).
    var z = wid.z;
    var col_tile = wid.x;
    if (MODE != 2u) {
        col_tile = wid.x + wid.z * nwg.x;
        z = 0u;
    }
    // The last chunk of a split reduction may be short.
    var depth = d.z;
    if (MODE == 2u) {
        let r = p.n * p.oh * p.ow;
        depth = min(p.chunk, r - min(r, z * p.chunk));
    }
    let row0 = wid.y * TM;
    let col0 = col_tile * TN;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < depth; k0 += TK) {
        // 1,024 floats of each tile, 4 per invocation: consecutive invocations take
        // consecutive rows of A (weights: their depth index is the fast one) and consecutive
        // columns of B.
        for (var e = 0u; e < 4u; e++) {
            let idx = t + e * WG;
            let am = idx % TM;
            let ak = idx / TM;
            var av = 0.0;
            if (row0 + am < d.x && k0 + ak < depth) {
                av = a_at(row0 + am, k0 + ak, z);
            }
            a_tile[ak * TM + am] = av;
            let bj = idx % TN;
            let bk = idx / TN;
            var bv = 0.0;
            if (col0 + bj < d.y && k0 + bk < depth) {
                bv = b_at(k0 + bk, col0 + bj, z);
            }
            b_tile[bk * TN + bj] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = a_tile[kk * TM + lid.y + 16u * i];
                bv[i] = b_tile[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let m = row0 + lid.y + 16u * i;
            let col = col0 + lid.x + 16u * j;
            if (m < d.x && col < d.y) {
                store(m, col, z, acc[i * 4u + j]);
            }
        }
    }
}

// dweight[OC, CKK] and dbias[OC] (into grads) = the sum of the Z chunks' partials, in chunk
// order. One invocation per element of [OC, CKK+1].
@compute @workgroup_size(WG)
fn weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let cols = p.c * p.k * p.k + 1u;
    if (i >= p.oc * cols) {
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < p.split; z++) {
        s += scratch[p.partial + z * p.oc * cols + i];
    }
    let m = i / cols;
    let j = i % cols;
    if (j + 1u < cols) {
        grads[p.dweight + m * (cols - 1u) + j] = s;
    } else if (p.bias != NONE) {
        grads[p.bias + m] = s;
    }
}
