//! Whole training steps and evaluation: the GPU engine against the CPU reference from identical
//! weights; training learns; a seed names one run; a diverging run stops at its step.

use tabcnn::cpu::{all_cores, CpuEngine};
use tabcnn::data::{self, Cifar};
use tabcnn::gpu::{Clock, EngineError, ErrorKind, GpuEngine};
use tabcnn::model::{init_params, Arch, Layout, Rng};
use tabcnn::recipe::Hyper;
use tabcnn::train::{self, Engine, TrainError};

mod common;
use common::{compare, gpu};

fn sample() -> Cifar {
    data::load_path(&data::sample_dir()).expect("the bundled sample loads")
}

/// Odd widths (conv blocks of 8 channels cut short, odd fc sizes).
const ODD: Arch = Arch { c1: 7, c2: 9, f1: 33, f2: 17 };
/// conv2 of 70 x 64 x 5 x 5 = 112,000 weights: past the 16,384 the GPU conv kernels once read
/// through a 64 KiB uniform window.
const WIDER: Arch = Arch { c1: 64, c2: 70, f1: 33, f2: 17 };

#[test]
fn gpu_and_cpu_parameters_agree_after_three_steps() {
    let g = gpu();
    let d = sample();
    for (batch, wd, net) in [(4usize, 0.0f32, Arch::LENET), (7, 5e-4, Arch::LENET), (5, 5e-4, Arch::WIDE), (3, 0.0, ODD), (2, 0.0, WIDER)] {
        let l = Layout::new(net);
        let hyper = Hyper { batch, lr: 0.01, weight_decay: wd, net, ..Hyper::default() };
        let p0 = init_params(&l, 5);
        let order = Rng::new(9).permutation(d.train.len());
        let mut gpu_e = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p0, batch, &hyper, &d.train, &d.test)).unwrap());
        let mut cpu_e = Engine::Cpu(CpuEngine::new(&p0, &hyper, &d.train, &d.test, all_cores()).unwrap());
        for e in [&mut gpu_e, &mut cpu_e] {
            e.begin_epoch(&order, 0);
            e.train_steps(3);
        }
        let mg = pollster::block_on(gpu_e.read_metrics()).unwrap();
        let mc = pollster::block_on(cpu_e.read_metrics()).unwrap();
        assert_eq!((mg.steps, mg.seen, mg.correct), (mc.steps, mc.seen, mc.correct));
        compare(&format!("summed loss of 3 steps, batch {batch}"), &[mg.loss_sum], &[mc.loss_sum], 1e-4);
        let pg = pollster::block_on(gpu_e.read_params()).unwrap();
        let pc = pollster::block_on(cpu_e.read_params()).unwrap();
        assert_ne!(pc, p0, "the steps changed the parameters");
        for s in &l.specs {
            compare(&format!("{} {} after 3 steps, batch {batch}, wd {wd}", net.name(), s.name), &pg[s.range()], &pc[s.range()], 1e-4);
        }
        if let Engine::Gpu(ge) = &gpu_e {
            let mom = pollster::block_on(ge.read_momentum()).unwrap();
            if let Engine::Cpu(ce) = &cpu_e {
                compare(&format!("momentum after 3 steps, batch {batch}"), &mom, &ce.read_momentum(), 1e-4);
            }
        }
    }
}

#[test]
fn the_same_steps_give_the_same_weights_twice_on_the_gpu() {
    // Every sum runs in a fixed order (no atomics): the same seed, order and steps give the
    // same bits on one adapter.
    let g = gpu();
    let d = sample();
    let hyper = Hyper { batch: 16, lr: 0.01, ..Hyper::default() };
    let p0 = init_params(&Layout::lenet(), 2);
    let order = Rng::new(4).permutation(d.train.len());
    let runs: Vec<Vec<f32>> = (0..2)
        .map(|_| {
            let mut e = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p0, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
            e.begin_epoch(&order, 0);
            e.train_steps(20);
            pollster::block_on(e.read_params()).unwrap()
        })
        .collect();
    assert_ne!(runs[0], p0);
    assert!(runs[0].iter().zip(&runs[1]).all(|(a, b)| a.to_bits() == b.to_bits()), "two runs of the same 20 steps differ");
    println!("20 steps at batch 16, twice: {} parameters bit for bit the same", runs[0].len());
}

/// With overlap on, the GPU runs one chunk ahead of the one being read, and the run is the
/// run without it, bit for bit: the same chunks, the same metrics, the same weights.
#[test]
fn a_chunk_in_flight_while_the_last_is_read_changes_nothing() {
    use tabcnn::train::Session;
    let g = gpu();
    let mut d = sample();
    d.train.truncate(400); // 25 steps an epoch at batch 16
    let hyper = Hyper { batch: 16, lr: 0.01, epochs: 2, ..Hyper::default() };
    let p0 = init_params(&Layout::lenet(), 6);
    let engine = || Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p0, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let mut runs = Vec::new();
    for overlap in [false, true] {
        let mut s = Session::new(engine(), &hyper);
        s.set_overlap(overlap);
        let mut chunks = Vec::new();
        while !s.done() {
            let c = s.run_chunk(4).block_ok();
            chunks.push((c.progress.epoch, c.progress.step, c.progress.global_step, c.progress.loss.to_bits(), c.progress.train_accuracy.to_bits(), c.epoch_end));
        }
        let params = pollster::block_on(s.engine.read_params()).unwrap();
        runs.push((chunks, params));
    }
    let ((c0, p_off), (c1, p_on)) = (&runs[0], &runs[1]);
    println!("{} chunks of 4 steps over 2 epochs of 25 steps, without and with a chunk in flight", c0.len());
    assert_eq!(c0.len(), 14, "7 chunks an epoch (6 of 4 steps, one of 1)");
    assert_eq!(c0, c1, "the chunks' positions and metrics are the same bits");
    assert!(p_off.iter().zip(p_on).all(|(a, b)| a.to_bits() == b.to_bits()), "the weights are the same bits");

    // The engine is one chunk ahead of the session until it settles; the checkpoint settles,
    // and the next run_chunk returns the chunk that was in flight.
    let mut s = Session::new(engine(), &hyper);
    s.set_overlap(true);
    s.run_chunk(4).block_ok();
    assert_eq!(s.global_step(), 4);
    let ahead = pollster::block_on(s.engine.read_params()).unwrap();
    let ck = pollster::block_on(s.checkpoint()).unwrap();
    assert_eq!((ck.epoch_step, ck.global_step), (8, 8), "the checkpoint includes the chunk that was in flight");
    assert_eq!(ck.params, ahead, "its weights are the engine's");
    let c = s.run_chunk(4).block_ok();
    assert_eq!(c.progress.global_step, 8, "the chunk read by the checkpoint comes next");
    assert_eq!((c.progress.loss.to_bits(), c.progress.train_accuracy.to_bits()), (c0[1].3, c0[1].4), "with the metrics of steps 5-8");
    // Dropped with a chunk in flight: its readback is let go, and a new session on the same
    // engine trains as a fresh engine does.
    s.run_chunk(4).block_ok();
    let mut e = {
        let s = s; // the rest of it, the chunk in flight included, is dropped here
        s.engine
    };
    for _ in 0..3 {
        e.write_state(&p0, &vec![0.0; p0.len()]).unwrap();
        let mut again = Session::new(&mut e, &hyper);
        again.set_overlap(true);
        let c = again.run_chunk(4).block_ok();
        assert_eq!((c.progress.global_step, c.progress.loss.to_bits()), (c0[0].2, c0[0].3), "a session after one dropped mid-flight starts clean");
    }
}

#[test]
fn a_training_step_is_shaped_for_a_real_gpu() {
    // LeNet at batch 64: at most 14 dispatches in one compute pass, no copies, and every
    // kernel doing 5 % or more of the step's multiply-adds launches at least 8,192
    // invocations in workgroups of at least 64.
    let g = gpu();
    let d = sample();
    for (net, batch) in [(Arch::LENET, 64usize), (Arch::WIDE, 64), (Arch::LENET, 256)] {
        let hyper = Hyper { batch, net, ..Hyper::default() };
        let e = pollster::block_on(GpuEngine::new(&g, &init_params(&Layout::new(net), 0), batch, &hyper, &d.train, &d.test)).unwrap();
        let s = e.step_shape();
        println!("{} batch {batch}: {} dispatches, {} pass, {} copies, {} multiply-adds", net.name(), s.kernels.len(), s.passes, s.copies, s.macs());
        assert!(s.kernels.len() <= 14 && s.passes == 1 && s.copies == 0, "{s:?}");
        for (label, l) in &s.kernels {
            let share = l.macs as f64 / s.macs() as f64;
            println!("  {label:<40} {:>8} invocations in workgroups of {:>3}, {:>5.1} % of the multiply-adds", l.invocations(), l.wg, 100.0 * share);
            if share >= 0.05 {
                assert!(l.invocations() >= 8192 && l.wg >= 64, "{label}: {} invocations in workgroups of {}", l.invocations(), l.wg);
            }
        }
    }
    // The shape is counted from what is recorded (the step's own encoding into a tally), so a
    // second pass or a copy in a step would show: the tally counts them.
    use tabcnn::gpu::{Recorder, Tally};
    let mut t = Tally::default();
    t.compute_pass("one", &[]);
    t.compute_pass("two", &[]);
    let buf = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("tally probe"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    t.copy(&buf, 0, &buf, 8, 4);
    assert_eq!((t.passes, t.copies, t.kernels.len()), (2, 1, 0), "a tally counts every pass and copy recorded into it");
}

#[test]
fn the_profile_times_every_kernel_of_the_step() {
    let g = gpu();
    let d = sample();
    let hyper = Hyper::default();
    let e = pollster::block_on(GpuEngine::new(&g, &init_params(&Layout::lenet(), 0), hyper.batch, &hyper, &d.train, &d.test)).unwrap();
    let p = pollster::block_on(e.profile(3)).unwrap();
    let want = if g.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) { Clock::Timestamps } else { Clock::WallClock };
    println!("profile by {:?}: {:?}", p.clock, p.rows);
    assert_eq!(p.clock, want, "timestamps exactly where the device has them");
    let shape = e.step_shape();
    let labels: Vec<&str> = shape.kernels.iter().map(|k| k.0.trim_start_matches("train ")).collect();
    assert_eq!(p.rows.iter().map(|r| r.0.as_str()).take(labels.len()).collect::<Vec<_>>(), labels, "a row per kernel, in step order");
    assert_eq!(p.rows.len(), labels.len() + 1, "and the whole step");
    assert!(p.rows.iter().all(|r| r.1.is_finite() && r.1 >= 0.0) && p.rows.last().unwrap().1 > 0.0, "{:?}", p.rows);
    let inside = g.device.features().contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
    println!("inside the step's pass ({}): {:?}", if inside { "the device writes timestamps there" } else { "not on this device" }, p.in_step);
    assert_eq!(p.in_step.is_some(), inside, "times inside the pass exactly where the device can write timestamps there");
    if let Some(t) = &p.in_step {
        assert_eq!(t.len(), labels.len(), "a time per kernel");
        assert!(t.iter().all(|v| v.is_finite() && *v >= 0.0) && t.iter().sum::<f64>() > 0.0, "{t:?}");
    }
}

#[test]
fn gpu_evaluation_matches_cpu_predictions() {
    let g = gpu();
    let d = sample();
    let p = init_params(&Layout::lenet(), 1);
    let hyper = Hyper::default();
    let ge = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, 4, &hyper, &d.train, &d.test)).unwrap());
    let ce = Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let rg = pollster::block_on(ge.evaluate()).unwrap();
    let rc = pollster::block_on(ce.evaluate()).unwrap();
    assert_eq!(rg.total(), 1000);
    let same = rg.preds.iter().zip(&rc.preds).filter(|(a, b)| a == b).count();
    println!("eval: GPU {:.1} %, CPU {:.1} %, {same}/1000 identical predictions", 100.0 * rg.accuracy(), 100.0 * rc.accuracy());
    // Float rounding may flip a near-tie; anything more is a bug.
    assert!(same >= 998, "only {same} of 1000 predictions agree");
    // The confusion matrix counted on the GPU matches the predictions read back.
    assert_eq!(rg.confusion, tabcnn::outputs::EvalResult::from_preds(rg.preds.clone(), &d.test.labels).confusion);
    // Evaluating twice gives the same answer (the counters are reset).
    assert_eq!(pollster::block_on(ge.evaluate()).unwrap(), rg);
}

fn run(engine: &mut Engine, hyper: &Hyper) -> Result<train::TrainReport, TrainError> {
    pollster::block_on(train::train(engine, hyper, 100, |_| {}))
}

#[test]
fn training_learns_and_a_seed_names_one_run() {
    // The recipe's lr 0.001 barely moves in one pass over 2,000 images (PyTorch gets ~11 % on
    // this data): common::learning_hyper learns clearly in seconds. Where the run lands depends
    // on the machine's rounding (SGD amplifies the last bits), so learning is judged against
    // chance by its statistics (common::learned_bar), not against a measured run.
    let d = sample();
    let hyper = Hyper { seed: 0, ..common::learning_hyper() };
    let p = init_params(&Layout::lenet(), hyper.seed);
    let mut a = Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let ra = run(&mut a, &hyper).unwrap();
    let acc = pollster::block_on(a.evaluate()).unwrap().accuracy();
    println!("6 epochs on 2,000 images: loss {:.3} -> {:.3}", ra.losses[0], ra.losses.last().unwrap());
    assert!(ra.losses.last().unwrap() < &ra.losses[0], "the loss fell: {:?}", ra.losses);
    common::assert_learned("the CPU engine after 6 epochs", acc, &d.test.labels);
    let mut b = Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let rb = run(&mut b, &Hyper { epochs: 1, ..hyper.clone() }).unwrap();
    assert_eq!(&ra.losses[..rb.losses.len()], &rb.losses[..], "same seed, same loss curve");
    let other = Hyper { epochs: 1, seed: 1, ..hyper.clone() };
    let mut c = Engine::Cpu(CpuEngine::new(&init_params(&Layout::lenet(), 1), &other, &d.train, &d.test, all_cores()).unwrap());
    let rc = run(&mut c, &other).unwrap();
    assert_ne!(rc.losses, rb.losses, "another seed, another run");
}

#[test]
fn gpu_training_learns() {
    let g = gpu();
    let d = sample();
    let hyper = common::learning_hyper();
    let p = init_params(&Layout::lenet(), 0);
    let mut ge = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let r = run(&mut ge, &hyper).unwrap();
    println!("GPU, 6 epochs on 2,000 images: loss {:.3} -> {:.3}", r.losses[0], r.losses.last().unwrap());
    common::assert_learned("the GPU engine after 6 epochs", pollster::block_on(ge.evaluate()).unwrap().accuracy(), &d.test.labels);
}

/// Both engines take the same steps all along an epoch: from the CPU run's weights and momentum
/// at five points of it (the start, each quarter, the last steps), the GPU and a fresh CPU
/// engine each take the next 3 steps of the epoch, and their losses, weights and momentum
/// agree within rounding (common::TOL). A whole epoch's curves would not: SGD amplifies the
/// engines' last-bit differences step by step until the runs are apart by whatever the
/// machine's arithmetic makes them.
#[test]
fn gpu_and_cpu_take_the_same_steps_along_an_epoch() {
    let g = gpu();
    let d = sample();
    let hyper = Hyper { lr: 0.01, weight_decay: 5e-4, ..Hyper::default() };
    let p0 = init_params(&Layout::lenet(), 0);
    let order = Rng::new(7).permutation(d.train.len());
    let steps = d.train.len() / hyper.batch;
    let mut run = Engine::Cpu(CpuEngine::new(&p0, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let mut gpu_e = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p0, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let mut cpu_e = Engine::Cpu(CpuEngine::new(&p0, &hyper, &d.train, &d.test, all_cores()).unwrap());
    run.begin_epoch(&order, 0);
    let mut at = 0;
    for point in [0, steps / 4, steps / 2, 3 * steps / 4, steps - 3] {
        run.train_steps(point - at);
        at = point;
        let (p, m) = (pollster::block_on(run.read_params()).unwrap(), pollster::block_on(run.read_momentum()).unwrap());
        let mut got = Vec::new();
        for e in [&mut gpu_e, &mut cpu_e] {
            e.write_state(&p, &m).unwrap();
            e.begin_epoch(&order, point);
            pollster::block_on(e.read_metrics()).unwrap();
            e.train_steps(3);
            let metrics = pollster::block_on(e.read_metrics()).unwrap();
            got.push((metrics, pollster::block_on(e.read_params()).unwrap(), pollster::block_on(e.read_momentum()).unwrap()));
        }
        let ((mg, pg, vg), (mc, pc, vc)) = (&got[0], &got[1]);
        let name = |t: &str| format!("steps {}-{} of the epoch from the same weights, GPU vs CPU: {t}", point + 1, point + 3);
        assert_eq!((mg.steps, mg.correct), (mc.steps, mc.correct), "{}", name("steps and correct predictions"));
        compare(&name("summed loss"), &[mg.loss_sum], &[mc.loss_sum], common::TOL);
        assert_ne!(pc, &p, "the steps moved the weights");
        compare(&name("weights"), pg, pc, common::TOL);
        compare(&name("momentum"), vg, vc, common::TOL);
    }
}

#[test]
fn a_diverging_run_stops_at_its_step() {
    let g = gpu();
    let d = sample();
    let hyper = Hyper { lr: 10.0, epochs: 1, ..Hyper::default() };
    let p = init_params(&Layout::lenet(), 0);
    let engines = [
        Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, 4, &hyper, &d.train, &d.test)).unwrap()),
        Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()),
    ];
    let mut steps = Vec::new();
    for mut e in engines {
        match run(&mut e, &hyper) {
            Err(TrainError::Diverged { step, epoch, epoch_step }) => {
                let msg = TrainError::Diverged { step, epoch, epoch_step }.to_string();
                println!("{}: {msg}", e.device());
                assert!(msg.contains(&format!("step {}", step + 1)));
                assert_eq!(epoch, 1);
                assert_eq!(epoch_step as u64, step);
                steps.push(step);
            }
            other => panic!("lr 10 should diverge, got {other:?}"),
        }
    }
    assert!(steps[0] < 100, "divergence caught early, at step {}", steps[0]);
}

#[test]
fn a_run_resumed_from_a_checkpoint_continues_exactly() {
    resume_case(Hyper { lr: 0.01, epochs: 2, seed: 3, ..Hyper::default() });
}

#[test]
fn an_augmented_scheduled_run_resumes_exactly_and_matches_between_engines() {
    use tabcnn::recipe::Schedule;
    let hyper = Hyper { lr: 0.02, epochs: 2, seed: 4, flip: true, crop: true, schedule: Schedule::Cosine, ..Hyper::default() };
    let augmented = resume_case(hyper.clone());
    // The augmentation and the schedule changed the run.
    let plain = resume_case(Hyper { flip: false, crop: false, schedule: Schedule::Constant, ..hyper });
    let moved = plain.iter().zip(&augmented).filter(|(a, b)| (*a - *b).abs() > 1e-4).count();
    println!("{moved} of {} parameters differ from the plain run", plain.len());
    assert!(moved > plain.len() / 2);
}

/// Train 2 epochs of a 200-image subset in chunks; stop in the middle of epoch 2, move the
/// checkpoint to a fresh engine and finish: on the CPU the parameters are the uninterrupted
/// run's bit for bit. On the GPU (as the page resumes after a lost device), the first 3 steps
/// from the checkpoint are the CPU's within rounding (the same records, augmentation draws and
/// learning rate, common::TOL), and the run ends at the same step. Returns the parameters of
/// the uninterrupted run.
fn resume_case(hyper: Hyper) -> Vec<f32> {
    use tabcnn::train::Session;
    let g = gpu();
    let mut d = sample();
    d.train.truncate(200);
    let p = init_params(&Layout::lenet(), 3);
    let fresh_cpu = || Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let mut whole = Session::new(fresh_cpu(), &hyper);
    let mut chunks = 0;
    while !whole.done() {
        whole.run_chunk(7).block_ok();
        chunks += 1;
    }
    assert!(chunks > 14, "ran in chunks ({chunks})");
    let want = pollster::block_on(whole.engine.read_params()).unwrap();
    let mut a = Session::new(fresh_cpu(), &hyper);
    while a.epoch() < 2 || a.epoch_step() < 20 {
        a.run_chunk(10).block_ok();
    }
    let ck = pollster::block_on(a.checkpoint()).unwrap();
    assert_eq!((ck.epoch, ck.epoch_step), (2, 20));
    let mut on_cpu = Session::resume(fresh_cpu(), &hyper, ck.clone()).unwrap();
    let gpu_e = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let mut on_gpu = Session::resume(gpu_e, &hyper, ck).unwrap();
    let first = |s: &mut Session<Engine>| {
        s.run_chunk(3).block_ok();
        pollster::block_on(s.engine.read_params()).unwrap()
    };
    compare("params 3 steps after the checkpoint, resumed on the GPU vs on the CPU", &first(&mut on_gpu), &first(&mut on_cpu), common::TOL);
    for s in [&mut on_cpu, &mut on_gpu] {
        while !s.done() {
            s.run_chunk(9).block_ok();
        }
        assert_eq!(s.global_step(), whole.global_step());
    }
    assert_eq!(pollster::block_on(on_cpu.engine.read_params()).unwrap(), want, "a resumed CPU run is bit-identical");
    want
}

/// A saved point is a file from the outside: one that does not fit the engine it would continue
/// on (its weights' length, its epoch and step, its order, its shuffle state) is refused by
/// name, before any of it reaches the engine, on the GPU and the CPU alike; a good one goes on.
#[test]
fn a_saved_point_that_does_not_fit_is_refused_before_it_is_used() {
    use tabcnn::train::{Checkpoint, Session};
    let g = gpu();
    let mut d = sample();
    d.train.truncate(200); // 50 steps an epoch at batch 4
    let hyper = Hyper { lr: 0.01, epochs: 2, ..Hyper::default() };
    let p = init_params(&Layout::lenet(), 3);
    let mut a = Session::new(Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()), &hyper);
    a.run_chunk(10).block_ok();
    let good = pollster::block_on(a.checkpoint()).unwrap();
    type Damage = Box<dyn Fn(&mut Checkpoint)>;
    let bad: Vec<(&str, Damage)> = vec![
        ("it holds 62401 weights and 62400 momentum values, and the lenet network has 62400", Box::new(|c| c.params.push(0.0))),
        ("and the lenet network has", Box::new(|c| (c.params, c.momentum) = (vec![0.0; 10], vec![0.0; 10]))),
        ("non-finite value", Box::new(|c| c.momentum[7] = f32::INFINITY)),
        ("it is at epoch 1, step 51; an epoch here has 50 steps", Box::new(|c| c.epoch_step = 51)),
        ("it is at epoch 0", Box::new(|c| c.epoch = 0)),
        ("its epoch order has 199 records, and the training set has 200", Box::new(|c| _ = c.order.pop())),
        ("not an order of the 200 training records (record 200)", Box::new(|c| c.order[3] = 200)),
        ("not an order of the 200 training records (record 5)", Box::new(|c| c.order[0..2].copy_from_slice(&[5, 5]))),
        ("shuffle state is all zeros", Box::new(|c| c.rng = Rng::from_state([0; 4]))),
    ];
    for (says, damage) in &bad {
        let mut ck = good.clone();
        damage(&mut ck);
        for engine in [
            Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, hyper.batch, &hyper, &d.train, &d.test)).unwrap()),
            Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()),
        ] {
            let name = engine.device();
            let e = Session::resume(engine, &hyper, ck.clone()).err().unwrap_or_else(|| panic!("{name}: a damaged point ({says}) was taken"));
            let msg = e.to_string();
            assert!(msg.contains("cannot continue here") && msg.contains(says), "{name}: '{msg}' should say '{says}'");
        }
        println!("refused: {says}");
    }
    // A point of another network (fc1 of 100) on a LeNet engine: refused by its length.
    let other = Layout::new(Arch { c1: 6, c2: 16, f1: 100, f2: 84 });
    let ck = Checkpoint { params: init_params(&other, 0), momentum: vec![0.0; other.total], ..good.clone() };
    let e = Session::resume(Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()), &hyper, ck).err().expect("refused");
    assert!(e.to_string().contains("the lenet network has 62400"), "{e}");
    let mut b = Session::resume(Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()), &hyper, good).unwrap();
    while !b.done() {
        b.run_chunk(25).block_ok();
    }
    assert_eq!(b.global_step(), 100);
}

/// Each failure has its kind, so the page answers each as it should: bad settings and limits
/// keep the GPU (the user changes them), a lost device moves the run to the CPU engine.
#[test]
fn engine_errors_say_their_kind() {
    let g = gpu();
    let d = sample();
    let hyper = Hyper::default();
    let p = init_params(&Layout::lenet(), 0);
    let kind = |r: Result<GpuEngine, EngineError>| r.err().expect("refused");
    let e = kind(pollster::block_on(GpuEngine::new(&g, &p, 0, &hyper, &d.train, &d.test)));
    println!("{:?}: {e}", e.kind);
    assert!(e.kind == ErrorKind::Settings && !e.ends_the_device(), "{e:?}");
    let e = kind(pollster::block_on(GpuEngine::new(&g, &p, d.train.len() + 1, &hyper, &d.train, &d.test)));
    assert_eq!(e.kind, ErrorKind::Settings, "{e:?}");
    let e = kind(pollster::block_on(GpuEngine::new(&g, &p[1..], 4, &hyper, &d.train, &d.test)));
    assert_eq!(e.kind, ErrorKind::Settings, "{e:?}");
    // The device has the adapter's own binding and buffer sizes (WebGPU's defaults are the
    // floor, not the ceiling).
    let (dev, ad) = (g.device.limits(), g.wgpu_adapter.limits());
    assert_eq!((dev.max_storage_buffer_binding_size, dev.max_buffer_size), (ad.max_storage_buffer_binding_size, ad.max_buffer_size));
    // A batch whose activations pass the binding (128 MiB on lavapipe): the device's limit,
    // not a fault.
    let widest = Arch { c1: 256, c2: 256, f1: 256, f2: 256 };
    let wide = Hyper { net: widest, ..Hyper::default() };
    let wp = init_params(&Layout::new(widest), 0);
    let e = kind(pollster::block_on(GpuEngine::new(&g, &wp, 1000, &wide, &d.train, &d.test)));
    println!("{:?}: {e}", e.kind);
    assert!(e.kind == ErrorKind::Limits && !e.ends_the_device() && e.message.contains("binding limit"), "{e:?}");
    let ge = pollster::block_on(GpuEngine::new(&g, &p, 4, &hyper, &d.train, &d.test)).unwrap();
    let e = pollster::block_on(ge.inspect(d.test.len())).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Settings, "{e:?}");
}

/// A readback that does not come back within its deadline is an error of the kind DeviceLost
/// (a hung driver must not leave a run waiting forever); one with room to finish reads fine.
#[test]
fn a_readback_past_its_deadline_is_a_lost_device() {
    use std::sync::{atomic::AtomicBool, Arc};
    use std::time::Duration;
    // A device of its own: the work queued here should not slow the other tests' readbacks.
    let g = pollster::block_on(tabcnn::gpu::Gpu::new()).expect("a wgpu adapter");
    let d = sample();
    let hyper = Hyper { batch: 64, ..Hyper::default() };
    let e = pollster::block_on(GpuEngine::new(&g, &init_params(&Layout::lenet(), 0), 64, &hyper, &d.train, &d.test)).unwrap();
    // The readback's own submission carries a second of copies after it: on lavapipe a
    // submission waits for the one before, so the work must be in the readback's own.
    let (src, staging) = (g.storage("deadline test source", 4), g.staging("deadline test staging", 4));
    let big = 64 << 20;
    let (a, b) = (g.storage("deadline test copy from", big), g.storage("deadline test copy to", big));
    let heavy = |enc: &mut wgpu::CommandEncoder| (0..40).for_each(|_| enc.copy_buffer_to_buffer(&a, 0, &b, 0, big));
    let late = g.start_read_back(&src, 0, 4, &staging, Arc::new(AtomicBool::new(true)), Duration::from_micros(1), heavy);
    let err = pollster::block_on(late.wait()).expect_err("2.7 GB of copies take longer than a microsecond");
    println!("{:?}: {err}", err.kind);
    assert!(err.kind == ErrorKind::DeviceLost && err.message.contains("did not finish its work within"), "{err:?}");
    // The device itself is fine: with a deadline sized by the work queued, a read comes back.
    e.train_steps(8);
    let m = pollster::block_on(e.read_metrics()).unwrap();
    assert_eq!(m.steps, 8);
}

/// The CPU engine's memory is known before anything is allocated: a batch whose activations
/// would pass MAX_CPU_ACTS_BYTES (the widest network at batch 1,024: 2.4 GiB, past a tab's
/// wasm memory) is refused with its size, as settings of the kind Limits; the evaluation runs
/// in pieces (the page yields between them) and predicts what one pass does.
#[test]
fn the_cpu_engines_memory_is_known_before_it_is_allocated() {
    use tabcnn::cpu::{acts_bytes, check_memory, Acts, RefEngine, MAX_CPU_ACTS_BYTES};
    for (n, arch) in [(4, Arch::LENET), (7, ODD), (3, Arch::WIDE)] {
        let a = Acts::<f32>::new(n, arch);
        let floats = [&a.x, &a.h1, &a.p1, &a.h2, &a.p2, &a.a1, &a.a2, &a.logits, &a.dlogits, &a.da2, &a.da1, &a.dp2, &a.dh2, &a.dp1, &a.dh1].iter().map(|v| v.len()).sum::<usize>();
        let ints = a.y.len() + a.arg1.len() + a.arg2.len();
        assert_eq!(acts_bytes(n, arch), 4 * (floats + ints) as u64, "{} at batch {n}", arch.name());
    }
    let widest = Arch { c1: 256, c2: 256, f1: 256, f2: 256 };
    let e = check_memory(widest, 1024).unwrap_err();
    println!("{:?}: {e}", e.kind);
    assert!(e.kind == ErrorKind::Limits && e.message.contains(&format!("needs {} MiB", acts_bytes(1024, widest) >> 20)), "{e:?}");
    assert!(check_memory(widest, 128).is_ok() && acts_bytes(128, widest) < MAX_CPU_ACTS_BYTES);
    let d = sample();
    let hyper = Hyper { net: widest, batch: 4, ..Hyper::default() };
    let mut cpu = Engine::Cpu(CpuEngine::new(&init_params(&Layout::new(widest), 0), &hyper, &d.train, &d.test, all_cores()).unwrap());
    let e = pollster::block_on(cpu.set_batch(1024)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limits, "{e:?}");
    // The evaluation in pieces predicts what one pass over the test set does.
    let p = init_params(&Layout::lenet(), 2);
    let whole = RefEngine::new(Arch::LENET, p.clone(), 4).predict(&d.test.images, d.test.len());
    let pieces = pollster::block_on(Engine::Cpu(CpuEngine::new(&p, &Hyper::default(), &d.train, &d.test, all_cores()).unwrap()).evaluate()).unwrap();
    assert_eq!(pieces.preds, whole);
}

/// A run resumed with fewer epochs than the one it was saved in finishes that epoch (as
/// lowering the epochs of a running session does) rather than ending where it was saved.
#[test]
fn a_run_resumed_with_fewer_epochs_finishes_its_epoch() {
    use tabcnn::train::Session;
    let hyper = Hyper { lr: 0.01, epochs: 3, ..Hyper::default() };
    let mut d = sample();
    d.train.truncate(200); // 50 steps an epoch at batch 4
    let p = init_params(&Layout::lenet(), 3);
    let mut a = Session::new(Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap()), &hyper);
    while a.epoch() < 2 || a.epoch_step() < 20 {
        a.run_chunk(10).block_ok();
    }
    let ck = pollster::block_on(a.checkpoint()).unwrap();
    let fewer = Hyper { epochs: 1, ..hyper.clone() };
    let mut b = Session::resume(Engine::Cpu(CpuEngine::new(&p, &fewer, &d.train, &d.test, all_cores()).unwrap()), &fewer, ck).unwrap();
    assert!(!b.done(), "saved at epoch 2, step 20: not done at once with epochs 1");
    while !b.done() {
        b.run_chunk(9).block_ok();
    }
    println!("resumed at epoch 2 step 20 with epochs 1: ended at step {} (epoch {}, step {})", b.global_step(), b.epoch(), b.epoch_step());
    assert_eq!((b.epoch(), b.epoch_step(), b.global_step()), (2, 50, 100));
}

/// A checkpoint taken right after the update that blew up holds the bad weights: continuing
/// from it at a sane learning rate diverges again at once. Only one taken before the diverging
/// step is a good point to continue from (what the page keeps).
#[test]
fn after_a_divergence_only_a_checkpoint_before_the_bad_step_is_a_good_point() {
    use tabcnn::train::{Session, TrainError};
    let hyper = Hyper { lr: 0.01, epochs: 5, ..Hyper::default() };
    let mut d = sample();
    d.train.truncate(200);
    let p = init_params(&Layout::lenet(), 3);
    let fresh = || Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let mut s = Session::new(fresh(), &hyper);
    s.run_chunk(30).block_ok();
    let before = pollster::block_on(s.checkpoint()).unwrap();
    // One step with an absurd learning rate: its own loss is fine (computed before its update).
    s.set_hyper(1e9, 0.9, 0.0);
    s.run_chunk(1).block_ok();
    let after = pollster::block_on(s.checkpoint()).unwrap();
    let bad = match pollster::block_on(s.run_chunk(5)) {
        Err(TrainError::Diverged { step, .. }) => step,
        other => panic!("expected a divergence, got {other:?}"),
    };
    // The weights past the divergence are not finite: the check a resume makes (and that the
    // page makes before it saves) refuses them, so no such point is ever saved.
    let past = pollster::block_on(s.checkpoint()).unwrap();
    let why = past.check(Layout::lenet().total, "the lenet", hyper.batch, d.train.len()).expect_err("a point past the divergence is refused");
    println!("a point past the divergence (step {}): {why}", past.global_step);
    assert!(why.contains("non-finite"), "{why}");
    assert_eq!(before.check(Layout::lenet().total, "the lenet", hyper.batch, d.train.len()), Ok(()), "the good point is not");
    println!("checkpoints at {} and {} steps; diverged at step {bad} (0-based)", before.global_step, after.global_step);
    assert_eq!((before.global_step, after.global_step, bad), (30, 31, 31));
    assert!(before.before_divergence(bad) && !after.before_divergence(bad));
    // Continuing at lr 0.01 from each: the late one diverges again at once, the early one trains on.
    let from = |ck| {
        let mut r = Session::resume(fresh(), &hyper, ck).unwrap();
        pollster::block_on(r.run_chunk(20)).map(|c| c.progress.loss)
    };
    assert!(matches!(from(after), Err(TrainError::Diverged { step: 31, .. })), "the checkpoint after the bad update is bad");
    let loss = from(before).expect("the checkpoint before it is good");
    println!("from step 30 at lr 0.01: loss {loss:.4} over the next 20 steps");
    assert!(loss.is_finite() && loss < 3.0);
}

/// Run a chunk to completion and unwrap it.
trait BlockOn {
    fn block_ok(self) -> train::Chunk;
}
impl<F: std::future::Future<Output = Result<train::Chunk, TrainError>>> BlockOn for F {
    fn block_ok(self) -> train::Chunk {
        pollster::block_on(self).unwrap()
    }
}

/// The page's look inside the network: the GPU engine's batch-1 inspect pass gives every
/// activation of a test record as the CPU reference computes it, including the last record
/// (an odd position) and after training steps; it leaves the evaluation unchanged; a record
/// past the end is an error naming it.
#[test]
fn gpu_inspection_matches_cpu_activations() {
    for net in [Arch::LENET, Arch::WIDE] {
        inspection_case(net);
    }
}

fn inspection_case(net: Arch) {
    let g = gpu();
    let d = sample();
    let hyper = Hyper { batch: 5, lr: 0.01, net, ..Hyper::default() };
    let p = init_params(&Layout::new(net), 3);
    let mut ge = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let mut ce = Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let order = Rng::new(4).permutation(d.train.len());
    let before = pollster::block_on(ge.evaluate()).unwrap();
    for round in 0..2 {
        if round == 1 {
            // Train both a little: the views follow the weights.
            for eng in [&mut ge, &mut ce] {
                eng.begin_epoch(&order, 0);
                eng.train_steps(6);
                pollster::block_on(eng.read_metrics()).unwrap();
            }
        }
        // Each record after another: a stale readback of the one before would not match.
        for r in [0usize, 17, d.test.len() - 1] {
            let gi = pollster::block_on(ge.inspect(r)).unwrap();
            let ci = pollster::block_on(ce.inspect(r)).unwrap();
            let name = |t: &str| format!("{}: inspect record {r} after {} steps: {t}", net.name(), round * 6);
            // (v / 255 - 0.5) / 0.5: WGSL's f32 division is within 2.5 ULP, not correctly rounded,
            // so a GPU may differ from the CPU in the last bits; the wrong record would not.
            compare(&name("x, the gathered image"), &gi.x, &ci.x, common::TOL);
            compare(&name("h1 [6,28,28]"), &gi.h1, &ci.h1, common::TOL);
            compare(&name("p1 [6,14,14]"), &gi.p1, &ci.p1, common::TOL);
            compare(&name("h2 [16,10,10]"), &gi.h2, &ci.h2, common::TOL);
            compare(&name("p2 [400]"), &gi.p2, &ci.p2, common::TOL);
            compare(&name("a1 [120]"), &gi.a1, &ci.a1, common::TOL);
            compare(&name("a2 [84]"), &gi.a2, &ci.a2, common::TOL);
            compare(&name("logits [10]"), &gi.logits, &ci.logits, common::TOL);
            let pr = gi.probabilities();
            assert!((pr.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        if round == 0 {
            assert_eq!(pollster::block_on(ge.evaluate()).unwrap(), before, "inspecting does not disturb the evaluation");
        }
    }
    let err = pollster::block_on(ge.inspect(d.test.len())).unwrap_err().to_string();
    assert!(err.contains("test record 1000 does not exist"), "{err}");
}

/// A GPU device lost mid-run (a driver reset, a crashed GPU process): the next chunk fails with
/// an error that says so, nothing panics, and the last checkpoint continues on the CPU engine,
/// where the run ends with the steps it would have had.
#[test]
fn a_lost_gpu_device_is_reported_and_the_run_continues_on_the_cpu() {
    use tabcnn::train::Session;
    // A device of its own: destroying the shared one would break the other tests.
    let g = pollster::block_on(tabcnn::gpu::Gpu::new()).expect("a wgpu adapter");
    let mut d = sample();
    d.train.truncate(200);
    let hyper = Hyper { lr: 0.01, epochs: 1, ..Hyper::default() };
    let p = init_params(&Layout::lenet(), 5);
    let engine = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p, hyper.batch, &hyper, &d.train, &d.test)).unwrap());
    let mut s = Session::new(engine, &hyper);
    s.run_chunk(10).block_ok();
    let ck = pollster::block_on(s.checkpoint()).unwrap();
    assert_eq!(ck.global_step, 10);
    g.device.destroy();
    let err = pollster::block_on(s.run_chunk(10)).expect_err("a chunk on a destroyed device fails");
    let msg = err.to_string();
    println!("after the device was destroyed: {msg}");
    assert!(msg.contains("GPU device lost"), "the error says the device is lost: {msg}");
    assert!(matches!(&err, TrainError::Engine(e) if e.kind == ErrorKind::DeviceLost && e.ends_the_device()), "a lost device is of its kind: {err:?}");
    assert!(pollster::block_on(s.engine.read_params()).is_err(), "reading the weights of a lost device fails, not panics");
    // The page's recovery: the checkpoint on a CPU engine finishes the epoch.
    let cpu = Engine::Cpu(CpuEngine::new(&p, &hyper, &d.train, &d.test, all_cores()).unwrap());
    let mut b = Session::resume(cpu, &hyper, ck).unwrap();
    while !b.done() {
        b.run_chunk(9).block_ok();
    }
    assert_eq!(b.global_step(), 50, "200 images in steps of 4, 10 of them on the GPU");
}
