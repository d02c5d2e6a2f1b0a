// sgd.wgsl: PyTorch's SGD with momentum, no dampening, optional weight decay, over the packed
// parameter vector: g' = g + wd*p; v = mu*v + g'; p = p - lr*v.  params, grads, momentum: [P].

const WG: u32 = 64u;

struct Params {
    len: u32,      // P, floats in the packed vectors
    lr: f32,
    momentum: f32, // mu
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> momentum: array<f32>;

@compute @workgroup_size(WG)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.len) {
        return;
    }
    let g = grads[i] + p.weight_decay * params[i];
    let v = p.momentum * momentum[i] + g;
    momentum[i] = v;
    params[i] = params[i] - p.lr * v;
}
