//! burn as an independent reference (feature `burn`): from identical weights and batches, our
//! GPU engine and our CPU reference agree with burn's LeNet (flex CPU backend with autodiff) on
//! the logits, the loss, all ten gradients and five SGD steps; a model saved by tabcnn loads
//! into burn through burn-store and scores the same; burn-wgpu trains on our adapter.
#![cfg(feature = "burn")]

use tabcnn::augment::Augment;
use tabcnn::burn_net::{self, BurnTrainer, Net};
use tabcnn::checkpoint;
use tabcnn::cpu::{self, Acts};
use tabcnn::cpu::{all_cores, CpuEngine};
use tabcnn::data::{self, Split};
use tabcnn::gpu::GpuEngine;
use tabcnn::model::{init_params, Layout, Rng, CLASSES, IMG_LEN};
use tabcnn::recipe::Hyper;
use tabcnn::train::Engine;

mod common;
use common::{compare, gpu, TOL};

/// `n` random images and labels (a batch nobody tuned for).
fn random_split(n: usize, seed: u64) -> Split {
    let mut rng = Rng::new(seed);
    let images = (0..n * IMG_LEN).map(|_| (rng.next_u64() % 256) as u8).collect();
    let labels = (0..n).map(|_| (rng.next_u64() % CLASSES as u64) as u8).collect();
    Split { images, labels }
}

#[test]
fn logits_loss_and_all_ten_gradients_agree_with_burn() {
    let g = gpu();
    let l = Layout::lenet();
    for (n, seed) in [(4usize, 1u64), (7, 2)] {
        let params = init_params(&l, seed);
        let split = random_split(n, seed + 100);
        let order: Vec<u32> = (0..n as u32).collect();

        // burn, on its CPU backend with autodiff.
        let mut acts = Acts::<f32>::new(n, tabcnn::model::Arch::LENET);
        cpu::gather(&mut acts.x, &mut acts.y, &split.images, &split.labels, &order, 0, n);
        let b = burn_net::forward_backward(&params, &acts.x, &acts.y, &burn_net::cpu_device());

        // Our CPU reference.
        cpu::forward(&mut acts, &params, &l);
        let (loss_sum, _) = cpu::cross_entropy(&mut acts.dlogits, &acts.logits, &acts.y, n);
        let mut grads = vec![0.0f32; l.total];
        cpu::backward(&mut grads, &mut acts, &params, &l);

        // Our GPU engine: one training step (lr 0, so nothing moves) on the same batch.
        let hyper = Hyper { batch: n, lr: 0.0, ..Hyper::default() };
        let ge = pollster::block_on(GpuEngine::new(&g, &params, n, &hyper, &split, &split)).unwrap();
        ge.begin_epoch(&order, 0);
        ge.train_steps(1);
        let m = pollster::block_on(ge.read_metrics()).unwrap();
        let g_logits = pollster::block_on(ge.read_logits()).unwrap();
        let g_grads = pollster::block_on(ge.read_grads()).unwrap();

        println!("batch {n}: loss burn {:.6}, CPU {:.6}, GPU {:.6}", b.loss, loss_sum / n as f32, m.loss_sum);
        compare(&format!("CPU logits vs burn, batch {n}"), &acts.logits, &b.logits, TOL);
        compare(&format!("GPU logits vs burn, batch {n}"), &g_logits, &b.logits, TOL);
        compare(&format!("CPU loss vs burn, batch {n}"), &[loss_sum / n as f32], &[b.loss], TOL);
        compare(&format!("GPU loss vs burn, batch {n}"), &[m.loss_sum], &[b.loss], TOL);
        for s in &l.specs {
            compare(&format!("CPU d{} vs burn, batch {n}", s.name), &grads[s.range()], &b.grads[s.range()], TOL);
            compare(&format!("GPU d{} vs burn, batch {n}", s.name), &g_grads[s.range()], &b.grads[s.range()], TOL);
        }
    }
}

#[test]
fn five_sgd_steps_follow_burns_trajectory() {
    let g = gpu();
    let d = data::load_path(&data::sample_dir()).expect("the bundled sample loads");
    let l = Layout::lenet();
    // lr 0.01 so five steps move the weights well past rounding; weight decay and
    // augmentation (the same crop and flip draw in all three) on in one case.
    for (batch, wd, aug) in [(4usize, 0.0f32, false), (7, 5e-4, true)] {
        let hyper = Hyper { batch, lr: 0.01, weight_decay: wd, ..Hyper::default() };
        let p0 = init_params(&l, 3);
        let order = Rng::new(11).permutation(d.train.len());
        let mut burn = Engine::Burn(BurnTrainer::new(burn_net::cpu_device(), "burn (flex CPU)".into(), &p0, &hyper, &d.train, &d.test));
        let mut cpu_e = Engine::Cpu(CpuEngine::new(&p0, &hyper, &d.train, &d.test, all_cores()).unwrap());
        let mut gpu_e = Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &p0, batch, &hyper, &d.train, &d.test)).unwrap());
        for e in [&mut burn, &mut cpu_e, &mut gpu_e] {
            e.begin_epoch(&order, 0);
            e.set_augment(Augment { flip: aug, crop: aug, key: 9 });
        }
        let mut last = p0.clone();
        for step in 1..=5 {
            let mut p = Vec::new();
            for e in [&mut burn, &mut cpu_e, &mut gpu_e] {
                e.train_steps(1);
                p.push(pollster::block_on(e.read_params()).unwrap());
            }
            assert_ne!(p[0], last, "step {step} moved burn's parameters");
            // Compare the update of this step too, so a drift of the trajectory is caught
            // while it is still small against the weights.
            let upd = |q: &[f32]| q.iter().zip(&last).map(|(a, b)| a - b).collect::<Vec<f32>>();
            for (who, q) in [("CPU", &p[1]), ("GPU", &p[2])] {
                compare(&format!("{who} parameters after step {step} vs burn, batch {batch}, wd {wd}, augment {aug}"), q, &p[0], TOL);
                compare(&format!("{who} update of step {step} vs burn, batch {batch}, wd {wd}, augment {aug}"), &upd(q), &upd(&p[0]), 1e-3);
            }
            last = p.swap_remove(0);
        }
        let mb = pollster::block_on(burn.read_metrics()).unwrap();
        let mc = pollster::block_on(cpu_e.read_metrics()).unwrap();
        assert_eq!((mb.steps, mb.seen, mb.correct), (mc.steps, mc.seen, mc.correct));
        compare(&format!("summed loss of 5 steps vs burn, batch {batch}"), &[mc.loss_sum], &[mb.loss_sum], TOL);
    }
}

#[test]
fn a_saved_model_loads_into_burn_and_scores_the_same() {
    let d = data::load_path(&data::sample_dir()).expect("the bundled sample loads");
    let l = Layout::lenet();
    // A model that has learned something, so the accuracy is not chance.
    let hyper = Hyper { seed: 4, ..common::learning_hyper() };
    let mut e = Engine::Cpu(CpuEngine::new(&init_params(&l, 4), &hyper, &d.train, &d.test, all_cores()).unwrap());
    pollster::block_on(tabcnn::train::train(&mut e, &hyper, 100, |_| {})).expect("training runs");
    let params = pollster::block_on(e.read_params()).unwrap();
    let ours = pollster::block_on(e.evaluate()).unwrap();

    let bytes = checkpoint::to_safetensors(&params, &l);
    let dev = burn_net::cpu_device();
    let net = Net::load_safetensors(bytes, &dev, "model.safetensors").expect("burn-store loads tabcnn's file");
    assert_eq!(net.params(), params, "burn holds exactly the saved weights");
    let theirs = burn_net::evaluate(&net, &d.test, &dev);
    let same = ours.preds.iter().zip(&theirs.preds).filter(|(a, b)| a == b).count();
    println!("test accuracy: tabcnn {:.2} %, burn {:.2} %, {same}/{} identical predictions", 100.0 * ours.accuracy(), 100.0 * theirs.accuracy(), ours.total());
    common::assert_learned("the saved model", ours.accuracy(), &d.test.labels);
    assert!(same + 2 >= ours.total() as usize, "only {same} predictions agree");
    assert!((ours.accuracy() - theirs.accuracy()).abs() <= 0.002);

    // A cut file is refused, naming it.
    let mut short = checkpoint::to_safetensors(&params, &l);
    short.truncate(short.len() / 2);
    let err = Net::load_safetensors(short, &dev, "cut.safetensors").expect_err("a truncated file is refused");
    println!("truncated file: {err}");
    assert!(err.contains("cut.safetensors"));
}

#[test]
fn burn_wgpu_trains_on_our_adapter() {
    let g = gpu();
    let d = data::load_path(&data::sample_dir()).expect("the bundled sample loads");
    let hyper = common::learning_hyper();
    let p0 = init_params(&Layout::lenet(), 0);
    let dev = burn_net::wgpu_device(&g).expect("burn-wgpu opens on our adapter");
    let mut e = Engine::Burn(BurnTrainer::new(dev, format!("burn-wgpu: {}", g.adapter), &p0, &hyper, &d.train, &d.test));
    let before = pollster::block_on(e.evaluate()).unwrap();
    let r = pollster::block_on(tabcnn::train::train(&mut e, &hyper, 100, |_| {})).expect("training runs");
    let after = pollster::block_on(e.evaluate()).unwrap();
    println!("burn-wgpu: {} steps, {:.0} images/s, test accuracy {:.1} % -> {:.1} %", r.steps, r.images as f64 / r.seconds, 100.0 * before.accuracy(), 100.0 * after.accuracy());
    assert_eq!(r.steps as usize, hyper.epochs * (d.train.len() / hyper.batch));
    common::assert_learned("burn-wgpu after 6 epochs", after.accuracy(), &d.test.labels);
    // Its momentum cannot be read, and says so instead of pretending.
    assert!(pollster::block_on(e.read_momentum()).is_err());
}
