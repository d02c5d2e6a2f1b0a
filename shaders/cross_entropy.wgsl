// cross_entropy.wgsl: softmax cross-entropy over the batch, and the test-set bookkeeping.
//   cross_entropy: dlogits[N,10] = (softmax(logits) - target) / N, target = onehot(y), or with
//                  label smoothing s (1 - s) onehot(y) + s/10; adds the batch's mean
//                  loss and correct count to the metrics, records the first step whose loss is
//                  not finite or has exploded, and advances the step counters the gather reads.
//   eval_accumulate: pred[R] = argmax(logits) of the eval batch, with bit 31 set where a
//                  logit is not finite (outputs::NOT_FINITE); confusion[10,10] counts (true,
//                  predicted); advances the eval batch counter.
// Both run as ONE workgroup that loops over the batch, so the sums need no float atomics.

const WG: u32 = 64u;
const CLASSES: u32 = 10u;
// A batch-mean loss above this has exploded (chance is ln 10 = 2.3): the run diverged even
// before the floats overflow. Mirrors model::DIVERGED_LOSS.
const DIVERGED_LOSS: f32 = 1e4;
// Marks a prediction whose logits were not all finite. Mirrors outputs::NOT_FINITE.
const NOT_FINITE: u32 = 0x80000000u;

struct Params {
    n: u32,       // N, batch size
    count: u32,   // R, eval records (eval_accumulate ignores positions >= R)
    logits: u32,  // offset of logits[N,10] in acts
    dlogits: u32, // offset of dlogits[N,10] in acts
    y: u32,       // offset of y[N] in ints
    smoothing: f32, // label smoothing s: the target is (1 - s) onehot + s/10 (0: plain)
    _pad1: u32, _pad2: u32,
}

// The metrics buffer; its u32 word indices are mirrored in gather.wgsl and gpu.rs.
struct Metrics {
    loss_sum: f32,    // 0: sum of batch-mean losses since the last readback
    correct: u32,     // 1: correct training predictions since the last readback
    seen: u32,        // 2: training images since the last readback
    steps: u32,       // 3: steps since the last readback
    bad_step: u32,    // 4: 1 + global step of the first diverged loss, 0 if none
    epoch_step: u32,  // 5: step within the epoch (the gather's base is epoch_step * N)
    global_step: u32, // 6: steps since the engine was made
    eval_batch: u32,  // 7: eval batch counter
    confusion: array<atomic<u32>, 100>, // 8..108: [true class, predicted class]
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;
@group(0) @binding(3) var<storage, read_write> metrics: Metrics;
@group(0) @binding(4) var<storage, read_write> preds: array<u32>; // [R]

var<workgroup> part_loss: array<f32, WG>;
var<workgroup> part_correct: array<u32, WG>;

// Inf and NaN have an all-ones exponent; WGSL has no isnan/isinf and may fold x != x.
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(WG)
fn cross_entropy(@builtin(local_invocation_index) lid: u32) {
    var loss = 0.0;
    var correct = 0u;
    for (var b = lid; b < p.n; b += WG) {
        let base = p.logits + b * CLASSES;
        var mx = acts[base];
        var arg = 0u;
        for (var j = 1u; j < CLASSES; j++) {
            let v = acts[base + j];
            if (v > mx) {
                mx = v;
                arg = j;
            }
        }
        var sum = 0.0;
        for (var j = 0u; j < CLASSES; j++) {
            sum += exp(acts[base + j] - mx);
        }
        let y = ints[p.y + b];
        let spread = p.smoothing / f32(CLASSES);
        if (p.smoothing > 0.0) {
            var all = 0.0;
            for (var j = 0u; j < CLASSES; j++) {
                all += acts[base + j];
            }
            loss += mx + log(sum) - (1.0 - p.smoothing) * acts[base + y] - spread * all;
        } else {
            loss += mx + log(sum) - acts[base + y];
        }
        if (arg == y) {
            correct += 1u;
        }
        let inv_n = 1.0 / f32(p.n);
        for (var j = 0u; j < CLASSES; j++) {
            let prob = exp(acts[base + j] - mx) / sum;
            var want = select(0.0, 1.0 - p.smoothing, j == y);
            if (p.smoothing > 0.0) {
                want += spread;
            }
            acts[p.dlogits + b * CLASSES + j] = (prob - want) * inv_n;
        }
    }
    part_loss[lid] = loss;
    part_correct[lid] = correct;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part_loss[lid] += part_loss[lid + s];
            part_correct[lid] += part_correct[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let mean = part_loss[0] / f32(p.n);
        if ((!finite(mean) || mean > DIVERGED_LOSS) && metrics.bad_step == 0u) {
            metrics.bad_step = metrics.global_step + 1u;
        }
        metrics.loss_sum += mean;
        metrics.correct += part_correct[0];
        metrics.seen += p.n;
        metrics.steps += 1u;
        metrics.epoch_step += 1u;
        metrics.global_step += 1u;
    }
}

@compute @workgroup_size(WG)
fn eval_accumulate(@builtin(local_invocation_index) lid: u32) {
    let start = metrics.eval_batch * p.n;
    for (var b = lid; b < p.n; b += WG) {
        let pos = start + b;
        if (pos >= p.count) {
            break;
        }
        let base = p.logits + b * CLASSES;
        var mx = acts[base];
        var arg = 0u;
        var all_finite = finite(mx);
        for (var j = 1u; j < CLASSES; j++) {
            let v = acts[base + j];
            all_finite = all_finite && finite(v);
            if (v > mx) {
                mx = v;
                arg = j;
            }
        }
        preds[pos] = arg | select(NOT_FINITE, 0u, all_finite);
        atomicAdd(&metrics.confusion[ints[p.y + b] * CLASSES + arg], 1u);
    }
    // Every invocation has read eval_batch before it moves on.
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        metrics.eval_batch += 1u;
    }
}
