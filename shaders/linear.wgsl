// linear.wgsl: the fully connected layers (matmul + bias), PyTorch's weight layout [OUT,IN], as
// tiled matrix products, as cpu::linear_forward / cpu::linear_backward compute them.
//   linear_forward:  out[N,OUT] = relu?(inp[N,IN] . weight[OUT,IN]^T + bias[OUT])
//   linear_backward: both halves in one dispatch, from dout[N,OUT]:
//                    dweight[OUT,IN] = dout^T . inp;  dbias[OUT] = sum_n dout   (workgroups 0 .. G-1)
//                    dinp[N,IN] = (dout . weight) * (inp > 0 if inp_relu)      (workgroups G ..)
//                    (the ReLU backward of the previous layer fused)
//
// Every product is tiled the same way: a workgroup of T x T lanes computes a T x T tile
// of the result, one element a lane, stepping through the shared dimension T at a time; each
// step loads an A tile [rows][T] and a B tile [T][cols] into workgroup memory, every lane
// loading one element of each at consecutive addresses (coalesced; a transposed operand is
// transposed on the way in), then sums `a_tile[row][k] * b_tile[k][col]` over k, in k order.

const MAX_T: u32 = 16u; // the largest tile side: 16 x 16 = 256 lanes (WebGPU's default limit)
override T: u32 = 16u;  // the tile side as launched: 16, or 8 for a batch of at most 8

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
    dw_groups: u32, // linear_backward: G, the workgroups of the weight half (the rest: dinp)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> acts: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

// [T][T] of [MAX_T][MAX_T + 1]: one column of padding, so lanes that read or write down a
// column hit distinct banks.
var<workgroup> a_tile: array<array<f32, 17>, MAX_T>;
var<workgroup> b_tile: array<array<f32, 17>, MAX_T>;

// sum_k a_tile[r][k] * b_tile[k][c] over this step's T columns of the shared dimension
fn tile_dot(r: u32, c: u32) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < T; k++) {
        s += a_tile[r][k] * b_tile[k][c];
    }
    return s;
}

// Grid: x covers the ceil(OUT/T) column tiles, y the ceil(N/T) row tiles.
// out(n, o) = sum_i inp[n, i] * weight[o, i]: A = inp, B = weight^T (transposed on load).
@compute @workgroup_size(T, T)
fn linear_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * T;
    let col0 = wid.x * T;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.in_f; k0 += T) {
        let k = k0 + lid.x;
        let n = row0 + lid.y;
        let o = col0 + lid.y;
        a_tile[lid.y][lid.x] = select(0.0, acts[p.inp + n * p.in_f + k], n < p.n && k < p.in_f);
        b_tile[lid.x][lid.y] = select(0.0, params[p.weight + o * p.in_f + k], o < p.out_f && k < p.in_f);
        workgroupBarrier();
        acc += tile_dot(lid.y, lid.x);
        workgroupBarrier();
    }
    let n = row0 + lid.y;
    let o = col0 + lid.x;
    if (n < p.n && o < p.out_f) {
        var s = acc + params[p.bias + o];
        if (p.relu != 0u) {
            s = max(s, 0.0);
        }
        acts[p.out + n * p.out_f + o] = s;
    }
}

// The weight half, one tile of dweight: rows o, columns i, shared dimension the batch.
// dweight(o, i) = sum_n dout[n, o] * inp[n, i]: A = dout^T (transposed on load), B = inp.
// The tiles of column 0 also sum dout over the batch for dbias.
fn backward_weight_tile(lid: vec3<u32>, tile: u32) {
    let col_tiles = (p.in_f + T - 1u) / T;
    let row0 = (tile / col_tiles) * T;
    let col0 = (tile % col_tiles) * T;
    var acc = 0.0;
    var accb = 0.0;
    for (var k0 = 0u; k0 < p.n; k0 += T) {
        let n = k0 + lid.y;
        let o = row0 + lid.x;
        let i = col0 + lid.x;
        a_tile[lid.x][lid.y] = select(0.0, acts[p.dout + n * p.out_f + o], n < p.n && o < p.out_f);
        b_tile[lid.y][lid.x] = select(0.0, acts[p.inp + n * p.in_f + i], n < p.n && i < p.in_f);
        workgroupBarrier();
        acc += tile_dot(lid.y, lid.x);
        if (col0 == 0u && lid.x == 0u) {
            for (var k = 0u; k < T; k++) {
                accb += a_tile[lid.y][k];
            }
        }
        workgroupBarrier();
    }
    let o = row0 + lid.y;
    let i = col0 + lid.x;
    if (o < p.out_f && i < p.in_f) {
        grads[p.weight + o * p.in_f + i] = acc;
    }
    if (o < p.out_f && col0 == 0u && lid.x == 0u) {
        grads[p.bias + o] = accb;
    }
}

// The input half, one tile of dinp: rows n, columns i, shared dimension OUT.
// dinp(n, i) = sum_o dout[n, o] * weight[o, i]: A = dout, B = weight.
fn backward_input_tile(lid: vec3<u32>, tile: u32) {
    let col_tiles = (p.in_f + T - 1u) / T;
    let row0 = (tile / col_tiles) * T;
    let col0 = (tile % col_tiles) * T;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.out_f; k0 += T) {
        let n = row0 + lid.y;
        let o = k0 + lid.x;
        let ob = k0 + lid.y;
        let i = col0 + lid.x;
        a_tile[lid.y][lid.x] = select(0.0, acts[p.dout + n * p.out_f + o], n < p.n && o < p.out_f);
        b_tile[lid.y][lid.x] = select(0.0, params[p.weight + ob * p.in_f + i], ob < p.out_f && i < p.in_f);
        workgroupBarrier();
        acc += tile_dot(lid.y, lid.x);
        workgroupBarrier();
    }
    let n = row0 + lid.y;
    let i = col0 + lid.x;
    if (n < p.n && i < p.in_f) {
        let at = n * p.in_f + i;
        acts[p.dinp + at] = select(acc, 0.0, p.inp_relu != 0u && acts[p.inp + at] <= 0.0);
    }
}

// Grid: x covers G = ceil(OUT/T) x ceil(IN/T) weight tiles, then ceil(N/T) x ceil(IN/T) input
// tiles (the branch is uniform over a workgroup). The halves read dout and write disjoint
// tensors, so they need no order between them.
@compute @workgroup_size(T, T)
fn linear_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    if (wid.x < p.dw_groups) {
        backward_weight_tile(lid, wid.x);
    } else {
        backward_input_tile(lid, wid.x - p.dw_groups);
    }
}
