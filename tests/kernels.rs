//! Every WGSL kernel against the CPU reference on random inputs, several shapes each (odd sizes
//! included), with the output regions poisoned (NaN) before each run so an element the kernel
//! fails to write shows up. Prints the tolerance and the max relative error of every check.
//! Runs on whatever adapter wgpu finds (Mesa lavapipe in CI).

use tabcnn::augment::Augment;
use tabcnn::cpu;
use tabcnn::gpu::*;
use tabcnn::model::Rng;

mod common;
use common::{compare, conv_case, gpu, nan, pooled_case, randn, TOL};

fn f32s(b: &[u8]) -> Vec<f32> {
    bytemuck::cast_slice(b).to_vec()
}
fn u32s(b: &[u8]) -> Vec<u32> {
    bytemuck::cast_slice(b).to_vec()
}
fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// A packed buffer with `pad` random floats, then `a`, then more random floats: tensors sit at
/// non-zero offsets as in the engine, and writes outside them are caught.
/// Each part starts at a multiple of 64 floats, as in the engine (the conv weight window
/// needs 256-byte alignment).
fn packed(rng: &mut Rng, parts: &[&[f32]], pad: usize) -> (Vec<f32>, Vec<u32>) {
    let mut v = randn(rng, pad, 1.0);
    let mut offs = Vec::new();
    for p in parts {
        let aligned = v.len().div_ceil(64) * 64;
        let fill = randn(rng, aligned - v.len(), 1.0);
        v.extend(fill);
        offs.push(v.len() as u32);
        v.extend_from_slice(p);
        v.extend(randn(rng, pad, 1.0));
    }
    (v, offs)
}

/// Region [off, off+len) of a buffer.
fn region(v: &[f32], off: u32, len: usize) -> &[f32] {
    &v[off as usize..off as usize + len]
}

/// Everything outside the given regions is unchanged.
fn untouched(name: &str, before: &[f32], after: &[f32], written: &[(u32, usize)]) {
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        let inside = written.iter().any(|&(o, l)| i >= o as usize && i < o as usize + l);
        if !inside {
            assert!(a.to_bits() == b.to_bits(), "{name}: element {i} outside the output was changed ({a} -> {b})");
        }
    }
}

const CONV_SHAPES: [(usize, usize, usize, usize, usize, usize); 7] = [
    // n, c, h, w, oc, k
    (1, 1, 5, 5, 1, 5),     // one output, no pooling window
    (2, 3, 9, 7, 5, 3),     // odd conv output (7 x 5): an unpooled last row and column
    (4, 3, 32, 32, 6, 5),   // LeNet conv1, batch 4
    (3, 6, 14, 14, 16, 5),  // LeNet conv2
    (5, 2, 11, 13, 3, 4),   // K = 4
    (2, 20, 14, 14, 33, 5), // wide: more input channels than a weight tile holds
    (1, 9, 12, 10, 11, 7),  // K = 7
];

fn conv_shape(n: usize, c: usize, h: usize, w: usize, oc: usize, k: usize) -> ConvShape {
    ConvShape { n: n as u32, c: c as u32, h: h as u32, w: w as u32, oc: oc as u32, k: k as u32 }
}

/// The blocks the engine would choose, then small and ragged ones (channel blocks that do not
/// divide the channels, several weight tiles).
fn conv_blocks(default: &Launch, k: usize) -> Vec<(u32, u32)> {
    let get = |name: &str| default.constants.iter().find(|c| c.0 == name).unwrap().1;
    let mut b = vec![(get("OB"), get("CC")), (1, 1), (3, 2), (8, (W_TILE / (8 * (k * k) as u32)).min(5))];
    b.dedup();
    b
}

#[test]
fn conv_pool_forward_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(1);
    for &(n, c, h, w, oc, k) in &CONV_SHAPES {
        let s = conv_shape(n, c, h, w, oc, k);
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (inp, weight, bias) = conv_case(&mut rng, n, c, h, w, oc, k);
        let (out_len, pool_len) = (n * oc * oh * ow, n * oc * (oh / 2) * (ow / 2));
        let (params, po) = packed(&mut rng, &[&weight, &bias], 7);
        let (acts, ao) = packed(&mut rng, &[&inp, &nan(out_len), &nan(pool_len)], 5);
        let ints = vec![0xdead_beefu32; 3 + pool_len];
        let u = ConvParams { n: n as u32, inp: ao[0], out: ao[1], pool: ao[2], arg: 3, weight: po[0], bias: po[1], ..Default::default() };
        let (mut want, mut want_pool, mut want_arg) = (vec![0.0f32; out_len], vec![0.0f32; pool_len], vec![0u32; pool_len]);
        cpu::conv_pool_forward(&mut want, &mut want_pool, &mut want_arg, &inp, &weight, &bias, n, c, h, w, oc, k);
        for (ob, cc) in conv_blocks(&Launch::conv_pool_forward(&s), k) {
            let launch = Launch::conv_pool_forward_blocks(&s, ob, cc);
            let r = pollster::block_on(g.run_kernel(KernelId::ConvPoolForward, &launch, bytemuck::bytes_of(&u), &[bytes(&params), bytes(&acts), bytes(&ints), bytes(&[0.0f32])]))
                .unwrap();
            let (got, got_arg) = (f32s(&r[1]), u32s(&r[2]));
            let name = format!("conv_pool_forward n{n} c{c} {h}x{w} oc{oc} k{k} OB{ob} CC{cc}");
            compare(&format!("{name} out"), region(&got, ao[1], out_len), &want, TOL);
            compare(&format!("{name} pool"), region(&got, ao[2], pool_len), &want_pool, TOL);
            // The argmax may differ only where two outputs tie to within rounding.
            let close = want_arg.iter().zip(&got_arg[3..]).enumerate().filter(|(_, (a, b))| a != b).all(|(i, (_, &b))| {
                let plane = (i / ((oh / 2) * (ow / 2))) * oh * ow;
                b != cpu::NO_ARG && (want[plane + b as usize] - want_pool[i]).abs() <= 1e-5 * want_pool[i].abs().max(1.0)
            });
            assert!(close, "{name}: argmax differs from the CPU's beyond a rounding tie");
            assert!(got_arg[..3].iter().all(|&v| v == 0xdead_beef), "{name}: wrote before arg");
            let none = want_arg.iter().filter(|&&a| a == cpu::NO_ARG).count();
            let same = want_arg.iter().zip(&got_arg[3..]).filter(|(a, b)| a == b).count();
            println!("{name}: {same} of {pool_len} argmaxes as the CPU's, the rest rounding ties ({none} windows cut by ReLU)");
            untouched(&name, &acts, &got, &[(ao[1], out_len), (ao[2], pool_len)]);
        }
    }
}

#[test]
fn conv_pool_backward_weight_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(3);
    for &(n, c, h, w, oc, k) in &CONV_SHAPES {
        let s = conv_shape(n, c, h, w, oc, k);
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (inp, _, arg, dpool) = pooled_case(&mut rng, n, c, h, w, oc, k);
        let (wl, bl) = (oc * c * k * k, oc);
        let (acts, ao) = packed(&mut rng, &[&inp, &dpool], 4);
        let (grads, go) = packed(&mut rng, &[&nan(wl), &nan(bl)], 6);
        let mut ints = vec![7u32; 2];
        ints.extend(&arg);
        let u = ConvParams { n: n as u32, inp: ao[0], dpool: ao[1], arg: 2, weight: go[0], bias: go[1], ..Default::default() };
        let (mut dw, mut db, mut scratch) = (vec![0.0f32; wl], vec![0.0f32; bl], vec![0.0f32; n * oc * oh * ow]);
        cpu::conv_pool_backward_weight(&mut dw, &mut db, &mut scratch, &dpool, &arg, &inp, n, c, h, w, oc, k);
        // the lanes the engine chooses, the fewest and the most
        let mut lanes = vec![Launch::conv_pool_backward_weight(&s).wg, 64, WG_R];
        lanes.dedup();
        for wg in lanes {
            let launch = Launch::conv_pool_backward_weight_lanes(&s, wg);
            let r =
                pollster::block_on(g.run_kernel(KernelId::ConvPoolBackwardWeight, &launch, bytemuck::bytes_of(&u), &[bytes(&[0.0f32]), bytes(&acts), bytes(&ints), bytes(&grads)]))
                    .unwrap();
            let got = f32s(&r[3]);
            let name = format!("conv_pool_backward_weight n{n} c{c} {h}x{w} oc{oc} k{k} lanes{wg}");
            compare(&format!("{name} dweight"), region(&got, go[0], wl), &dw, TOL);
            compare(&format!("{name} dbias"), region(&got, go[1], bl), &db, TOL);
            untouched(&name, &grads, &got, &[(go[0], wl), (go[1], bl)]);
        }
    }
}

#[test]
fn conv_pool_backward_input_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(2);
    for &(n, c, h, w, oc, k) in &CONV_SHAPES {
        let s = conv_shape(n, c, h, w, oc, k);
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (_, weight, arg, dpool) = pooled_case(&mut rng, n, c, h, w, oc, k);
        let in_len = n * c * h * w;
        let (params, po) = packed(&mut rng, &[&weight], 3);
        let (acts, ao) = packed(&mut rng, &[&dpool, &nan(in_len)], 9);
        let mut ints = vec![7u32; 5];
        ints.extend(&arg);
        let u = ConvParams { n: n as u32, dpool: ao[0], dinp: ao[1], arg: 5, weight: po[0], ..Default::default() };
        let (mut want, mut scratch) = (vec![0.0f32; in_len], vec![0.0f32; n * oc * oh * ow]);
        cpu::conv_pool_backward_input(&mut want, &mut scratch, &dpool, &arg, &weight, n, c, h, w, oc, k);
        for (cb, occ) in conv_blocks(&Launch::conv_pool_backward_input(&s), k) {
            let launch = Launch::conv_pool_backward_input_blocks(&s, cb, occ);
            let r =
                pollster::block_on(g.run_kernel(KernelId::ConvPoolBackwardInput, &launch, bytemuck::bytes_of(&u), &[bytes(&params), bytes(&acts), bytes(&ints), bytes(&[0.0f32])]))
                    .unwrap();
            let got = f32s(&r[1]);
            let name = format!("conv_pool_backward_input n{n} c{c} {h}x{w} oc{oc} k{k} CB{cb} OCC{occ}");
            compare(&name, region(&got, ao[1], in_len), &want, TOL);
            untouched(&name, &acts, &got, &[(ao[1], in_len)]);
        }
    }
}

// Shapes past one tile in every dimension, ragged tiles, and a batch of 1.
const LINEAR_SHAPES: [(usize, usize, usize); 7] = [(1, 1, 1), (3, 7, 5), (4, 400, 120), (5, 84, 10), (64, 120, 84), (7, 33, 65), (37, 17, 300)];

fn linear_params(n: usize, i: usize, o: usize) -> LinearParams {
    LinearParams { n: n as u32, in_f: i as u32, out_f: o as u32, ..Default::default() }
}

#[test]
fn linear_forward_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(4);
    for &(n, i, o) in &LINEAR_SHAPES {
        for relu in [false, true] {
            let inp = randn(&mut rng, n * i, 1.0);
            let weight = randn(&mut rng, o * i, 0.2);
            let bias = randn(&mut rng, o, 0.2);
            let (params, po) = packed(&mut rng, &[&weight, &bias], 3);
            let (acts, ao) = packed(&mut rng, &[&inp, &nan(n * o)], 2);
            let u = LinearParams { relu: relu as u32, inp: ao[0], out: ao[1], weight: po[0], bias: po[1], ..linear_params(n, i, o) };
            let mut want = vec![0.0f32; n * o];
            cpu::linear_forward(&mut want, &inp, &weight, &bias, n, i, o, relu);
            let r =
                pollster::block_on(g.run_kernel(KernelId::LinearForward, &Launch::linear_forward(&u), bytemuck::bytes_of(&u), &[bytes(&params), bytes(&acts), bytes(&[0.0f32])]))
                    .unwrap();
            let got = f32s(&r[1]);
            let name = format!("linear_forward n{n} in{i} out{o} relu{relu}");
            compare(&name, region(&got, ao[1], n * o), &want, TOL);
            untouched(&name, &acts, &got, &[(ao[1], n * o)]);
        }
    }
}

#[test]
fn linear_backward_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(5);
    for &(n, i, o) in &LINEAR_SHAPES {
        for relu in [false, true] {
            // The input is post-ReLU when masked: about half zeros.
            let inp: Vec<f32> = randn(&mut rng, n * i, 1.0).into_iter().map(|v| if relu { v.max(0.0) } else { v }).collect();
            let dout = randn(&mut rng, n * o, 1.0);
            let weight = randn(&mut rng, o * i, 0.2);
            let (params, po) = packed(&mut rng, &[&weight], 3);
            let (acts, ao) = packed(&mut rng, &[&inp, &dout, &nan(n * i)], 2);
            let (grads, go) = packed(&mut rng, &[&nan(o * i), &nan(o)], 5);
            let u = LinearParams { inp_relu: relu as u32, inp: ao[0], dout: ao[1], dinp: ao[2], weight: go[0], bias: go[1], ..linear_params(n, i, o) }.with_dw_groups();
            // weight in params and dweight in grads sit at one offset, as in the engine
            assert_eq!(go[0], po[0], "the test packs weight and dweight at one offset");
            let (mut dinp, mut dw, mut db) = (vec![0.0f32; n * i], vec![0.0f32; o * i], vec![0.0f32; o]);
            cpu::linear_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &weight, n, i, o, relu);
            let r =
                pollster::block_on(g.run_kernel(KernelId::LinearBackward, &Launch::linear_backward(&u), bytemuck::bytes_of(&u), &[bytes(&params), bytes(&acts), bytes(&grads)]))
                    .unwrap();
            let (got, got_g) = (f32s(&r[1]), f32s(&r[2]));
            let name = format!("linear_backward n{n} in{i} out{o} mask{relu}");
            compare(&format!("{name} dinp"), region(&got, ao[2], n * i), &dinp, TOL);
            compare(&format!("{name} dweight"), region(&got_g, go[0], o * i), &dw, TOL);
            compare(&format!("{name} dbias"), region(&got_g, go[1], o), &db, TOL);
            untouched(&name, &acts, &got, &[(ao[2], n * i)]);
            untouched(&name, &grads, &got_g, &[(go[0], o * i), (go[1], o)]);
        }
    }
}

/// Run the gather with `u` (x at 10, y at 3 of poisoned buffers) over `images` split into the
/// two image bindings at `u.chunk_records`: (acts as sent, acts after, ints after).
fn run_gather(u: &GatherParams, images: &[u8], labels: &[u32], index: &[u32], counters: &[u32]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let n = u.n as usize;
    let (img0, img1) = images.split_at((u.chunk_records as usize * 3072).min(images.len()));
    let img1 = if img1.is_empty() { img0 } else { img1 };
    let acts = nan(10 + n * 3072);
    let ints = vec![u32::MAX; 3 + n];
    let r = pollster::block_on(gpu().run_kernel(
        KernelId::Gather,
        &Launch::flat(n * 768),
        bytemuck::bytes_of(u),
        &[img0, img1, bytes(labels), bytes(index), bytes(counters), bytes(&acts), bytes(&ints)],
    ))
    .unwrap();
    let got = f32s(&r[5]);
    (acts, got, u32s(&r[6]))
}

#[test]
fn gather_matches_cpu_across_two_image_buffers() {
    let mut rng = Rng::new(9);
    let records = 11;
    let images: Vec<u8> = (0..records * 3072).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..records).map(|_| rng.below(10) as u32).collect();
    let labels_u8: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    let index = rng.permutation(records);
    for (n, chunk, step, mode) in [(3usize, 4usize, 2u32, 0u32), (1, 11, 0, 0), (5, 6, 1, 1), (4, 5, 2, 1)] {
        let mut counters = vec![0u32; M_WORDS];
        counters[if mode == 0 { M_EPOCH_STEP } else { M_EVAL_BATCH }] = step;
        let u = GatherParams { n: n as u32, mode, count: records as u32, chunk_records: chunk as u32, x: 10, y: 3, ..Default::default() };
        let (acts, got, got_y) = run_gather(&u, &images, &labels, &index, &counters);
        // Positions past the record count read record 0 (the eval pass pads its last batch).
        let base = step as usize * n;
        let idx: Vec<u32> = (0..n).map(|i| if base + i < records { index[base + i] } else { 0 }).collect();
        let mut want = vec![0.0f32; n * 3072];
        let mut want_y = vec![0u32; n];
        cpu::gather(&mut want, &mut want_y, &images, &labels_u8, &idx, 0, n);
        compare(&format!("gather n{n} chunk{chunk} step{step} mode{mode}"), region(&got, 10, n * 3072), &want, 0.0);
        assert_eq!(&got_y[3..], &want_y[..]);
        untouched("gather", &acts, &got, &[(10, n * 3072)]);
    }
}

#[test]
fn augmented_gather_matches_cpu() {
    let mut rng = Rng::new(19);
    let records = 9;
    let images: Vec<u8> = (0..records * 3072).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..records).map(|_| rng.below(10) as u32).collect();
    let labels_u8: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    let index = rng.permutation(records);
    for (n, chunk, step, flip, crop, key) in [(3usize, 4usize, 1u32, true, true, 5u32), (4, 9, 0, true, false, 6), (2, 3, 3, false, true, 7), (1, 2, 8, true, true, 0xdead_beef)] {
        let aug = Augment { flip, crop, key };
        let mut counters = vec![0u32; M_WORDS];
        counters[M_EPOCH_STEP] = step;
        let u = GatherParams { n: n as u32, mode: 0, count: records as u32, chunk_records: chunk as u32, x: 10, y: 3, aug: aug.bits(), key };
        let (acts, got, got_y) = run_gather(&u, &images, &labels, &index, &counters);
        let mut want = vec![0.0f32; n * 3072];
        let mut want_y = vec![0u32; n];
        cpu::gather_augmented(&mut want, &mut want_y, &images, &labels_u8, &index, step as usize * n, n, &aug);
        compare(&format!("augmented gather n{n} step{step} flip {flip} crop {crop}"), region(&got, 10, n * 3072), &want, 0.0);
        assert_eq!(&got_y[3..], &want_y[..]);
        untouched("augmented gather", &acts, &got, &[(10, n * 3072)]);
        // The batch really is augmented: some image differs from its plain gather.
        let mut plain = vec![0.0f32; n * 3072];
        cpu::gather(&mut plain, &mut want_y, &images, &labels_u8, &index, step as usize * n, n);
        let moved = (0..n).filter(|&i| want[i * 3072..(i + 1) * 3072] != plain[i * 3072..(i + 1) * 3072]).count();
        println!("  {moved} of {n} images changed by the augmentation");
        assert!(moved > 0 || n == 1);
    }
}

#[test]
fn cross_entropy_matches_cpu_and_counts() {
    let g = gpu();
    let mut rng = Rng::new(10);
    for n in [1usize, 4, 13, 64, 100] {
        let logits = randn(&mut rng, n * 10, 4.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
        let (acts, ao) = packed(&mut rng, &[&logits, &nan(n * 10)], 3);
        let mut ints = vec![0u32; 2];
        ints.extend(&labels);
        let mut metrics = vec![0u32; M_WORDS];
        metrics[M_LOSS_SUM] = 1.5f32.to_bits();
        metrics[M_CORRECT] = 7;
        metrics[M_SEEN] = 40;
        metrics[M_STEPS] = 10;
        metrics[M_EPOCH_STEP] = 3;
        metrics[M_GLOBAL_STEP] = 20;
        let u = CeParams { n: n as u32, count: 0, logits: ao[0], dlogits: ao[1], y: 2, ..Default::default() };
        let r = pollster::block_on(g.run_kernel(KernelId::CrossEntropy, &Launch::flat(64), bytemuck::bytes_of(&u), &[bytes(&acts), bytes(&ints), bytes(&metrics), bytes(&[0u32])]))
            .unwrap();
        let got = f32s(&r[0]);
        let m = u32s(&r[2]);
        let mut want = vec![0.0f32; n * 10];
        let (loss, correct) = cpu::cross_entropy(&mut want, &logits, &labels, n);
        compare(&format!("cross_entropy dlogits n{n}"), region(&got, ao[1], n * 10), &want, TOL);
        compare(&format!("cross_entropy loss n{n}"), &[f32::from_bits(m[M_LOSS_SUM])], &[1.5 + loss / n as f32], TOL);
        assert_eq!((m[M_CORRECT], m[M_SEEN], m[M_STEPS], m[M_EPOCH_STEP], m[M_GLOBAL_STEP], m[M_BAD_STEP]), (7 + correct, 40 + n as u32, 11, 4, 21, 0));
    }
    // A non-finite loss records the step it happened at.
    let logits = vec![f32::INFINITY; 40];
    let mut metrics = vec![0u32; M_WORDS];
    metrics[M_GLOBAL_STEP] = 41;
    let u = CeParams { n: 4, logits: 0, dlogits: 40, y: 0, ..Default::default() };
    let acts = [logits, vec![0.0; 40]].concat();
    let r = pollster::block_on(g.run_kernel(
        KernelId::CrossEntropy,
        &Launch::flat(64),
        bytemuck::bytes_of(&u),
        &[bytes(&acts), bytes(&[0u32, 1, 2, 3]), bytes(&metrics), bytes(&[0u32])],
    ))
    .unwrap();
    assert_eq!(u32s(&r[2])[M_BAD_STEP], 42, "bad_step is 1 + the global step of the first non-finite loss");
    // So does an exploded but finite loss; an earlier bad step is kept.
    let mut exploded = vec![0.0f32; 80];
    exploded[3] = 1e6; // label 0, logit 3 is 1e6 above it
    for (m, want) in [(0u32, 42u32), (7, 7)] {
        let mut metrics = vec![0u32; M_WORDS];
        metrics[M_GLOBAL_STEP] = 41;
        metrics[M_BAD_STEP] = m;
        let r = pollster::block_on(g.run_kernel(
            KernelId::CrossEntropy,
            &Launch::flat(64),
            bytemuck::bytes_of(&u),
            &[bytes(&exploded), bytes(&[0u32; 4]), bytes(&metrics), bytes(&[0u32])],
        ))
        .unwrap();
        assert_eq!(u32s(&r[2])[M_BAD_STEP], want);
    }
}

#[test]
fn eval_accumulate_counts_confusion_and_skips_padding() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let (n, count, batch_index) = (13usize, 30usize, 2u32); // positions 26..39: 4 real, 9 padding
    let logits = randn(&mut rng, n * 10, 3.0);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
    let mut metrics = vec![0u32; M_WORDS];
    metrics[M_EVAL_BATCH] = batch_index;
    metrics[M_CONFUSION + 11] = 5; // existing counts are added to
    let preds = vec![u32::MAX; count];
    let u = CeParams { n: n as u32, count: count as u32, logits: 0, dlogits: 0, y: 0, ..Default::default() };
    let r =
        pollster::block_on(g.run_kernel(KernelId::EvalAccumulate, &Launch::flat(64), bytemuck::bytes_of(&u), &[bytes(&logits), bytes(&labels), bytes(&metrics), bytes(&preds)]))
            .unwrap();
    let m = u32s(&r[2]);
    let p = u32s(&r[3]);
    let mut conf = vec![0u32; 100];
    conf[11] = 5;
    for b in 0..4 {
        let want = cpu::argmax(&logits[b * 10..b * 10 + 10]).0 as u32;
        assert_eq!(p[26 + b], want);
        conf[labels[b] as usize * 10 + want as usize] += 1;
    }
    assert!(p[..26].iter().all(|&v| v == u32::MAX), "predictions outside this batch untouched");
    assert_eq!(&m[M_CONFUSION..M_CONFUSION + 100], &conf[..]);
    assert_eq!(m[M_EVAL_BATCH], batch_index + 1);
    println!("eval_accumulate: 4 real positions counted, 9 padding positions skipped");
}

#[test]
fn sgd_update_matches_cpu() {
    let g = gpu();
    let mut rng = Rng::new(12);
    // The kernel reads vec4s: lengths are multiples of 4 (the packed vector is, of 64).
    for (len, lr, mu, wd) in [(4usize, 0.1f32, 0.9f32, 0.0f32), (1000, 0.001, 0.9, 0.0), (62400, 0.01, 0.5, 5e-4)] {
        let p = randn(&mut rng, len, 1.0);
        let gr = randn(&mut rng, len, 1.0);
        let v = randn(&mut rng, len, 1.0);
        let u = SgdParams { len: (len / 4) as u32, lr, momentum: mu, weight_decay: wd };
        let r = pollster::block_on(g.run_kernel(KernelId::SgdUpdate, &Launch::flat(len / 4), bytemuck::bytes_of(&u), &[bytes(&p), bytes(&gr), bytes(&v)])).unwrap();
        let (mut wp, mut wv) = (p.clone(), v.clone());
        cpu::sgd_update(&mut wp, &mut wv, &gr, len, lr, mu, wd);
        compare(&format!("sgd_update params len{len} lr{lr} mu{mu} wd{wd}"), &f32s(&r[0]), &wp, TOL);
        compare(&format!("sgd_update momentum len{len}"), &f32s(&r[2]), &wv, TOL);
    }
}
