//! The native CLI: `tabcnn train`, `tabcnn eval`, `tabcnn bench`. See `tabcnn help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tabcnn::checkpoint;
use tabcnn::data::{self, Cifar};
use tabcnn::gpu::{Clock, Gpu, GpuEngine};
use tabcnn::model::{init_params, Arch, Layout};
use tabcnn::outputs::EvalResult;
use tabcnn::recipe::Hyper;
use tabcnn::recipe::Schedule;
use tabcnn::train::{self, CpuTrainer, Engine};
use web_time::Instant;

const HELP: &str = "tabcnn: LeNet on CIFAR-10 with hand-written WGSL kernels (wgpu)

USAGE:
  tabcnn train [--data PATH] [--epochs 2] [--batch 4] [--lr 0.001] [--momentum 0.9]
               [--weight-decay 0] [--seed 0] [--engine auto|gpu|cpu|burn] [--limit N]
               [--augment none|flip|crop|flip,crop] [--schedule constant|cosine|step:E:G]
               [--net lenet|wide|C1-C2-F1-F2]
               [--load model.safetensors] [--save model.safetensors] [--report 250]
  tabcnn eval  --model model.safetensors [--data PATH] [--engine auto|gpu|cpu|burn]
  tabcnn bench [--data PATH] [--engine gpu,cpu,burn] [--batches 4,64] [--seconds 5] [--profile]
               [--shape] [--net lenet|wide|C1-C2-F1-F2]

PATH is a directory of CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin; directly
or in cifar-10-batches-bin/) or the official cifar-10-binary.tar.gz. Without --data, the
sample bundled in data/sample (2,000 training, 1,000 test images) is used.
--engine auto uses the GPU when wgpu finds a hardware adapter, else the CPU reference engine
(a software adapter such as lavapipe is slower than the CPU engine; --engine gpu uses it anyway).
--engine burn is the same LeNet and SGD written with burn 0.22.1, run by burn-wgpu on the
same adapter (a build with `--features burn`); bench prints ours and burn's side by side.
bench --shape prints what one GPU training step launches (dispatches, passes, copies, and per
kernel its grid, invocations, multiply-adds and bytes); --profile times each kernel.
--limit N trains on the first N training images. --augment draws random horizontal flips
and/or random 32x32 crops of the image padded by 4 pixels for every training image, on the GPU
in the batch gather. --schedule sets the learning rate per epoch: cosine (from --lr down to 0
over the run) or step:E:G (times G every E epochs, e.g. step:10:0.1). --net wide trains the
wider variant (conv 3->20->32, fc 800->256->128->10); the default is the tutorial's LeNet. Models are safetensors files with PyTorch's
state_dict names (conv1.weight ... fc3.bias) that load into the tutorial's Net.";

struct Args {
    rest: Vec<String>,
}

impl Args {
    /// The value after `--name`, parsed; a missing or bad value is an error naming the flag.
    fn get<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        let Some(i) = self.rest.iter().position(|a| a == name) else { return Ok(None) };
        if i + 1 >= self.rest.len() {
            return Err(format!("{name} needs a value"));
        }
        let v = self.rest.remove(i + 1);
        self.rest.remove(i);
        v.parse().map(Some).map_err(|_| format!("{name}: cannot parse '{v}'"))
    }
    fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|a| a == name) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }
    fn finish(self) -> Result<(), String> {
        match self.rest.first() {
            Some(a) => Err(format!("unknown argument '{a}' (see tabcnn help)")),
            None => Ok(()),
        }
    }
}

fn load_data(path: Option<PathBuf>) -> Result<Cifar, String> {
    let path = path.unwrap_or_else(data::sample_dir);
    let t = Instant::now();
    let d = data::load_path(&path).map_err(|e| e.to_string())?;
    println!("data: {} (read in {:.1} s)", d.description, t.elapsed().as_secs_f64());
    Ok(d)
}

/// burn's engine on the adapter of `gpu` (burn-wgpu), in a build with the `burn` feature.
#[cfg(feature = "burn")]
fn burn_engine(gpu: &Gpu, params: &[f32], hyper: &Hyper, d: &Cifar) -> Result<Engine, String> {
    use tabcnn::burn_net::{wgpu_device, BurnTrainer};
    let device = wgpu_device(gpu).map_err(|e| e.to_string())?;
    Ok(Engine::Burn(BurnTrainer::new(device, format!("burn-wgpu 0.22.1: {}", gpu.adapter), params, hyper, &d.train, &d.test)))
}

#[cfg(not(feature = "burn"))]
fn burn_engine(_: &Gpu, _: &[f32], _: &Hyper, _: &Cifar) -> Result<Engine, String> {
    Err("this tabcnn was built without burn: build it with `cargo build --release --features burn` for --engine burn".into())
}

/// Build the engine the user asked for; `auto` falls back to the CPU with a notice.
fn make_engine(kind: &str, params: Vec<f32>, hyper: &Hyper, d: &Cifar) -> Result<Engine, String> {
    if kind == "burn" && hyper.net != Arch::LENET {
        return Err(format!("--engine burn trains the tutorial's LeNet only, not the {} network", hyper.net.name()));
    }
    let gpu = match kind {
        "cpu" => None,
        "burn" => return burn_engine(&pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?, &params, hyper, d),
        "gpu" => Some(pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?),
        "auto" => match pollster::block_on(Gpu::new()) {
            // A software adapter emulates the GPU on the CPU's cores and trains this network
            // slower than the CPU engine does (BENCHMARKS.md), as the page decides too.
            Ok(g) if g.software => {
                eprintln!("note: the only GPU adapter is a software one ({}), slower here than the CPU engine\nnote: training with the CPU reference engine instead (--engine gpu trains on the adapter anyway)", g.adapter);
                None
            }
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("note: {e}\nnote: training with the CPU reference engine instead");
                None
            }
        },
        other => return Err(format!("--engine must be auto, gpu, cpu or burn, not '{other}'")),
    };
    Ok(match gpu {
        Some(g) => Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &params, hyper.batch, hyper, &d.train, &d.test)).map_err(|e| e.to_string())?),
        None => Engine::Cpu(CpuTrainer::new(params, hyper, &d.train, &d.test)),
    })
}

fn print_eval(r: &EvalResult, classes: &[String], seconds: f64) {
    println!("Accuracy of the network on the {} test images: {} %", r.total(), (100.0 * r.accuracy()).round());
    for (c, a) in classes.iter().zip(r.class_accuracy()) {
        println!("Accuracy for class: {c:5} is {:.1} %", 100.0 * a);
    }
    println!("(test accuracy {:.2} %, evaluated in {:.2} s)", 100.0 * r.accuracy(), seconds);
    println!("confusion matrix (rows: true class, columns: predicted):");
    println!("      {}", classes.iter().map(|c| format!("{:>6}", c)).collect::<String>());
    for (c, row) in classes.iter().zip(&r.confusion) {
        println!("{c:>5} {}", row.iter().map(|v| format!("{v:>6}")).collect::<String>());
    }
}

/// A model file of either network, with its widths.
fn load_model(path: &str) -> Result<(Arch, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    checkpoint::from_safetensors_any(&bytes, path)
}

fn cmd_train(mut a: Args) -> Result<(), String> {
    let d = Hyper::default();
    let hyper = Hyper {
        batch: a.get("--batch")?.unwrap_or(d.batch),
        lr: a.get("--lr")?.unwrap_or(d.lr),
        momentum: a.get("--momentum")?.unwrap_or(d.momentum),
        weight_decay: a.get("--weight-decay")?.unwrap_or(d.weight_decay),
        epochs: a.get("--epochs")?.unwrap_or(d.epochs),
        seed: a.get("--seed")?.unwrap_or(d.seed),
        flip: false,
        crop: false,
        schedule: Schedule::parse(&a.get::<String>("--schedule")?.unwrap_or_else(|| "constant".into())).map_err(|e| format!("--schedule: {e}"))?,
        net: match a.get::<String>("--net")? {
            Some(n) => Arch::parse(&n).map_err(|e| format!("--net: {e}"))?,
            None => Arch::LENET,
        },
    };
    let mut hyper = hyper;
    let augment: String = a.get("--augment")?.unwrap_or_else(|| "none".into());
    (hyper.flip, hyper.crop) = tabcnn::recipe::parse_augment(&augment).map_err(|e| format!("--augment: {e}"))?;
    let data_path: Option<PathBuf> = a.get("--data")?;
    let engine_kind: String = a.get("--engine")?.unwrap_or_else(|| "auto".into());
    let limit: Option<usize> = a.get("--limit")?;
    let save: Option<String> = a.get("--save")?;
    let load: Option<String> = a.get("--load")?;
    let report: usize = a.get("--report")?.unwrap_or(250);
    a.finish()?;
    if hyper.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if !(hyper.lr.is_finite() && hyper.momentum.is_finite() && hyper.weight_decay.is_finite()) {
        return Err("--lr, --momentum and --weight-decay must be finite numbers".into());
    }
    let mut data = load_data(data_path)?;
    if let Some(n) = limit {
        data.train.truncate(n);
        println!("data: training on the first {} images (--limit)", data.train.len());
    }
    if data.train.len() < hyper.batch {
        return Err(format!("batch {} is larger than the {} training images", hyper.batch, data.train.len()));
    }
    let params = match &load {
        Some(p) => {
            let (arch, params) = load_model(p)?;
            if arch != hyper.net {
                return Err(format!("{p} holds the {} network, not the {} one: add --net {}", arch.name(), hyper.net.name(), arch.name()));
            }
            println!("model: continuing from {p}");
            params
        }
        None => init_params(&Layout::new(hyper.net), hyper.seed),
    };
    let mut engine = make_engine(&engine_kind, params, &hyper, &data)?;
    println!("engine: {}", engine.device());
    println!(
        "recipe: {} network ({} parameters), batch {}, lr {} ({} schedule), momentum {}, weight decay {}, augment {}, {} epoch(s), seed {}",
        hyper.net.name(),
        Layout::new(hyper.net).count(),
        hyper.batch,
        hyper.lr,
        hyper.schedule,
        hyper.momentum,
        hyper.weight_decay,
        augment,
        hyper.epochs,
        hyper.seed
    );
    let steps_per_epoch = data.train.len() / hyper.batch;
    // The bar updates every `report` steps; as in the tutorial, a line stays every 2000 steps.
    let mut last_step = 0;
    let result = pollster::block_on(train::train(&mut engine, &hyper, report, |p| {
        let width = 30;
        let filled = width * p.step / p.steps_per_epoch.max(1);
        let total_steps = (p.epochs * p.steps_per_epoch) as f64;
        let left = (total_steps - p.global_step as f64).max(0.0) * p.elapsed / (p.global_step as f64).max(1.0);
        print!(
            "\r[epoch {}/{}] [{}{}] {:>6}/{} loss {:.3} acc {:5.1} % {:>6.0} img/s ETA {:>4.0} s ",
            p.epoch,
            p.epochs,
            "#".repeat(filled),
            ".".repeat(width - filled),
            p.step,
            p.steps_per_epoch,
            p.loss,
            100.0 * p.train_accuracy,
            p.images_per_second,
            left
        );
        let _ = std::io::stdout().flush();
        if p.step / 2000 != last_step / 2000 || p.step == p.steps_per_epoch {
            println!();
        }
        last_step = if p.step == p.steps_per_epoch { 0 } else { p.step };
    }));
    println!();
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(e.to_string()),
    };
    println!(
        "trained {} steps ({} images) in {:.1} s: {:.0} images/s ({} steps/epoch)",
        report.steps,
        report.images,
        report.seconds,
        report.images as f64 / report.seconds.max(1e-9),
        steps_per_epoch
    );
    let t = Instant::now();
    let r = pollster::block_on(engine.evaluate()).map_err(|e| e.to_string())?;
    print_eval(&r, &data.classes, t.elapsed().as_secs_f64());
    if let Some(path) = save {
        let p = pollster::block_on(engine.read_params()).map_err(|e| e.to_string())?;
        std::fs::write(&path, checkpoint::to_safetensors(&p, &Layout::new(hyper.net))).map_err(|e| format!("{path}: cannot write: {e}"))?;
        println!("model saved to {path} (safetensors, PyTorch state_dict names)");
    }
    Ok(())
}

fn cmd_eval(mut a: Args) -> Result<(), String> {
    let model: String = a.get("--model")?.ok_or("eval needs --model model.safetensors")?;
    let data_path: Option<PathBuf> = a.get("--data")?;
    let engine_kind: String = a.get("--engine")?.unwrap_or_else(|| "auto".into());
    a.finish()?;
    let (net, params) = load_model(&model)?;
    let data = load_data(data_path)?;
    let hyper = Hyper { batch: 1, net, ..Hyper::default() };
    let engine = make_engine(&engine_kind, params, &hyper, &data)?;
    println!("engine: {}", engine.device());
    let t = Instant::now();
    let r = pollster::block_on(engine.evaluate()).map_err(|e| e.to_string())?;
    print_eval(&r, &data.classes, t.elapsed().as_secs_f64());
    Ok(())
}

fn cmd_bench(mut a: Args) -> Result<(), String> {
    let data_path: Option<PathBuf> = a.get("--data")?;
    let engines: String = a.get("--engine")?.unwrap_or_else(|| if cfg!(feature = "burn") { "gpu,cpu,burn" } else { "gpu,cpu" }.into());
    let batches: String = a.get("--batches")?.unwrap_or_else(|| "4,64".into());
    let seconds: f64 = a.get("--seconds")?.unwrap_or(5.0);
    let profile = a.flag("--profile");
    let shape = a.flag("--shape");
    let net = match a.get::<String>("--net")? {
        Some(s) => Arch::parse(&s)?,
        None => Arch::LENET,
    };
    a.finish()?;
    let data = load_data(data_path)?;
    println!("network: {} ({} parameters)", net.name(), Layout::new(net).count());
    let engines: Vec<&str> = engines.split(',').map(str::trim).collect();
    let gpu = if engines.iter().any(|&e| e == "gpu" || e == "burn") { Some(pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?) } else { None };
    println!("{:<8} {:>6} {:>12} {:>10} {:>10}  device", "engine", "batch", "images/s", "steps", "vs burn");
    for b in batches.split(',') {
        let batch: usize = b.trim().parse().map_err(|_| format!("--batches: cannot parse '{b}'"))?;
        // Every engine at this batch first, then the rows, so each can be set against burn.
        let mut rows = Vec::new();
        for &e in &engines {
            let hyper = Hyper { batch, net, ..Hyper::default() };
            let params = init_params(&Layout::new(net), 0);
            let mut engine = match e {
                "gpu" => Engine::Gpu(pollster::block_on(GpuEngine::new(gpu.as_ref().unwrap(), &params, batch, &hyper, &data.train, &data.test)).map_err(|e| e.to_string())?),
                "cpu" => Engine::Cpu(CpuTrainer::new(params, &hyper, &data.train, &data.test)),
                "burn" => burn_engine(gpu.as_ref().unwrap(), &params, &hyper, &data)?,
                other => return Err(format!("--engine: unknown engine '{other}' (gpu, cpu, burn)")),
            };
            let (ips, steps) = bench_engine(&mut engine, seconds)?;
            rows.push((e, ips, steps, engine.device()));
            if let Engine::Gpu(g) = &engine {
                if shape {
                    print_shape(g);
                }
                if profile {
                    print_profile(g)?;
                }
            }
        }
        let burn = rows.iter().find(|r| r.0 == "burn").map(|r| r.1);
        for (e, ips, steps, device) in rows {
            let ratio = match burn {
                Some(b) if e != "burn" => format!("{:.2}x", ips / b),
                _ => String::new(),
            };
            println!("{:<8} {:>6} {:>12.0} {:>10} {:>10}  {}", e, batch, ips, steps, ratio, device);
        }
    }
    Ok(())
}

/// Training images per second over about `seconds`, after a warm-up, epoch order shuffled.
fn bench_engine(engine: &mut Engine, seconds: f64) -> Result<(f64, usize), String> {
    let n = engine.train_len();
    let steps_per_epoch = n / engine.batch();
    let mut rng = tabcnn::model::Rng::new(1);
    engine.begin_epoch(&rng.permutation(n), 0);
    let mut done = 0;
    let mut run = |engine: &mut Engine, k: usize, done: &mut usize| -> Result<(), String> {
        let mut left = k;
        while left > 0 {
            if *done == steps_per_epoch {
                engine.begin_epoch(&rng.permutation(n), 0);
                *done = 0;
            }
            let c = left.min(steps_per_epoch - *done).min(100);
            engine.train_steps(c);
            *done += c;
            left -= c;
        }
        pollster::block_on(engine.read_metrics()).map(|_| ()).map_err(|e| e.to_string())
    };
    run(engine, 10, &mut done)?;
    // Calibrate the step count on a short run, then time the real one.
    let t = Instant::now();
    run(engine, 20, &mut done)?;
    let per_step = t.elapsed().as_secs_f64() / 20.0;
    let steps = ((seconds / per_step.max(1e-6)) as usize).clamp(20, 1_000_000);
    let t = Instant::now();
    run(engine, steps, &mut done)?;
    let s = t.elapsed().as_secs_f64();
    Ok(((steps * engine.batch()) as f64 / s, steps))
}

/// The step's shape: what one training step launches, kernel by kernel.
fn print_shape(g: &GpuEngine) {
    let s = g.step_shape();
    let total = s.macs().max(1) as f64;
    println!("    one training step at batch {}: {} dispatches, {} compute pass(es), {} buffer copies", g.batch, s.kernels.len(), s.passes, s.copies);
    println!("    {:<40} {:>14} {:>12} {:>5} {:>12} {:>6} {:>10}", "kernel", "workgroups", "invocations", "wg", "mult-adds", "%", "KiB moved");
    for (label, l) in &s.kernels {
        let (x, y, z) = l.groups;
        println!(
            "    {:<40} {:>14} {:>12} {:>5} {:>12} {:>5.1}% {:>10.1}",
            label.trim_start_matches("train "),
            format!("{x}x{y}x{z}"),
            l.invocations(),
            l.wg,
            l.macs,
            100.0 * l.macs as f64 / total,
            l.bytes as f64 / 1024.0
        );
    }
    println!("    {:<40} {:>14} {:>12} {:>5} {:>12}", "step", "", "", "", s.macs());
}

fn print_profile(g: &GpuEngine) -> Result<(), String> {
    let p = pollster::block_on(g.profile(200)).map_err(|e| e.to_string())?;
    let clock = match p.clock {
        Clock::Timestamps => "the GPU's timestamps",
        Clock::WallClock => "the wall clock (no timestamp queries on this adapter)",
    };
    let total: f64 = p.rows.iter().filter(|r| !r.0.starts_with('(')).map(|r| r.1).sum();
    println!("    per-dispatch time of one training step (each kernel alone, 200 repetitions, by {clock}):");
    let inside = |i: usize| p.in_step.as_ref().and_then(|t| t.get(i)).map(|us| format!("{us:>8.1} us in the step's pass")).unwrap_or_default();
    for (i, (name, us)) in p.rows.iter().enumerate() {
        println!("    {:<40} {:>8.1} us {:>5.1} %  {}", name, us, 100.0 * us / total, inside(i));
    }
    let in_step = p.in_step.as_ref().map(|t| format!("{:>8.1} us in the step's pass", t.iter().sum::<f64>())).unwrap_or_default();
    println!("    {:<40} {:>8.1} us          {in_step}", "sum", total);
    if p.in_step.is_none() {
        println!("    (no timestamps inside a pass on this device: each kernel is timed alone only)");
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = if args.is_empty() { "help".to_string() } else { args.remove(0) };
    let a = Args { rest: args };
    let r = match cmd.as_str() {
        "train" => cmd_train(a),
        "eval" => cmd_eval(a),
        "bench" => cmd_bench(a),
        "help" | "--help" | "-h" => {
            println!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n\n{HELP}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
