//! Training images/s through `Session` with and without a chunk in flight while the last
//! chunk's metrics come back, side by side in one run (BENCHMARKS.md, "Host and GPU overlap").
//! `cargo run --release --example overlap -- [BATCH] [CHUNK_STEPS] [ROUNDS] [DATA]`

use tabcnn::data;
use tabcnn::gpu::{Gpu, GpuEngine};
use tabcnn::model::{init_params, Layout};
use tabcnn::recipe::Hyper;
use tabcnn::train::{Engine, Session};
use web_time::Instant;

fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (batch, chunk, rounds) = (arg(1, 64), arg(2, 20), arg(3, 3));
    let path = std::env::args().nth(4).map(std::path::PathBuf::from).unwrap_or_else(data::sample_dir);
    let d = data::load_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gpu = pollster::block_on(Gpu::new()).expect("a wgpu adapter");
    println!("adapter: {}; batch {batch}, chunks of {chunk} steps, {} steps an epoch", gpu.adapter, d.train.len() / batch);
    let hyper = Hyper { batch, lr: 0.01, epochs: 1_000, ..Hyper::default() };
    let p = init_params(&Layout::lenet(), 0);
    let mut engine = Engine::Gpu(pollster::block_on(GpuEngine::new(&gpu, &p, batch, &hyper, &d.train, &d.test)).expect("the GPU engine"));
    // Alternate the two so drift (clocks, other load) hits both alike.
    let mut best = [0.0f64; 2];
    for round in 0..=rounds {
        for (i, overlap) in [false, true].into_iter().enumerate() {
            let mut s = Session::new(&mut engine, &hyper);
            s.set_overlap(overlap);
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < 5.0 {
                pollster::block_on(s.run_chunk(chunk)).expect("a chunk");
            }
            // The chunk still in flight counts, and so does the time to finish it.
            pollster::block_on(s.settle());
            let ips = (s.global_step() as usize * batch) as f64 / t.elapsed().as_secs_f64();
            if round > 0 {
                best[i] = best[i].max(ips);
                println!("round {round}: overlap {overlap:>5}: {ips:.0} images/s");
            }
        }
    }
    println!("best of {rounds}: without {:.0}, with {:.0} images/s ({:.2}x)", best[0], best[1], best[1] / best[0]);
}
