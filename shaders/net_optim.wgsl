// net_optim.wgsl: PyTorch's SGD with momentum (no dampening) and weight decay over any
// network's packed parameters, the trained tensors only: g' = g + wd*p; v = mu*v + g';
// p = p - lr*v, or with Nesterov p = p - lr*(g' + mu*v). trained[b] is the 64-float block b's
// group plus 1, 0 where it is not trained (tensors start on 64-float boundaries: a block is one
// tensor's): a fixed tensor (batch norm's gamma with scale=0) and the alignment padding stay
// as they are; group g trains at lr * mult[g] with weight decay wd / mult[g]; with a warm-up
// schedule (total > 0) lr is times the factor of this step, ints[step_word] - base: the
// interpolation of [start, 1, end] at [0, warm, total]. `step_count` then advances the step
// counter (a dispatch of its own: no invocation of net_sgd reads it while it moves), which
// dropout's masks read too. params, grads, momentum: [P] as vec4.

const WG: u32 = 256u;

struct Params {
    len: u32,        // P / 4: vec4s in the packed vectors
    lr: f32,
    momentum: f32,   // mu
    weight_decay: f32,
    step_word: u32,  // ints[step_word]: the steps taken
    nesterov: u32,   // 1: Nesterov momentum
    mult0: f32, mult1: f32, mult2: f32, // the groups' learning-rate multipliers
    warm: f32,       // warm-up: its steps (floor(warm * total))
    start: f32,      // warm-up: the first step's factor
    end: f32,        // warm-up: the last step's factor
    total: f32,      // warm-up: the run's steps (0: no per-step schedule)
    base: u32,       // warm-up: the step counter's value at the run's first step
    _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> momentum: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> trained: array<u32>;
@group(0) @binding(5) var<storage, read_write> ints: array<u32>;
@group(0) @binding(6) var<storage, read_write> second: array<vec4<f32>>; // AdamW's v [P]

@compute @workgroup_size(WG)
fn net_sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.len || trained[i / 16u] == 0u) {
        return;
    }
    let mults = array<f32, 3>(p.mult0, p.mult1, p.mult2);
    let m = mults[trained[i / 16u] - 1u];
    let lr = p.lr * m * factor();
    let w = params[i];
    let g = grads[i] + (p.weight_decay / m) * w;
    let v = p.momentum * momentum[i] + g;
    momentum[i] = v;
    if (p.nesterov == 1u) {
        params[i] = w - lr * (g + p.momentum * v);
    } else {
        params[i] = w - lr * v;
    }
}

// The warm-up schedule's factor of this step (1 without one), as Schedule::step_factor.
fn factor() -> f32 {
    if (p.total == 0.0) {
        return 1.0;
    }
    let s = f32(ints[p.step_word] - p.base);
    if (s < p.warm) {
        return p.start + (1.0 - p.start) * s / p.warm;
    }
    if (p.total > p.warm) {
        return 1.0 + (p.end - 1.0) * min(s - p.warm, p.total - p.warm) / (p.total - p.warm);
    }
    return p.end;
}

@compute @workgroup_size(1)
fn step_count() {
    ints[p.step_word] = ints[p.step_word] + 1u;
}

// PyTorch's AdamW (betas 0.9, 0.999, eps 1e-8) on the trained tensors, at this run's step
// t = ints[step_word] - base + 1: p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). Groups and schedule as net_sgd.
@compute @workgroup_size(WG)
fn net_adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.len || trained[i / 16u] == 0u) {
        return;
    }
    let mults = array<f32, 3>(p.mult0, p.mult1, p.mult2);
    let m = mults[trained[i / 16u] - 1u];
    let lr = p.lr * m * factor();
    let t = f32(ints[p.step_word] - p.base + 1u);
    let c1 = 1.0 - pow(0.9, t);
    let c2 = 1.0 - pow(0.999, t);
    let g = grads[i];
    var w = params[i];
    w -= lr * (p.weight_decay / m) * w;
    let m1 = 0.9 * momentum[i] + 0.1 * g;
    let m2 = 0.999 * second[i] + 0.001 * g * g;
    momentum[i] = m1;
    second[i] = m2;
    params[i] = w - lr * (m1 / c1) / (sqrt(m2 / c2) + 1e-8);
}
