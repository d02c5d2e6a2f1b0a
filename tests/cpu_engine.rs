//! The CPU engine (cpu/layers.rs, cpu/engine.rs) against the plain-loop reference: each fast
//! layer on random inputs of odd shapes with its outputs and scratch poisoned (NaN) first, then
//! whole training steps on 1, 2, 3 and more threads than images, the run's determinism per
//! thread count, and the evaluation. Every check prints its tolerance and max relative error.

use tabcnn::augment::Augment;
use tabcnn::cpu::engine::{LaneWorker, RemoteLanes};
use tabcnn::cpu::{self, layers, CpuEngine, RefEngine};
use tabcnn::data::{self, Cifar};
use tabcnn::model::{init_params, Arch, Layout, Rng, IMG_LEN};
use tabcnn::recipe::Hyper;

mod common;
use common::{compare, conv_case, nan, pooled_case, randn, TOL};

// n, c, h, w, oc, k: a single output without a pooling window, odd conv outputs (an unpooled
// last row and column), LeNet's two layers at a lane of 3, and wider odd channels.
const CONV_SHAPES: [(usize, usize, usize, usize, usize, usize); 6] =
    [(1, 1, 5, 5, 1, 5), (2, 3, 9, 7, 5, 3), (3, 3, 32, 32, 6, 5), (3, 6, 14, 14, 16, 5), (2, 7, 13, 11, 9, 5), (1, 20, 14, 14, 32, 5)];

/// Scratch sizes of one image: im2col [C*K*K, OH*OW] and the unpooled gradient [OC, OH*OW].
fn scratch(c: usize, h: usize, w: usize, oc: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let p = (h - k + 1) * (w - k + 1);
    (nan(c * k * k * p), nan(oc * p))
}

#[test]
fn conv_pool_forward_matches_the_reference() {
    let mut rng = Rng::new(11);
    for &(n, c, h, w, oc, k) in &CONV_SHAPES {
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (inp, weight, bias) = conv_case(&mut rng, n, c, h, w, oc, k);
        let (out_len, pool_len) = (n * oc * oh * ow, n * oc * (oh / 2) * (ow / 2));
        let (mut want, mut want_pool, mut want_arg) = (vec![0.0f32; out_len], vec![0.0f32; pool_len], vec![0u32; pool_len]);
        cpu::conv_pool_forward(&mut want, &mut want_pool, &mut want_arg, &inp, &weight, &bias, n, c, h, w, oc, k);
        let (mut out, mut pool, mut arg, (mut cols, _)) = (nan(out_len), nan(pool_len), vec![0xdead_beef; pool_len], scratch(c, h, w, oc, k));
        layers::conv_pool_forward(&mut out, &mut pool, &mut arg, &mut cols, &inp, &weight, &bias, n, c, h, w, oc, k);
        let name = format!("conv_pool_forward n{n} c{c} {h}x{w} oc{oc} k{k}");
        compare(&format!("{name} out"), &out, &want, TOL);
        compare(&format!("{name} pool"), &pool, &want_pool, TOL);
        // The argmax may differ only where two outputs tie to within rounding.
        let window = (oh / 2) * (ow / 2);
        for (i, (&a, &b)) in want_arg.iter().zip(&arg).enumerate() {
            let tie = b != cpu::NO_ARG && a != cpu::NO_ARG && (want[(i / window.max(1)) * oh * ow + b as usize] - want_pool[i]).abs() <= 1e-5 * want_pool[i].abs().max(1.0);
            assert!(a == b || tie, "{name}: window {i}: argmax {b}, the reference's {a}");
        }
        let same = want_arg.iter().zip(&arg).filter(|(a, b)| a == b).count();
        let none = want_arg.iter().filter(|&&a| a == cpu::NO_ARG).count();
        println!("{name}: {same} of {pool_len} argmaxes as the reference's, the rest rounding ties ({none} windows cut by ReLU)");
    }
}

#[test]
fn conv_pool_backward_matches_the_reference() {
    let mut rng = Rng::new(12);
    for &(n, c, h, w, oc, k) in &CONV_SHAPES {
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (inp, weight, arg, dpool) = pooled_case(&mut rng, n, c, h, w, oc, k);
        let name = format!("conv_pool_backward n{n} c{c} {h}x{w} oc{oc} k{k}");
        let (mut dw, mut db, mut dinp, mut big) = (vec![0.0f32; oc * c * k * k], vec![0.0f32; oc], vec![0.0f32; n * c * h * w], vec![0.0f32; n * oc * oh * ow]);
        cpu::conv_pool_backward_weight(&mut dw, &mut db, &mut big, &dpool, &arg, &inp, n, c, h, w, oc, k);
        cpu::conv_pool_backward_input(&mut dinp, &mut big, &dpool, &arg, &weight, n, c, h, w, oc, k);
        let (mut got_dw, mut got_db, mut got_dinp) = (nan(dw.len()), nan(oc), nan(dinp.len()));
        let (mut cols, mut dout) = scratch(c, h, w, oc, k);
        layers::conv_pool_backward_weight(&mut got_dw, &mut got_db, &mut dout, &mut cols, &dpool, &arg, &inp, n, c, h, w, oc, k);
        let (mut cols, mut dout) = scratch(c, h, w, oc, k);
        layers::conv_pool_backward_input(&mut got_dinp, &mut dout, &mut cols, &dpool, &arg, &weight, n, c, h, w, oc, k);
        compare(&format!("{name} dweight"), &got_dw, &dw, TOL);
        compare(&format!("{name} dbias"), &got_db, &db, TOL);
        compare(&format!("{name} dinp"), &got_dinp, &dinp, TOL);
    }
}

// n, in, out: a batch of 1, ragged sizes, LeNet's fc layers at lanes of 2 and 32.
const LINEAR_SHAPES: [(usize, usize, usize); 6] = [(1, 1, 1), (3, 7, 5), (2, 400, 120), (5, 84, 10), (32, 120, 84), (37, 17, 300)];

#[test]
fn linear_layers_match_the_reference() {
    let mut rng = Rng::new(13);
    for &(n, i, o) in &LINEAR_SHAPES {
        for relu in [false, true] {
            let inp: Vec<f32> = randn(&mut rng, n * i, 1.0).into_iter().map(|v| if relu { v.max(0.0) } else { v }).collect();
            let (weight, bias, dout) = (randn(&mut rng, o * i, 0.2), randn(&mut rng, o, 0.2), randn(&mut rng, n * o, 1.0));
            let name = format!("linear n{n} in{i} out{o} relu{relu}");
            let mut want = vec![0.0f32; n * o];
            cpu::linear_forward(&mut want, &inp, &weight, &bias, n, i, o, relu);
            let mut got = nan(n * o);
            layers::linear_forward(&mut got, &inp, &weight, &bias, n, i, o, relu);
            compare(&format!("{name} forward"), &got, &want, TOL);
            let (mut dinp, mut dw, mut db) = (vec![0.0f32; n * i], vec![0.0f32; o * i], vec![0.0f32; o]);
            cpu::linear_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &weight, n, i, o, relu);
            let (mut got_dinp, mut got_dw, mut got_db) = (nan(n * i), nan(o * i), nan(o));
            layers::linear_backward(&mut got_dinp, &mut got_dw, &mut got_db, &dout, &inp, &weight, n, i, o, relu);
            compare(&format!("{name} dinp"), &got_dinp, &dinp, TOL);
            compare(&format!("{name} dweight"), &got_dw, &dw, TOL);
            compare(&format!("{name} dbias"), &got_db, &db, TOL);
        }
    }
}

fn sample() -> Cifar {
    data::load_path(&data::sample_dir()).expect("the bundled sample loads")
}

/// Odd widths: no dimension a multiple of a SIMD width.
const ODD: Arch = Arch { c1: 7, c2: 9, f1: 33, f2: 17 };

/// Three steps of the engine on `threads` threads against the reference engine from the same
/// weights: the first step's gradient, each step's loss and correct count, the weights and
/// momentum after the last.
fn steps_match(arch: Arch, batch: usize, threads: usize, augment: Augment) {
    let d = sample();
    let hyper = Hyper { net: arch, batch, lr: 0.01, momentum: 0.9, weight_decay: 5e-4, ..Hyper::default() };
    let p = init_params(&Layout::new(arch), 5);
    let mut fast = CpuEngine::new(&p, &hyper, &d.train, &d.test, threads).unwrap();
    fast.set_augment(augment);
    fast.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
    let mut plain = RefEngine::new(arch, p, batch);
    plain.augment = augment;
    let order = Rng::new(9).permutation(d.train.len());
    let name = format!("{} batch {batch} on {} thread(s), augment {augment:?}", arch.name(), fast.threads());
    for s in 0..3 {
        let base = s * batch;
        let got = fast.step(&d.train.images, &d.train.labels, &order, base);
        let want = plain.step(&d.train.images, &d.train.labels, &order, base, hyper.lr, hyper.momentum, hyper.weight_decay);
        assert_eq!(got.correct, want.correct, "{name}: step {s}: correct");
        compare(&format!("{name}: step {s} loss"), &[got.loss_sum], &[want.loss_sum], TOL);
        if s == 0 {
            compare(&format!("{name}: step 0 gradient"), &fast.grads(), &plain.grads, TOL);
        }
    }
    compare(&format!("{name}: weights after 3 steps"), &fast.read_params(), &plain.params, TOL);
    compare(&format!("{name}: momentum after 3 steps"), &fast.read_momentum(), &plain.momentum, TOL);
}

#[test]
fn whole_steps_match_the_reference_on_any_thread_count() {
    // One lane; two and three lanes of unequal sizes; more threads than images (lanes of 1).
    for threads in [1, 2, 3, 8] {
        steps_match(Arch::LENET, 5, threads, Augment::default());
        steps_match(ODD, 7, threads, Augment { flip: true, crop: true, key: 3 });
    }
    steps_match(Arch::LENET, 64, 2, Augment::default());
}

/// The same seed and thread count give the same weights bit for bit, run after run; another
/// thread count, or the shifted rounding, changes the last bits only: their first 3 steps are
/// the same within rounding (further on, SGD amplifies the last bits until the runs part).
#[test]
fn a_thread_count_trains_the_same_weights_every_time() {
    use tabcnn::cpu::Rounding;
    let d = sample();
    let hyper = Hyper { batch: 16, lr: 0.01, ..Hyper::default() };
    let p = init_params(&Layout::lenet(), 1);
    let order = Rng::new(2).permutation(d.train.len());
    let run = |threads: usize, rounding: Rounding, steps: usize| {
        let mut e = CpuEngine::new(&p, &hyper, &d.train, &d.test, threads).unwrap();
        e.set_rounding(rounding);
        e.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
        e.begin_epoch(&order, 0);
        e.train_steps(steps);
        (e.read_params(), e.submit_metrics(), e.grads())
    };
    let here = Rounding::from_env();
    let (a, ma, _) = run(2, here, 40);
    let (b, mb, _) = run(2, here, 40);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "two runs on 2 threads differ");
    assert_eq!(ma, mb, "their metrics differ");
    println!("40 steps on 2 threads twice, rounding {here:?}: bit-identical weights");
    let (two, _, _) = run(2, Rounding::Plain, 3);
    for (threads, rounding) in [(1, Rounding::Plain), (1, Rounding::Shifted), (2, Rounding::Shifted), (3, Rounding::Plain)] {
        let (other, _, _) = run(threads, rounding, 3);
        compare(&format!("weights after 3 steps, {threads} thread(s) rounding {rounding:?} vs 2 threads plain"), &other, &two, TOL);
    }
    // The switch is live: on the same threads, the shifted sums give other bits (a test run
    // under it runs on another rounding, not on the same one twice).
    for threads in [1, 2, 3] {
        let (_, _, plain) = run(threads, Rounding::Plain, 1);
        let (_, _, shifted) = run(threads, Rounding::Shifted, 1);
        let differ = plain.iter().zip(&shifted).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        println!("{threads} thread(s): {differ} of {} gradient elements differ in their bits between the plain and the shifted rounding", plain.len());
        assert!(differ > plain.len() / 10, "the shifted rounding changed only {differ} gradient elements");
        compare(&format!("gradient on {threads} thread(s), shifted vs plain rounding"), &shifted, &plain, TOL);
    }
}

/// The evaluation and the predictions over threads are the reference's forward, pieces of
/// PREDICT_BATCH and a ragged last piece included.
#[test]
fn predictions_match_the_reference() {
    let d = sample();
    let p = init_params(&Layout::new(ODD), 4);
    let hyper = Hyper { net: ODD, batch: 4, ..Hyper::default() };
    let plain = RefEngine::new(ODD, p.clone(), 4);
    for threads in [1, 3] {
        let fast = CpuEngine::new(&p, &hyper, &d.train, &d.test, threads).unwrap();
        let index: Vec<u32> = (0..251).map(|i| (i * 3) as u32).collect();
        let want: Vec<f32> = plain.probabilities(&d.test.images, &index).concat();
        let got: Vec<f32> = fast.probabilities(&d.test.images, &index).concat();
        compare(&format!("probabilities of 251 records on {threads} thread(s)"), &got, &want, TOL);
        let all = pollster::block_on(fast.evaluate()).unwrap();
        let ref_preds = plain.predict(&d.test.images, d.test.len());
        let same = all.preds.iter().zip(&ref_preds).filter(|(a, b)| a == b).count();
        println!("evaluation on {threads} thread(s): {same} of {} predictions as the reference's", d.test.len());
        assert!(same + 2 >= d.test.len(), "{} predictions differ from the reference's", d.test.len() - same);
    }
    // A record that is not there is refused with its number.
    let fast = CpuEngine::new(&p, &hyper, &d.train, &d.test, 2).unwrap();
    let e = fast.inspect(d.test.len()).unwrap_err();
    assert!(e.message.contains(&d.test.len().to_string()), "{e:?}");
    assert_eq!(fast.inspect(3).unwrap().x.len(), IMG_LEN);
}

/// An evaluation a Pause gives up stops between two pieces (`stop` is asked after each piece
/// but the last); one never stopped is `evaluate`'s, after the same pieces.
#[test]
fn an_evaluation_stops_between_its_pieces() {
    let d = sample();
    let p = init_params(&Layout::new(ODD), 4);
    let e = CpuEngine::new(&p, &Hyper { net: ODD, batch: 4, ..Hyper::default() }, &d.train, &d.test, 2).unwrap();
    let pieces = d.test.len().div_ceil(100);
    assert!(pieces >= 3, "the sample's test set is {} images", d.test.len());
    let asked = std::cell::Cell::new(0);
    let stopped = pollster::block_on(e.evaluate_unless(&|| {
        asked.set(asked.get() + 1);
        asked.get() == 2
    }));
    assert_eq!((stopped.unwrap(), asked.get()), (None, 2), "given up after its second piece");
    asked.set(0);
    let whole = pollster::block_on(e.evaluate_unless(&|| {
        asked.set(asked.get() + 1);
        false
    }));
    println!("{} test images in {pieces} pieces: stopped after 2; never stopped, asked {} times", d.test.len(), asked.get());
    assert_eq!(asked.get(), pieces - 1);
    assert_eq!(whole.unwrap(), Some(pollster::block_on(e.evaluate()).unwrap()));
}

/// The views' predictor (weights of its own, the fast layers' forward) against the reference:
/// logits of a ragged, shuffled index (pieces of 100, 100 and 51 split over the lanes), the
/// probabilities and a range's predictions, on every thread count (a lane's size changes the
/// GEMM's blocking, so the rounding: the bits differ between thread counts); wrong weights
/// refused with their count.
#[test]
fn the_predictor_matches_the_reference_on_any_thread_count() {
    let d = sample();
    for (arch, seed) in [(Layout::lenet().arch, 5), (ODD, 6)] {
        // Scaled up so the probabilities are far from uniform (a wrong logit shows).
        let p: Vec<f32> = init_params(&Layout::new(arch), seed).iter().map(|v| 2.0 * v).collect();
        let plain = RefEngine::new(arch, p.clone(), 4);
        let index: Vec<u32> = (0..251).map(|i| ((i * 37) % d.test.len()) as u32).collect();
        let want_probs: Vec<f32> = plain.probabilities(&d.test.images, &index).concat();
        let want_preds = plain.predict_range(&d.test.images, 7, 213);
        for threads in [1, 2, 3, 8] {
            let net = cpu::Predictor::new(arch, p.clone(), threads).unwrap();
            assert_eq!(net.arch(), arch);
            let logits = net.logits(&d.test.images, &index);
            assert_eq!(logits.len(), index.len() * 10);
            let got: Vec<f32> = net.probabilities(&d.test.images, &index).concat();
            compare(&format!("{} predictor probabilities of 251 records on {threads} thread(s)", arch.name()), &got, &want_probs, TOL);
            let preds = net.predict_range(&d.test.images, 7, 213);
            let same = preds.iter().zip(&want_preds).filter(|(a, b)| a == b).count();
            println!("{} predictor on {threads} thread(s): {same} of {} predictions as the reference's", arch.name(), preds.len());
            assert!(preds.len() == want_preds.len() && same + 1 >= preds.len(), "{} predictions differ from the reference's", preds.len() - same);
        }
    }
    let e = cpu::Predictor::new(ODD, init_params(&Layout::lenet(), 0), 1).err().expect("refused").message;
    assert!(e.contains("weights given"), "{e}");
}

/// The page's kept predictor: new weights replace the old ones (its logits are then a fresh
/// predictor's, bit for bit), another network makes it anew, and wrong weights are refused
/// with the old ones kept.
#[test]
fn a_kept_predictor_takes_new_weights_and_networks() {
    let d = sample();
    let index: Vec<u32> = (0..57).collect();
    let fresh = |arch: Arch, p: &[f32]| cpu::Predictor::new(arch, p.to_vec(), 2).unwrap().logits(&d.test.images, &index);
    let mut kept = cpu::KeptPredictor::default();
    assert!(kept.get().is_none());
    let lenet = Layout::lenet().arch;
    let steps = [(lenet, init_params(&Layout::lenet(), 1)), (lenet, init_params(&Layout::lenet(), 2)), (ODD, init_params(&Layout::new(ODD), 3))];
    for (arch, p) in &steps {
        kept.set(*arch, p, 2).unwrap();
        let got = kept.get().unwrap().logits(&d.test.images, &index);
        assert!(got.iter().zip(fresh(*arch, p)).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: the kept predictor's logits are not a fresh one's", arch.name());
    }
    let before = kept.get().unwrap().logits(&d.test.images, &index);
    let e = kept.set(ODD, &steps[0].1, 2).unwrap_err().message;
    assert!(e.contains("weights given"), "{e}");
    assert_eq!(before, kept.get().unwrap().logits(&d.test.images, &index), "refused weights changed the predictor");
}

/// What cannot train is refused before anything is allocated, with what is wrong.
#[test]
fn bad_settings_are_refused_with_their_reason() {
    let d = sample();
    let p = init_params(&Layout::lenet(), 0);
    let refuse = |hyper: Hyper, params: &[f32]| CpuEngine::new(params, &hyper, &d.train, &d.test, 2).err().expect("refused").message;
    let m = refuse(Hyper { batch: 0, ..Hyper::default() }, &p);
    assert!(m.contains("batch 0"), "{m}");
    let m = refuse(Hyper { batch: d.train.len() + 1, ..Hyper::default() }, &p);
    assert!(m.contains(&format!("{} training records", d.train.len())), "{m}");
    let m = refuse(Hyper::default(), &p[1..]);
    assert!(m.contains("weights given"), "{m}");
    let m = refuse(
        Hyper { batch: 1024, net: Arch { c1: 256, c2: 256, f1: 256, f2: 256 }, ..Hyper::default() },
        &init_params(&Layout::new(Arch { c1: 256, c2: 256, f1: 256, f2: 256 }), 0),
    );
    assert!(m.contains("MiB"), "{m}");
    let mut e = CpuEngine::new(&p, &Hyper::default(), &d.train, &d.test, 3).unwrap();
    assert!(e.set_batch(0).is_err() && e.batch() == 4, "a refused batch leaves the engine as it was");
    e.set_batch(9).unwrap();
    assert_eq!((e.batch(), e.device()), (9, "CPU engine (3 threads)".to_string()));
}

/// Helpers as the tab's workers are, in this process: each start keeps the lane's inputs, each
/// finish trains it on its own LaneWorker (this same code, memory of its own); `fail_at` makes
/// the nth finish fail, as a helper that crashed or missed its deadline.
/// A started lane: its weights, images, labels and batch.
type Job = (Vec<f32>, Vec<f32>, Vec<u32>, usize);

struct FakeHelpers {
    workers: Vec<LaneWorker>,
    pending: Vec<Option<Job>>,
    finishes: usize,
    fail_at: Option<usize>,
}

impl RemoteLanes for FakeHelpers {
    fn count(&self) -> usize {
        self.workers.len()
    }
    fn prepare(&mut self, arch: Arch, params: usize, images: usize) -> Result<(), String> {
        assert_eq!(params, Layout::new(arch).total, "prepare gets the packed parameter count");
        self.workers = (0..self.workers.len()).map(|_| LaneWorker::new(arch, images)).collect();
        Ok(())
    }
    fn start(&mut self, i: usize, _arch: Arch, params: &[f32], x: &[f32], y: &[u32], batch: usize) -> Result<(), String> {
        self.pending[i] = Some((params.to_vec(), x.to_vec(), y.to_vec(), batch));
        Ok(())
    }
    fn finish(&mut self, i: usize, grads: &mut [f32], _local: std::time::Duration) -> Result<(f32, u32), String> {
        self.finishes += 1;
        if Some(self.finishes) == self.fail_at {
            return Err("helper 0 did not finish its lane within 30 s".into());
        }
        let (params, x, y, batch) = self.pending[i].take().expect("started");
        let w = &mut self.workers[i];
        let (p, wx, wy) = w.inputs(y.len());
        p.copy_from_slice(&params);
        wx.copy_from_slice(&x);
        wy.copy_from_slice(&y);
        let (g, loss, correct) = w.train(batch);
        grads.copy_from_slice(g);
        Ok((loss, correct))
    }
}

fn fake(helpers: usize, fail_at: Option<usize>) -> Box<dyn RemoteLanes + Send> {
    Box::new(FakeHelpers { workers: (0..helpers).map(|_| LaneWorker::new(Arch::LENET, 1)).collect(), pending: vec![None; helpers], finishes: 0, fail_at })
}

/// Lanes computed by helpers give the weights this process's threads give with as many lanes,
/// bit for bit; a helper that fails mid-run is let go and its lanes computed here, the run
/// going on with the same bits; a batch too small to split stays on this thread.
#[test]
fn helpers_train_the_same_weights_as_threads() {
    let d = sample();
    let hyper = Hyper { net: ODD, batch: 27, lr: 0.01, ..Hyper::default() };
    let p = init_params(&Layout::new(ODD), 3);
    let order = Rng::new(4).permutation(d.train.len());
    let run = |threads: usize, remote: Option<Box<dyn RemoteLanes + Send>>| {
        let mut e = CpuEngine::new(&p, &hyper, &d.train, &d.test, threads).unwrap();
        if let Some(r) = remote {
            e.set_remote(r).unwrap();
        }
        e.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
        e.begin_epoch(&order, 0);
        e.train_steps(6);
        let note = e.threads_note();
        (e.read_params(), e.submit_metrics(), e.threads(), note)
    };
    let (local, m_local, t, _) = run(3, None);
    let (helped, m_helped, th, note) = run(1, Some(fake(2, None)));
    assert_eq!((t, th, note), (3, 3, None));
    assert!(local.iter().zip(&helped).all(|(a, b)| a.to_bits() == b.to_bits()), "helpers' lanes differ from threads' lanes");
    assert_eq!(m_local, m_helped);
    // The 5th finish fails (step 3's second helper): the rest is computed here.
    let (failed, m_failed, _, note) = run(1, Some(fake(2, Some(5))));
    assert!(local.iter().zip(&failed).all(|(a, b)| a.to_bits() == b.to_bits()), "a failed helper changed the weights");
    assert_eq!(m_local, m_failed);
    let note = note.expect("the failure is told");
    println!("6 steps of batch 27 on 3 lanes: threads, helpers and a helper failing at step 3 give bit-identical weights; {note}");
    assert!(note.contains("did not finish"), "{note}");
    // Fresh helpers lent after the loss (the tab replaces a lost one) take their lanes again:
    // the note goes, and the weights stay those of the threads.
    let mut e = CpuEngine::new(&p, &hyper, &d.train, &d.test, 1).unwrap();
    e.set_remote(fake(2, Some(5))).unwrap();
    e.set_hyper(hyper.lr, hyper.momentum, hyper.weight_decay);
    e.begin_epoch(&order, 0);
    e.train_steps(3);
    assert!(e.remote_lost().is_some() && e.threads() == 1, "the helper's failure at step 3 is seen");
    e.set_remote(fake(2, None)).unwrap();
    assert_eq!((e.remote_lost(), e.threads(), e.threads_note()), (None, 3, None));
    e.train_steps(3);
    let renewed = e.read_params();
    assert!(local.iter().zip(&renewed).all(|(a, b)| a.to_bits() == b.to_bits()), "replaced helpers changed the weights");
    // Batch 4 over 1 + 2 would be lanes of 1 image: it stays on this thread, and says why.
    let mut e = CpuEngine::new(&p, &Hyper { batch: 4, ..hyper.clone() }, &d.train, &d.test, 1).unwrap();
    e.set_remote(fake(2, None)).unwrap();
    let note = e.threads_note().expect("a note");
    assert!(e.threads() == 1 && note.contains("lanes of 8 images"), "{note}");
    e.set_batch(24).unwrap();
    assert_eq!((e.threads(), e.threads_note()), (3, None));
}
