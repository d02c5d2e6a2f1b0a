//! The native CLI: `tabcnn train`, `tabcnn eval`, `tabcnn bench`. See `tabcnn help`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use tabcnn::checkpoint;
use tabcnn::cpu::net_engine::NetEngine;
use tabcnn::cpu::CpuEngine;
use tabcnn::data::{self, Cifar};
use tabcnn::gpu::net_engine::GpuNetEngine;
use tabcnn::gpu::{Clock, Gpu, GpuEngine};
use tabcnn::model::{init_params, Arch, Layout};
use tabcnn::net::plan::Plan;
use tabcnn::outputs::EvalResult;
use tabcnn::recipe::{Hyper, Settings};
use tabcnn::train::{self, Engine};
use web_time::Instant;

/// The notes under `tabcnn --help`.
const NOTES: &str = "PATH (--data) is a directory of CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin;
directly or in cifar-10-batches-bin/) or the official cifar-10-binary.tar.gz. Without --data, the
sample bundled in data/sample (2,000 training, 1,000 test images) is used.
--engine auto uses the GPU when wgpu finds a hardware adapter, else the CPU engine on every
core (--threads N chooses how many; a software adapter such as lavapipe is slower than the CPU
engine; --engine gpu uses it anyway).
--engine burn is the same LeNet and SGD written with burn 0.22.1, run by burn-wgpu on the
same adapter (a build with `--features burn`); bench prints ours and burn's side by side.
bench --shape prints what one GPU training step launches (dispatches, passes, copies, and per
kernel its grid, invocations, multiply-adds and bytes); --profile times each kernel.
--augment draws random horizontal flips and/or random 32x32 crops of the image padded by 4
pixels for every training image, on the GPU in the batch gather. --schedule sets the learning
rate per epoch: cosine (from --lr down to 0 over the run) or step:E:G (times G every E epochs,
e.g. step:10:0.1). --net wide trains the wider variant (conv 3->20->32, fc 800->256->128->10);
the default is the tutorial's LeNet. Models are safetensors files with PyTorch's state_dict
names (conv1.weight ... fc3.bias) that load into the tutorial's Net.
`tabcnn net TEXT` prints any network's layers, output shapes, parameters and multiply-adds
(`tabcnn net 'conv(32,3,pad=1) bn relu maxpool(2) flatten linear(10)'`); --pytorch prints the
same network as a PyTorch program whose state_dict has a model file's names and shapes.
Every setting is checked as the page's link checks it, with the same words.";

#[derive(Parser)]
#[command(name = "tabcnn", version, about = "LeNet on CIFAR-10 with hand-written WGSL kernels (wgpu)", after_help = NOTES, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train (the PyTorch tutorial's recipe unless told otherwise), evaluate, and save the model
    Train(Box<TrainArgs>),
    /// Evaluate a saved model on the test set
    Eval(EvalArgs),
    /// Training images per second of each engine at each batch size, side by side
    Bench(BenchArgs),
    /// A network in the text form: its layers, shapes, parameters and multiply-adds, or the same
    /// network as a PyTorch program
    Net(NetArgs),
}

/// `tabcnn net TEXT [--pytorch]`.
#[derive(Args)]
struct NetArgs {
    /// The network, e.g. lenet, wide, or "conv(32,3,pad=1) bn relu maxpool(2) ... flatten linear(10)"
    /// (one argument: quote it, or give its layers as separate arguments)
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
    /// Print a PyTorch program defining `net` as this network, whose state_dict has a tabcnn
    /// model file's names and shapes
    #[arg(long)]
    pytorch: bool,
}

/// Print a network's table, or its PyTorch program.
fn cmd_net(a: NetArgs) -> Result<(), String> {
    let net = tabcnn::net::text::parse(&a.text.join(" "))?;
    let out = if a.pytorch { tabcnn::net::pytorch::program(&net)? } else { format!("{}\n{}", tabcnn::net::text::print(&net), tabcnn::net::cost::table(&net)?) };
    print!("{out}");
    Ok(())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineKind {
    Auto,
    Gpu,
    Cpu,
    Burn,
}

impl EngineKind {
    /// As typed after --engine (the benchmark's rows).
    fn name(self) -> &'static str {
        match self {
            EngineKind::Auto => "auto",
            EngineKind::Gpu => "gpu",
            EngineKind::Cpu => "cpu",
            EngineKind::Burn => "burn",
        }
    }
}

/// The recipe's flags: each value goes through the link's validator (`Settings::set_flag`).
#[derive(Args)]
struct RecipeArgs {
    /// Epochs, 1 to 1000 [default: 2]
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<String>,
    /// Batch size, 1 to 1024 [default: 4]
    #[arg(long, allow_negative_numbers = true)]
    batch: Option<String>,
    /// Base learning rate, above 0 [default: 0.001]
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<String>,
    /// SGD momentum, 0 to below 1 [default: 0.9]
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<String>,
    /// Weight decay, 0 or more [default: 0]
    #[arg(long = "weight-decay", allow_negative_numbers = true)]
    weight_decay: Option<String>,
    /// Seed of the initial weights and the shuffles [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<String>,
    /// Train on the first N training images
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    limit: Option<String>,
    /// none, flip, crop or flip,crop [default: none]
    #[arg(long, allow_negative_numbers = true)]
    augment: Option<String>,
    /// constant, cosine, step:E:G or warmup:W:S:E (per step) [default: constant]
    #[arg(long, allow_negative_numbers = true)]
    schedule: Option<String>,
    /// lenet, wide, C1-C2-F1-F2 (widths 1 to 256), or any network in the text form (see `tabcnn net`) [default: lenet]
    #[arg(long, allow_negative_numbers = true)]
    net: Option<String>,
    /// Label smoothing of the loss, 0 to below 1 (PyTorch's label_smoothing) [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    label_smoothing: Option<String>,
    /// Nesterov momentum (PyTorch's SGD nesterov=True)
    #[arg(long)]
    nesterov: bool,
    /// Learning-rate multipliers of the weights, biases and batch norm's parameters, e.g.
    /// 1,64,64 (each group's weight decay is divided by its multiplier) [default: 1,1,1]
    #[arg(long, value_name = "W,B,N")]
    lr_groups: Option<String>,
    /// sgd or adamw (PyTorch's AdamW, betas 0.9, 0.999: --momentum is not used) [default: sgd]
    #[arg(long)]
    optimizer: Option<String>,
}

impl RecipeArgs {
    /// The recipe and the limit, every value checked as the link checks it.
    fn settings(&self) -> Result<(Hyper, Option<usize>), String> {
        let mut s = Settings::default();
        let flags = [
            ("epochs", &self.epochs),
            ("batch", &self.batch),
            ("lr", &self.lr),
            ("momentum", &self.momentum),
            ("weight-decay", &self.weight_decay),
            ("seed", &self.seed),
            ("limit", &self.limit),
            ("augment", &self.augment),
            ("schedule", &self.schedule),
            ("net", &self.net),
            ("label-smoothing", &self.label_smoothing),
            ("lr-groups", &self.lr_groups),
            ("optimizer", &self.optimizer),
        ];
        for (key, v) in flags {
            if let Some(v) = v {
                s.set_flag(key, v)?;
            }
        }
        if self.nesterov {
            s.set_flag("nesterov", "1")?;
        }
        Ok((s.hyper, s.limit))
    }
}

#[derive(Args)]
struct TrainArgs {
    /// CIFAR-10: a directory of binary batches or cifar-10-binary.tar.gz [default: the sample]
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    #[command(flatten)]
    recipe: RecipeArgs,
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    engine: EngineKind,
    /// Continue from the weights of this model file
    #[arg(long, value_name = "FILE")]
    load: Option<String>,
    /// Save the trained model here (safetensors)
    #[arg(long, value_name = "FILE")]
    save: Option<String>,
    #[command(flatten)]
    threads: ThreadsArg,
    /// Steps between progress reports
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    report: u64,
}

#[derive(Args)]
struct EvalArgs {
    /// The model file (safetensors, PyTorch names)
    #[arg(long, value_name = "FILE")]
    model: String,
    /// CIFAR-10: a directory of binary batches or cifar-10-binary.tar.gz [default: the sample]
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    engine: EngineKind,
    #[command(flatten)]
    threads: ThreadsArg,
    /// The model's network, for a file that does not carry it (one PyTorch saved); a file
    /// tabcnn saved carries its own
    #[arg(long, allow_negative_numbers = true)]
    net: Option<String>,
}

/// The CPU engine's threads.
#[derive(Args)]
struct ThreadsArg {
    /// Threads of the CPU engine, 1 to 1024 [default: every core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

impl ThreadsArg {
    fn count(&self) -> usize {
        self.threads.map_or_else(tabcnn::cpu::all_cores, usize::from)
    }
}

#[derive(Args)]
struct BenchArgs {
    /// CIFAR-10: a directory of binary batches or cifar-10-binary.tar.gz [default: the sample]
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Engines to race, comma-separated [default: gpu,cpu, and burn in a build with it]
    #[arg(long, value_enum, value_delimiter = ',')]
    engine: Vec<EngineKind>,
    /// Batch sizes, comma-separated, each 1 to 1024 and at most the training images
    #[arg(long, value_delimiter = ',', default_value = "4,64", allow_negative_numbers = true)]
    batches: Vec<String>,
    /// Seconds timed per engine and batch, above 0 and at most 3600
    #[arg(long, default_value_t = 5.0, value_parser = seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// Time each kernel of a GPU training step
    #[arg(long)]
    profile: bool,
    /// Print what one GPU training step launches
    #[arg(long)]
    shape: bool,
    /// lenet, wide, C1-C2-F1-F2 (widths 1 to 256), or any network in the text form (see `tabcnn net`) [default: lenet]
    #[arg(long)]
    net: Option<String>,
    /// Thread counts of the CPU engine's rows, comma-separated, each 1 to 1024 [default: every core]
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Vec<u16>,
}

/// A benchmark's duration: finite, above 0, at most an hour.
fn seconds(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("{v}: the seconds must be a number above 0 and at most 3600")),
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

/// The network `hyper` trains that is not LeNet-shaped, ready to run (its text was checked
/// when it was set).
fn plan_of(text: &str) -> Result<Plan, String> {
    Plan::new(&tabcnn::net::text::parse(text)?)
}

/// The engine of a network that is not LeNet-shaped: the GPU engine or the CPU engine, chosen
/// as for LeNet (burn trains LeNet only).
/// `steps`: the training steps behind `params` (a loaded model's), where the engine's step
/// count (batch norm's `num_batches_tracked`, dropout's masks) goes on from.
#[allow(clippy::too_many_arguments)]
fn net_engine(kind: EngineKind, text: &str, params: &[f32], buffers: &[f32], steps: u64, hyper: &Hyper, d: &Cifar, threads: usize) -> Result<Engine, String> {
    if kind == EngineKind::Burn {
        return Err(format!("--engine burn trains the tutorial's LeNet only, not '{text}'"));
    }
    let plan = plan_of(text)?;
    Ok(match pick_gpu(kind)? {
        Some(g) => {
            let mut e = pollster::block_on(GpuNetEngine::new(&g, plan, params, buffers, hyper, &d.train, &d.test)).map_err(|e| e.to_string())?;
            e.set_steps_done(steps);
            Engine::GpuNet(e)
        }
        None => {
            let mut e = NetEngine::new(plan, params, buffers, hyper, &d.train, &d.test, threads).map_err(|e| e.to_string())?;
            e.set_steps_done(steps);
            Engine::Net(e)
        }
    })
}

/// The GPU `kind` asks for: `gpu` one or an error, `cpu` none, `auto` one where there is a
/// hardware adapter (a software one is slower here than the CPU engine), said on stderr.
fn pick_gpu(kind: EngineKind) -> Result<Option<Gpu>, String> {
    Ok(match kind {
        EngineKind::Cpu | EngineKind::Burn => None,
        EngineKind::Gpu => Some(pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?),
        EngineKind::Auto => match pollster::block_on(Gpu::new()) {
            // A software adapter emulates the GPU on the CPU's cores and trains this network
            // slower than the CPU engine does (BENCHMARKS.md), as the page decides too.
            Ok(g) if g.software => {
                eprintln!("note: the only GPU adapter is a software one ({}), slower here than the CPU engine\nnote: training with the CPU engine instead (--engine gpu trains on the adapter anyway)", g.adapter);
                None
            }
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("note: {e}\nnote: training with the CPU engine instead");
                None
            }
        },
    })
}

/// Build the engine the user asked for; `auto` falls back to the CPU with a notice.
fn make_engine(kind: EngineKind, params: Vec<f32>, hyper: &Hyper, d: &Cifar, threads: usize) -> Result<Engine, String> {
    if let Some(text) = hyper.layers_text() {
        let buffers = plan_of(&text)?.params.init_buffers();
        return net_engine(kind, &text, &params, &buffers, 0, hyper, d, threads);
    }
    if kind == EngineKind::Burn && hyper.net != Arch::LENET {
        return Err(format!("--engine burn trains the tutorial's LeNet only, not the {} network", hyper.net.name()));
    }
    if kind == EngineKind::Burn {
        return burn_engine(&pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?, &params, hyper, d);
    }
    Ok(match pick_gpu(kind)? {
        Some(g) => Engine::Gpu(pollster::block_on(GpuEngine::new(&g, &params, hyper.batch, hyper, &d.train, &d.test)).map_err(|e| e.to_string())?),
        None => Engine::Cpu(CpuEngine::new(&params, hyper, &d.train, &d.test, threads).map_err(|e| e.to_string())?),
    })
}

fn print_eval(r: &EvalResult, classes: &[String], seconds: f64) {
    let caveat = if r.not_finite > 0 { format!(" (means nothing: the outputs of {} images are not finite)", r.not_finite) } else { String::new() };
    println!("Accuracy of the network on the {} test images: {} %{caveat}", r.total(), (100.0 * r.accuracy()).round());
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

/// A model file of any network: its text (the file's own, else `net`), parameters and
/// buffers; a file without a text is read as one of the LeNet-shaped networks.
fn load_net_model(path: &str, net: Option<&str>) -> Result<checkpoint::NetModel, String> {
    let bytes = data::read_bounded(Path::new(path), checkpoint::MAX_NET_MODEL_BYTES, "model file").map_err(|e| e.to_string())?;
    checkpoint::from_safetensors_net(&bytes, path, net)
}

/// Whether a file can be written at `path`, checked before a run that would save there: not a
/// folder, in a folder that exists, where a file can be made (one is, and removed).
fn check_destination(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if p.is_dir() {
        return Err(format!("--save {path}: is a folder; name a file in it (for example {})", p.join("model.safetensors").display()));
    }
    if p.exists() && !p.is_file() {
        return Err(format!("--save {path}: is not a regular file (a device or a pipe)"));
    }
    let dir = folder_of(p);
    if !dir.is_dir() {
        return Err(format!("--save {path}: the folder {} does not exist", dir.display()));
    }
    let probe = temp_beside(p);
    std::fs::File::create_new(&probe).map_err(|e| format!("--save {path}: cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The folder a file path is in ("." for a bare name).
fn folder_of(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A temporary name beside `p` (same folder, so a rename replaces `p` in one step).
fn temp_beside(p: &Path) -> PathBuf {
    let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    folder_of(p).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write `bytes` to `path` through a temporary file and a rename: an interrupted save leaves
/// the previous file as it was, never half a model.
fn write_atomically(path: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = temp_beside(Path::new(path));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{path}: cannot write: {e}")
    })
}

/// Set by the first Ctrl-C: training stops after its chunk. A second one exits at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn catch_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this chunk of steps (press it again to quit at once, without saving)");
    });
}

fn cmd_train(a: TrainArgs) -> Result<(), String> {
    let (hyper, limit) = a.recipe.settings()?;
    let TrainArgs { data: data_path, engine: engine_kind, load, save, report, threads, .. } = a;
    let report = report as usize;
    let augment = tabcnn::recipe::augment_name(hyper.flip, hyper.crop);
    // Before anything is trained: a run whose save cannot land would be lost.
    if let Some(path) = &save {
        check_destination(path)?;
    }
    let mut data = load_data(data_path)?;
    if let Some(n) = limit {
        data.train.truncate(n);
        println!("data: training on the first {} images (--limit)", data.train.len());
    }
    if data.train.len() < hyper.batch {
        return Err(format!("batch {} is larger than the {} training images", hyper.batch, data.train.len()));
    }
    let mut engine = match &load {
        Some(p) => {
            // The file's network (its own text, or LeNet's widths from its shapes) must be the
            // one asked for.
            let m = load_net_model(p, None)?;
            if tabcnn::recipe::parse_net(&m.text)? != (hyper.net, hyper.layers.clone()) {
                let asked = hyper.layers.clone().unwrap_or_else(|| hyper.net.name());
                return Err(format!("{p} holds the network '{}', not '{asked}': add --net '{}'", checkpoint::shown_text(&m.text), checkpoint::shown_text(&m.text)));
            }
            println!("model: continuing from {p} (after {} steps)", m.steps);
            match hyper.layers_text() {
                Some(text) => net_engine(engine_kind, &text, &m.params, &m.buffers, m.steps, &hyper, &data, threads.count())?,
                None => make_engine(engine_kind, m.params, &hyper, &data, threads.count())?,
            }
        }
        None => match &hyper.layers {
            Some(text) => make_engine(engine_kind, plan_of(text)?.params.init(hyper.seed), &hyper, &data, threads.count())?,
            None => make_engine(engine_kind, init_params(&Layout::new(hyper.net), hyper.seed), &hyper, &data, threads.count())?,
        },
    };
    println!("engine: {}", engine.device());
    let (name, count) = match &hyper.layers {
        Some(text) => (format!("'{text}'"), plan_of(text)?.params.count()),
        None => (hyper.net.name(), Layout::new(hyper.net).count()),
    };
    let mut extras = String::new();
    if hyper.label_smoothing > 0.0 {
        extras += &format!(", label smoothing {}", hyper.label_smoothing);
    }
    if hyper.nesterov {
        extras += ", Nesterov";
    }
    if hyper.optimizer == tabcnn::recipe::Optimizer::AdamW {
        extras += ", AdamW";
    }
    if hyper.lr_groups != [1.0; 3] {
        let [w, b, n] = hyper.lr_groups;
        extras += &format!(", lr x {w} weights, x {b} biases, x {n} batch norm");
    }
    println!(
        "recipe: {} network ({} parameters), batch {}, lr {} ({} schedule), momentum {}, weight decay {}, augment {}, {} epoch(s), seed {}{extras}",
        name, count, hyper.batch, hyper.lr, hyper.schedule, hyper.momentum, hyper.weight_decay, augment, hyper.epochs, hyper.seed
    );
    let steps_per_epoch = data.train.len() / hyper.batch;
    // The bar updates every `report` steps; as in the tutorial, a line stays every 2000 steps.
    let mut last_step = 0;
    catch_ctrl_c();
    let stop = || INTERRUPTED.load(Ordering::SeqCst);
    let result = pollster::block_on(train::train_until(
        &mut engine,
        &hyper,
        report,
        |p| {
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
        },
        stop,
    ));
    println!();
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(e.to_string()),
    };
    if let Some((epoch, step)) = report.stopped_at {
        let at = format!("epoch {epoch} of {}, step {step} of {steps_per_epoch} (step {} of the run)", hyper.epochs, report.steps);
        return Err(match &save {
            Some(path) => {
                save_model(&engine, path, &hyper)?;
                format!("interrupted at {at}: the model of that step is saved to {path} (--load {path} continues from its weights)")
            }
            None => format!("interrupted at {at}; nothing saved (no --save)"),
        });
    }
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
    if let Some(path) = &save {
        save_model(&engine, path, &hyper)?;
    }
    r.problem().map_or(Ok(()), Err)
}

/// The engine's weights as a model file at `path` (written through a temporary file); a
/// network that is not LeNet-shaped carries its text and batch norm's statistics.
fn save_model(engine: &Engine, path: &str, hyper: &Hyper) -> Result<(), String> {
    let p = pollster::block_on(engine.read_params()).map_err(|e| e.to_string())?;
    let bytes = match (engine, &hyper.layers) {
        (Engine::Net(n), Some(text)) => checkpoint::to_safetensors_net(&p, &n.read_buffers(), n.steps_done(), &n.plan.params, text),
        (Engine::GpuNet(g), Some(text)) => {
            let (buffers, steps) = pollster::block_on(async { Ok::<_, tabcnn::gpu::EngineError>((g.read_buffers().await?, g.steps_done().await?)) }).map_err(|e| e.to_string())?;
            checkpoint::to_safetensors_net(&p, &buffers, steps, &g.plan.params, text)
        }
        _ => checkpoint::to_safetensors(&p, &Layout::new(hyper.net)),
    };
    write_atomically(path, &bytes)?;
    println!("model saved to {path} (safetensors, PyTorch state_dict names)");
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<(), String> {
    let EvalArgs { model, data: data_path, engine: engine_kind, threads, net } = a;
    // The file's own text comes first; a --net that differs from it is refused.
    let m = load_net_model(&model, net.as_deref())?;
    let data = load_data(data_path)?;
    let (arch, layers) = tabcnn::recipe::parse_net(&m.text).map_err(|e| format!("--net {}: {e}", checkpoint::shown_text(&m.text)))?;
    // (An engine trains at some batch: 2, so a batch norm has two values per channel.)
    let hyper = Hyper { batch: data.train.len().clamp(1, 2), net: arch, layers: layers.clone(), ..Hyper::default() };
    let engine = match &layers {
        Some(t) => net_engine(engine_kind, t, &m.params, &m.buffers, m.steps, &hyper, &data, threads.count())?,
        None => make_engine(engine_kind, m.params, &hyper, &data, threads.count())?,
    };
    println!("engine: {}", engine.device());
    let t = Instant::now();
    let r = pollster::block_on(engine.evaluate()).map_err(|e| e.to_string())?;
    print_eval(&r, &data.classes, t.elapsed().as_secs_f64());
    r.problem().map_or(Ok(()), Err)
}

fn cmd_bench(a: BenchArgs) -> Result<(), String> {
    let mut s = Settings::default();
    if let Some(n) = &a.net {
        s.set_flag("net", n)?;
    }
    let net = s.hyper.net;
    // Each batch size as the link checks one; past the training set it is refused below.
    let mut batches = Vec::new();
    for b in &a.batches {
        s.set_shown("batch", b.trim(), &format!("--batches {}", b.trim()))?;
        batches.push(s.hyper.batch);
    }
    let engines = match a.engine.is_empty() {
        true if cfg!(feature = "burn") => vec![EngineKind::Gpu, EngineKind::Cpu, EngineKind::Burn],
        true => vec![EngineKind::Gpu, EngineKind::Cpu],
        false => a.engine.clone(),
    };
    if engines.contains(&EngineKind::Auto) {
        return Err("--engine: bench races named engines (gpu, cpu, burn), not auto".into());
    }
    let (data_path, seconds, profile, shape) = (a.data, a.seconds, a.profile, a.shape);
    let threads: Vec<usize> = if a.threads.is_empty() { vec![tabcnn::cpu::all_cores()] } else { a.threads.iter().map(|&t| t as usize).collect() };
    // The CPU rows set against what this machine's cores do on one large sgemm (gemm crate, all
    // its threads): the ceiling a CPU engine of matrix products could reach.
    let ceilings: Vec<(usize, f64)> = if engines.contains(&EngineKind::Cpu) { threads.iter().map(|&t| (t, sgemm_ceiling(t))).collect() } else { Vec::new() };
    for (t, g) in &ceilings {
        println!("sgemm ceiling: {g:.1} GFLOP/s on {t} thread(s) (1024x1024x1024, gemm crate)");
    }
    let layers = s.hyper.layers.clone();
    let (flops, name, count) = match &layers {
        Some(text) => {
            let cost = tabcnn::net::cost::cost(&tabcnn::net::text::parse(text)?)?;
            (cost.train_flops() as f64, format!("'{text}'"), plan_of(text)?.params.count())
        }
        None => (net.train_flops_per_image() as f64, net.name(), Layout::new(net).count()),
    };
    if layers.is_some() && engines.contains(&EngineKind::Burn) {
        return Err("--engine burn trains the tutorial's LeNet only: race gpu and cpu for this network (--engine gpu,cpu)".into());
    }
    let data = load_data(data_path)?;
    println!("network: {name} ({count} parameters)");
    if let Some(&b) = batches.iter().find(|&&b| b > data.train.len()) {
        return Err(format!("--batches: batch {b} is larger than the {} training images", data.train.len()));
    }
    let gpu = if engines.iter().any(|&e| e == EngineKind::Gpu || e == EngineKind::Burn) { Some(pollster::block_on(Gpu::new()).map_err(|e| e.to_string())?) } else { None };
    println!("{:<8} {:>6} {:>12} {:>10} {:>10} {:>9} {:>10}  device", "engine", "batch", "images/s", "steps", "vs burn", "GFLOP/s", "of sgemm");
    for batch in batches {
        // Every engine at this batch first, then the rows, so each can be set against burn.
        let mut rows = Vec::new();
        // The CPU engine once per thread count.
        let runs = engines.iter().flat_map(|&e| match e {
            EngineKind::Cpu => threads.iter().map(|&t| (e, t)).collect::<Vec<_>>(),
            _ => vec![(e, 0)],
        });
        for (e, t) in runs {
            let hyper = Hyper { batch, net, layers: layers.clone(), ..Hyper::default() };
            let params = init_params(&Layout::new(net), 0);
            let mut engine = match (e, &layers) {
                (EngineKind::Gpu | EngineKind::Cpu, Some(text)) => {
                    let plan = plan_of(text)?;
                    let (p, b) = (plan.params.init(0), plan.params.init_buffers());
                    match e {
                        EngineKind::Gpu => {
                            Engine::GpuNet(pollster::block_on(GpuNetEngine::new(gpu.as_ref().unwrap(), plan, &p, &b, &hyper, &data.train, &data.test)).map_err(|e| e.to_string())?)
                        }
                        _ => Engine::Net(NetEngine::new(plan, &p, &b, &hyper, &data.train, &data.test, t).map_err(|e| e.to_string())?),
                    }
                }
                (e, _) => match e {
                    EngineKind::Gpu => {
                        Engine::Gpu(pollster::block_on(GpuEngine::new(gpu.as_ref().unwrap(), &params, batch, &hyper, &data.train, &data.test)).map_err(|e| e.to_string())?)
                    }
                    EngineKind::Cpu => Engine::Cpu(CpuEngine::new(&params, &hyper, &data.train, &data.test, t).map_err(|e| e.to_string())?),
                    EngineKind::Burn => burn_engine(gpu.as_ref().unwrap(), &params, &hyper, &data)?,
                    EngineKind::Auto => unreachable!("refused above"),
                },
            };
            let (ips, steps) = bench_engine(&mut engine, seconds)?;
            let name = if e == EngineKind::Cpu { format!("cpu@{t}") } else { e.name().to_string() };
            // GFLOP/s (3 x the forward's multiply-adds x 2 per image) and the share of the
            // ceiling on as many threads.
            let (gf, share) = match ceilings.iter().find(|c| e == EngineKind::Cpu && c.0 == t) {
                Some(&(_, ceiling)) => (format!("{:.1}", ips * flops / 1e9), format!("{:.1} %", 100.0 * ips * flops / 1e9 / ceiling)),
                None => (String::new(), String::new()),
            };
            rows.push((name, ips, steps, engine.device(), gf, share));
            match &engine {
                Engine::Gpu(g) if shape => print_shape(&g.step_shape(), batch),
                Engine::GpuNet(g) if shape => print_shape(&g.step_shape(), batch),
                _ => {}
            }
            match &engine {
                Engine::Gpu(g) if profile => print_profile(g)?,
                Engine::GpuNet(_) if profile => eprintln!("note: --profile times LeNet's kernels so far; --shape shows this network's step"),
                _ => {}
            }
        }
        let burn = rows.iter().find(|r| r.0 == "burn").map(|r| r.1);
        for (e, ips, steps, device, gf, share) in rows {
            let ratio = match burn {
                Some(b) if e != "burn" => format!("{:.2}x", ips / b),
                _ => String::new(),
            };
            println!("{:<8} {:>6} {:>12.0} {:>10} {:>10} {:>9} {:>10}  {}", e, batch, ips, steps, ratio, gf, share, device);
        }
    }
    Ok(())
}

/// GFLOP/s of one 1024x1024x1024 f32 product on `threads` threads (the best of a few, after a
/// warm-up): the machine's sgemm ceiling that bench sets the CPU engine against.
fn sgemm_ceiling(threads: usize) -> f64 {
    let n = 1024;
    let (a, b, mut c) = (vec![1.0f32; n * n], vec![0.5f32; n * n], vec![0.0f32; n * n]);
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool for the sgemm ceiling");
    let mut best = 0.0f64;
    for _ in 0..4 {
        let t = Instant::now();
        // SAFETY: three n x n row-major matrices, strides within them.
        pool.install(|| unsafe {
            gemm::gemm(n, n, n, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, n as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, par)
        });
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(&c);
    best
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
fn print_shape(s: &tabcnn::gpu::StepShape, batch: usize) {
    let total = s.macs().max(1) as f64;
    println!("    one training step at batch {batch}: {} dispatches, {} compute pass(es), {} buffer copies", s.kernels.len(), s.passes, s.copies);
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
    let r = match Cli::parse().cmd {
        Cmd::Train(a) => cmd_train(*a),
        Cmd::Eval(a) => cmd_eval(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Net(a) => cmd_net(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
