// sgd.wgsl: PyTorch's SGD with momentum, no dampening, optional weight decay, over the packed
// parameter vector: g' = g + wd*p; v = mu*v + g'; p = p - lr*v.  params, grads, momentum: [P],
// read as vec4 (P is a multiple of 64), one vec4 per invocation: 4x fewer loads.

const WG: u32 = 64u;

struct Params {
    len: u32,      // P / 4: vec4s in the packed vectors
    lr: f32,
    momentum: f32, // mu
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> momentum: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.len) {
        return;
    }
    let w = params[i];
    let g = grads[i] + p.weight_decay * w;
    let v = p.momentum * momentum[i] + g;
    momentum[i] = v;
    params[i] = w - p.lr * v;
}
