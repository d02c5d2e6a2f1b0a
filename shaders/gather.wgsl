// gather.wgsl: the batch gather. Turns u8 CHW records (packed four to a u32) into the
// normalised input x[N,3,32,32] = (v/255 - 0.5)/0.5 and the labels y[N], for the records
// index[base + n], where base = N * (the step counter in `counters`): no upload per step.
// One invocation per u32 word: 768 words (3072 bytes) per image.
// With augmentation (training only) each image is randomly cropped from its 4-pixel
// zero-padded version and/or flipped left-right, drawn from hash(key ^ hash(position in the
// epoch)) exactly as src/augment.rs does on the CPU.

const WG: u32 = 64u;
const WORDS: u32 = 768u;     // 3072 bytes of one record's pixels
const COUNTER_EPOCH_STEP: u32 = 5u; // Metrics.epoch_step (see cross_entropy.wgsl)
const COUNTER_EVAL_BATCH: u32 = 7u; // Metrics.eval_batch

struct Params {
    n: u32,             // N, batch size
    mode: u32,          // 0: train (base from epoch_step), 1: eval (base from eval_batch)
    count: u32,         // R, records in the index list; positions >= R read record 0
    chunk_records: u32, // records per image buffer (the 128 MiB binding limit splits the set)
    x: u32,             // offset of x[N,3,32,32] in acts
    y: u32,             // offset of y[N] in ints
    aug: u32,           // bit 0: random horizontal flip, bit 1: random crop (padding 4)
    key: u32,           // this epoch's augmentation key
}

const IMG: i32 = 32;
const PAD: u32 = 4u;

// lowbias32, as augment::hash.
fn hash(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Pixel e (CHW) of record r, as a float 0..255.
fn pixel(r: u32, e: u32) -> f32 {
    var packed: u32;
    if (r < p.chunk_records) {
        packed = images0[r * WORDS + e / 4u];
    } else {
        packed = images1[(r - p.chunk_records) * WORDS + e / 4u];
    }
    return f32((packed >> (8u * (e % 4u))) & 0xffu);
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images0: array<u32>; // [min(R, chunk) * 768]
@group(0) @binding(2) var<storage, read> images1: array<u32>; // [(R - chunk) * 768] (or images0 again)
@group(0) @binding(3) var<storage, read> labels: array<u32>;  // [R_all], one label per record
@group(0) @binding(4) var<storage, read> index: array<u32>;   // [R], this epoch's order
@group(0) @binding(5) var<storage, read_write> counters: array<u32>; // Metrics as u32 words
@group(0) @binding(6) var<storage, read_write> acts: array<f32>;
@group(0) @binding(7) var<storage, read_write> ints: array<u32>;

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * WORDS) {
        return;
    }
    let n = i / WORDS;
    let word = i % WORDS;
    var step = counters[COUNTER_EPOCH_STEP];
    if (p.mode == 1u) {
        step = counters[COUNTER_EVAL_BATCH];
    }
    let pos = step * p.n + n;
    var r = 0u;
    if (pos < p.count) {
        r = index[pos];
    }
    let out = p.x + n * WORDS * 4u + word * 4u;
    if (p.aug == 0u) {
        var packed: u32;
        if (r < p.chunk_records) {
            packed = images0[r * WORDS + word];
        } else {
            packed = images1[(r - p.chunk_records) * WORDS + word];
        }
        for (var b = 0u; b < 4u; b++) {
            let v = f32((packed >> (8u * b)) & 0xffu);
            acts[out + b] = (v / 255.0 - 0.5) / 0.5;
        }
    } else {
        let h = hash(p.key ^ hash(pos));
        let flip = (p.aug & 1u) != 0u && (h & 1u) == 1u;
        var dx = 0;
        var dy = 0;
        if ((p.aug & 2u) != 0u) {
            dx = i32((h >> 8u) % 9u) - i32(PAD);
            dy = i32((h >> 16u) % 9u) - i32(PAD);
        }
        for (var b = 0u; b < 4u; b++) {
            let e = word * 4u + b;
            let c = e / 1024u;
            var x = i32(e % 32u);
            if (flip) {
                x = IMG - 1 - x;
            }
            let sx = x + dx;
            let sy = i32((e / 32u) % 32u) + dy;
            var v = 0.0; // the zero padding
            if (sx >= 0 && sx < IMG && sy >= 0 && sy < IMG) {
                v = pixel(r, c * 1024u + u32(sy) * 32u + u32(sx));
            }
            acts[out + b] = (v / 255.0 - 0.5) / 0.5;
        }
    }
    if (word == 0u) {
        ints[p.y + n] = labels[r];
    }
}
