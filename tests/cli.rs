//! The `tabcnn` binary as a user runs it: train, save, eval, and clear errors with exit code 1.

use std::process::Command;

fn tabcnn(args: &[&str]) -> (bool, String) {
    tabcnn_env(args, &[])
}

fn tabcnn_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tabcnn")).args(args).envs(env.iter().copied()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A model file's path in a directory of this test process's own.
fn model_path(dir: &str, file: &str) -> String {
    let dir = std::env::temp_dir().join(format!("{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(file).to_str().unwrap().to_string()
}

fn accuracy_line(text: &str) -> String {
    text.lines().find(|l| l.starts_with("(test accuracy")).unwrap_or_else(|| panic!("no accuracy in:\n{text}")).split(',').next().unwrap().to_string()
}

/// Two evaluations of the same weights by two implementations agree: each prediction is the
/// same but where the top two logits tie to within rounding, which may flip it (0.1 % of the
/// 1,000 test images each; two allowed, as tests/engine.rs allows two of 1,000).
fn assert_same_accuracy(got: &str, want: &str, what: &str) {
    let pct = |l: &str| -> f64 { l.trim_start_matches("(test accuracy ").trim_end_matches(" %").parse().unwrap() };
    let (a, b) = (pct(got), pct(want));
    assert!((a - b).abs() <= 0.21, "{what}: {a} %, and {b} % where it was made");
}

#[test]
fn train_save_and_eval_on_both_engines() {
    let m = &model_path("tabcnn-cli", "m.safetensors");
    let (ok, text) = tabcnn(&["train", "--epochs", "1", "--limit", "400", "--lr", "0.01", "--engine", "cpu", "--save", m]);
    println!("{text}");
    assert!(ok, "{text}");
    for want in [
        "engine: CPU",
        "recipe: lenet network (62006 parameters), batch 4, lr 0.01",
        "trained 100 steps (400 images)",
        "Accuracy of the network on the 1000 test images:",
        "Accuracy for class: plane is",
        "Accuracy for class: truck is",
        "model saved to",
    ] {
        assert!(text.contains(want), "output lacks '{want}'");
    }
    let trained = accuracy_line(&text);
    let (ok, text) = tabcnn(&["eval", "--model", m, "--engine", "gpu"]);
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("engine: GPU"));
    assert_same_accuracy(&accuracy_line(&text), &trained, "the saved model evaluated on the GPU");
    // --load continues from the saved weights.
    let (ok, text) = tabcnn(&["train", "--epochs", "1", "--limit", "40", "--load", m, "--engine", "gpu"]);
    assert!(ok && text.contains(&format!("model: continuing from {m}")), "{text}");
}

/// The wider network: trained and saved; eval reads its widths from the file, on either
/// engine; --load of it needs --net wide; burn trains LeNet only; a bad --net is refused; a
/// network of 64 filters trains on the GPU.
#[test]
fn the_wide_network_trains_saves_and_evaluates() {
    let m = &model_path("tabcnn-cli-wide", "wide.safetensors");
    let (ok, text) = tabcnn(&["train", "--net", "wide", "--epochs", "1", "--limit", "320", "--batch", "16", "--lr", "0.01", "--engine", "cpu", "--save", m]);
    println!("{text}");
    assert!(ok && text.contains("recipe: wide network (256794 parameters), batch 16"), "{text}");
    let trained = accuracy_line(&text);
    let (ok, text) = tabcnn(&["eval", "--model", m, "--engine", "gpu"]);
    assert!(ok, "{text}");
    assert_same_accuracy(&accuracy_line(&text), &trained, "the wide model evaluated on the GPU");
    let (ok, text) = tabcnn(&["train", "--epochs", "1", "--limit", "40", "--load", m]);
    assert!(!ok && text.contains("holds the network 'wide', not 'lenet': add --net 'wide'"), "{text}");
    let (ok, text) = tabcnn(&["train", "--net", "wide", "--engine", "burn", "--limit", "40"]);
    assert!(!ok && (text.contains("burn trains the tutorial's LeNet only") || text.contains("built without burn")), "{text}");
    let (ok, text) = tabcnn(&["train", "--net", "huge"]);
    assert!(!ok && text.contains("--net huge: the network is 'lenet', 'wide' or C1-C2-F1-F2"), "{text}");
    // conv2 of 102,400 weights: past the 64 KiB uniform window the GPU kernels once read
    // weights through, and trained on the GPU now
    let (ok, text) = tabcnn(&["train", "--net", "64-64-10-10", "--engine", "gpu", "--epochs", "1", "--limit", "40", "--batch", "8"]);
    assert!(ok && text.contains("64-64-10-10"), "{text}");
    accuracy_line(&text);
}

#[test]
fn bad_input_fails_with_a_message_naming_it() {
    let (ok, text) = tabcnn(&["eval", "--model", "/nonexistent/m.safetensors"]);
    assert!(!ok && text.contains("error: /nonexistent/m.safetensors: cannot read"), "{text}");
    let (ok, text) = tabcnn(&["train", "--data", "/nonexistent/data"]);
    assert!(!ok && text.contains("error: /nonexistent/data: no such file or directory"), "{text}");
    let (ok, text) = tabcnn(&["train", "--lr", "fast"]);
    assert!(!ok && text.contains("--lr fast: the learning rate must be a number above 0"), "{text}");
    let (ok, text) = tabcnn(&["train", "--frobnicate"]);
    assert!(!ok && text.contains("unexpected argument '--frobnicate'"), "{text}");
    let (ok, text) = tabcnn(&["train", "--lr", "10", "--limit", "400", "--engine", "cpu"]);
    assert!(!ok && text.contains("training diverged") && text.contains("at step"), "{text}");
}

#[test]
fn without_a_gpu_auto_falls_back_to_the_cpu_and_gpu_says_why() {
    // WGPU_BACKEND=dx12 on Linux: wgpu finds no adapter, as on a machine without a GPU driver.
    let none = [("WGPU_BACKEND", "dx12")];
    let (ok, text) = tabcnn_env(&["train", "--engine", "gpu", "--limit", "40", "--epochs", "1"], &none);
    assert!(!ok && text.contains("error: no GPU adapter found") && text.contains("--engine cpu"), "{text}");
    let (ok, text) = tabcnn_env(&["train", "--limit", "40", "--epochs", "1"], &none);
    assert!(ok, "{text}");
    assert!(text.contains("note: training with the CPU engine instead") && text.contains("engine: CPU"), "{text}");
    assert!(text.contains("Accuracy of the network on the 1000 test images:"), "{text}");
}

/// auto trains on a hardware GPU, and on the CPU engine when the only adapter is a software one
/// (lavapipe in CI), saying so.
#[test]
fn auto_skips_a_software_adapter_and_says_so() {
    let (ok, text) = tabcnn(&["train", "--limit", "40", "--epochs", "1"]);
    assert!(ok, "{text}");
    // What adapter there is: the benchmark's GPU row names it, "(Vulkan, Cpu)" for lavapipe.
    let (_, probe) = tabcnn(&["bench", "--engine", "gpu", "--batches", "4", "--seconds", "0.05"]);
    let row = probe.lines().find(|l| l.starts_with("gpu ")).map(|l| l.trim_end().to_string());
    match row {
        Some(r) if r.ends_with(", Cpu)") => {
            assert!(text.contains("note: the only GPU adapter is a software one (") && text.contains("engine: CPU"), "{text}");
            assert!(text.contains("--engine gpu trains on the adapter anyway"), "{text}");
        }
        Some(_) => assert!(text.contains("engine: GPU") && !text.contains("software one"), "{text}\n{probe}"),
        None => assert!(text.contains("note: training with the CPU engine instead") && text.contains("engine: CPU"), "{text}\n{probe}"),
    }
}

#[cfg(feature = "burn")]
#[test]
fn burn_engine_trains_evaluates_and_races_ours() {
    let m = &model_path("tabcnn-cli-burn", "m.safetensors");
    let (ok, text) = tabcnn(&["train", "--epochs", "1", "--limit", "200", "--lr", "0.01", "--engine", "burn", "--save", m]);
    println!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("engine: burn-wgpu 0.22.1: ") && text.contains("trained 50 steps (200 images)"), "{text}");
    let trained = accuracy_line(&text);
    // burn's weights, saved with PyTorch's names, evaluate the same on our GPU engine.
    let (ok, text) = tabcnn(&["eval", "--model", m, "--engine", "gpu"]);
    assert!(ok, "{text}");
    assert_same_accuracy(&accuracy_line(&text), &trained, "burn's model evaluated on our GPU engine");
    // The benchmark prints both engines at each batch and ours against burn.
    let (ok, text) = tabcnn(&["bench", "--engine", "gpu,burn", "--batches", "4,9", "--seconds", "0.2"]);
    println!("{text}");
    assert!(ok, "{text}");
    for batch in ["4", "9"] {
        let gpu = text.lines().find(|l| l.split_whitespace().take(2).eq(["gpu", batch])).unwrap_or_else(|| panic!("no gpu row at batch {batch}"));
        assert!(gpu.split_whitespace().nth(4).is_some_and(|r| r.ends_with('x')), "no ratio in '{gpu}'");
        assert!(text.lines().any(|l| l.split_whitespace().take(2).eq(["burn", batch])), "no burn row at batch {batch}");
    }
}

#[cfg(not(feature = "burn"))]
#[test]
fn burn_engine_needs_the_feature_and_says_so() {
    let (ok, text) = tabcnn(&["train", "--engine", "burn", "--limit", "40"]);
    assert!(!ok && text.contains("--features burn"), "{text}");
}

#[test]
fn augmentation_and_schedules_from_the_command_line() {
    let (ok, text) = tabcnn(&["train", "--epochs", "2", "--limit", "200", "--lr", "0.01", "--engine", "gpu", "--augment", "flip,crop", "--schedule", "step:1:0.5"]);
    assert!(ok, "{text}");
    assert!(text.contains("lr 0.01 (step:1:0.5 schedule)") && text.contains("augment flip,crop"), "{text}");
    assert!(text.contains("trained 100 steps"), "{text}");
    let (ok, text) = tabcnn(&["train", "--augment", "rotate"]);
    assert!(!ok && text.contains("--augment rotate: augment 'rotate': expected none, flip, crop or flip,crop"), "{text}");
    let (ok, text) = tabcnn(&["train", "--schedule", "step:0:1"]);
    assert!(!ok && text.contains("--schedule step:0:1: schedule 'step:0:1'"), "{text}");
}

/// The CLI refuses what the page's link refuses, with the same words (one validator,
/// `recipe::Settings`), and what would divide by zero, loop forever or overflow: each an error
/// naming the flag, exit code 1 (2 for what clap itself refuses), never a panic or a hang.
#[test]
fn the_cli_refuses_what_the_link_refuses_in_the_same_words() {
    let link = |q: &str| tabcnn::recipe::Settings::from_query(q).1.join("; ");
    for (args, words) in [
        (vec!["train", "--epochs", "18446744073709551615"], "epochs must be a whole number from 1 to 1000"),
        (vec!["train", "--lr", "0"], "the learning rate must be a number above 0"),
        (vec!["train", "--lr", "-0.1"], "the learning rate must be a number above 0"),
        (vec!["train", "--momentum", "1"], "momentum must be a number from 0 to below 1"),
        (vec!["train", "--weight-decay", "-1"], "weight decay must be a number of 0 or more"),
        (vec!["train", "--batch", "0"], "the batch size must be a whole number from 1 to 1024"),
        (vec!["train", "--limit", "0"], "limit must be a whole number of training images, 1 or more"),
        (vec!["train", "--net", "300-16-120-84"], "the network is 'lenet', 'wide' or C1-C2-F1-F2 (widths 1 to 256)"),
        (vec!["bench", "--batches", "0"], "the batch size must be a whole number from 1 to 1024"),
        (vec!["bench", "--batches", "4,5000"], "the batch size must be a whole number from 1 to 1024"),
    ] {
        let (ok, text) = tabcnn(&args);
        println!("{}: {}", args.join(" "), text.trim());
        // bench names the one batch of its list that is refused
        let value = args[2].rsplit(',').next().unwrap();
        let shown = format!("{} {}", args[1], if args[1] == "--batches" { value } else { args[2] });
        assert!(!ok && text.contains(&format!("error: {shown}: {words}")), "{text}");
        // the link says the same of the same value
        let key = if args[1] == "--batches" { "batch" } else { args[1].trim_start_matches("--") };
        assert!(link(&format!("{key}={value}")).contains(words), "the link's words for {key}={value}: {}", link(&format!("{key}={value}")));
    }
    let (ok, text) = tabcnn(&["bench", "--seconds", "0"]);
    assert!(!ok && text.contains("the seconds must be a number above 0"), "{text}");
    let (ok, text) = tabcnn(&["bench", "--engine", "auto"]);
    assert!(!ok && text.contains("bench races named engines"), "{text}");
    let (ok, text) = tabcnn(&["train", "--report", "0"]);
    assert!(!ok && text.contains("--report"), "{text}");
    // A batch larger than the training set: once an endless loop in bench (no step an epoch).
    let dir = std::env::temp_dir().join(format!("tabcnn-cli-small-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sample = tabcnn::data::sample_dir().join("cifar-10-batches-bin");
    let train = std::fs::read(sample.join("data_batch_1.bin")).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), &train[..10 * tabcnn::data::RECORD]).unwrap();
    std::fs::copy(sample.join("test_batch.bin"), dir.join("test_batch.bin")).unwrap();
    let d = dir.to_str().unwrap();
    let (ok, text) = tabcnn(&["bench", "--data", d, "--engine", "cpu", "--batches", "4,16", "--seconds", "0.1"]);
    assert!(!ok && text.contains("--batches: batch 16 is larger than the 10 training images"), "{text}");
    let (ok, text) = tabcnn(&["train", "--data", d, "--engine", "cpu", "--batch", "16"]);
    assert!(!ok && text.contains("batch 16 is larger than the 10 training images"), "{text}");
    let (ok, text) = tabcnn(&["--help"]);
    assert!(ok && text.contains("Usage: tabcnn <COMMAND>") && text.contains("train") && text.contains("bench"), "{text}");
}

/// Run `tabcnn args` with its output going to a file, and give up on it (killed, and the test
/// fails) if it has not exited within `deadline`: what must never hang is tested without hanging.
fn tabcnn_within(args: &[&str], deadline: std::time::Duration) -> (bool, String) {
    let log = model_path("tabcnn-cli-within", &format!("{}.log", args.join("_").replace('/', "_")));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabcnn")).args(args).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > deadline {
            let _ = child.kill();
            panic!("tabcnn {args:?} still ran after {deadline:?}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

/// Issue 27: a model path that is not a model file (a FIFO would hang the read, /dev/zero
/// would never end, a file past the largest model would fill memory) is refused before a byte
/// is read, naming the path and why.
#[test]
fn a_model_path_is_checked_before_it_is_read() {
    let fifo = model_path("tabcnn-cli-fifo", "pipe.safetensors");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success(), "mkfifo");
    let big = model_path("tabcnn-cli-big", "big.safetensors");
    // (sparse: the size is checked before a byte is read; a model of any network may be up to
    // MAX_NET_MODEL_BYTES)
    std::fs::File::create(&big).unwrap().set_len(tabcnn::checkpoint::MAX_NET_MODEL_BYTES + 1).unwrap();
    let folder = model_path("tabcnn-cli-folder", "");
    let within = std::time::Duration::from_secs(60);
    for (path, why) in [
        (fifo.as_str(), "is not a regular file (a device, a pipe or a folder): not a model file"),
        ("/dev/zero", "is not a regular file (a device, a pipe or a folder): not a model file"),
        (folder.as_str(), "is not a regular file"),
        (big.as_str(), &format!("is {} bytes, more than the {} a model file holds", tabcnn::checkpoint::MAX_NET_MODEL_BYTES + 1, tabcnn::checkpoint::MAX_NET_MODEL_BYTES)),
    ] {
        for args in [vec!["eval", "--model", path, "--engine", "cpu"], vec!["train", "--load", path, "--engine", "cpu", "--limit", "40"]] {
            let (ok, text) = tabcnn_within(&args, within);
            println!("{args:?}: {text}");
            assert!(!ok && text.contains(&format!("error: {path}: {why}")), "{args:?}: {text}");
        }
    }
}

/// Issue 27: --save is checked before training (a folder, a missing folder, a place where no
/// file can be made), and the model is written through a temporary file and a rename, which
/// leaves nothing else behind.
#[test]
fn a_save_that_cannot_land_is_refused_before_training() {
    let folder = model_path("tabcnn-cli-save", "");
    let folder = folder.trim_end_matches('/');
    for (path, why) in [
        (folder.to_string(), format!("--save {folder}: is a folder; name a file in it")),
        (format!("{folder}/missing/m.safetensors"), format!("--save {folder}/missing/m.safetensors: the folder {folder}/missing does not exist")),
        ("/proc/m.safetensors".to_string(), "--save /proc/m.safetensors: cannot write in /proc".to_string()),
    ] {
        let (ok, text) = tabcnn(&["train", "--limit", "40", "--epochs", "1", "--engine", "cpu", "--save", &path]);
        println!("{text}");
        assert!(!ok && text.contains(&why), "{path}: {text}");
        assert!(!text.contains("trained "), "refused before training: {text}");
    }
    let m = format!("{folder}/m.safetensors");
    std::fs::write(&m, b"the previous file").unwrap();
    let (ok, text) = tabcnn(&["train", "--limit", "40", "--epochs", "1", "--engine", "cpu", "--save", &m]);
    assert!(ok && text.contains(&format!("model saved to {m}")), "{text}");
    let left: Vec<String> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(left, vec!["m.safetensors".to_string()], "no temporary file is left beside the model");
    let (ok, text) = tabcnn(&["eval", "--model", &m, "--engine", "cpu"]);
    assert!(ok, "the saved model replaced the previous file and evaluates: {text}");
}

/// Issue 27: Ctrl-C during `train` stops after the chunk in flight, saves the model where the
/// run got to, says where that was, and exits non-zero; the file evaluates.
#[test]
fn ctrl_c_saves_where_the_run_got_to() {
    let m = model_path("tabcnn-cli-ctrl-c", "m.safetensors");
    let _ = std::fs::remove_file(&m);
    let log = model_path("tabcnn-cli-ctrl-c", "train.log");
    let out = std::fs::File::create(&log).unwrap();
    let args = ["train", "--limit", "400", "--epochs", "1000", "--report", "10", "--engine", "cpu", "--threads", "1", "--save", &m];
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabcnn")).args(args).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let t = std::time::Instant::now();
    // Wait until it trains (a progress line), then interrupt it as a terminal's Ctrl-C does.
    while !std::fs::read_to_string(&log).unwrap().contains("[epoch") {
        assert!(t.elapsed().as_secs() < 120 && child.try_wait().unwrap().is_none(), "no progress: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The shell's own kill (a builtin): no kill binary needs to be installed.
    assert!(Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed().as_secs() < 300, "still training after Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    println!("{text}");
    assert!(!status.success(), "an interrupted run exits non-zero");
    assert!(text.contains("Ctrl-C: stopping after this chunk") && text.contains("error: interrupted at epoch "), "{text}");
    assert!(text.contains(&format!("the model of that step is saved to {m}")) && text.contains(&format!("model saved to {m}")), "{text}");
    assert!(!text.contains("Accuracy of the network"), "no evaluation after Ctrl-C: {text}");
    let (ok, text) = tabcnn(&["eval", "--model", &m, "--engine", "cpu"]);
    assert!(ok, "the interrupted run's model evaluates: {text}");
}

/// Issue 27: a model whose weights are finite but huge (every one 1e20, a legal file)
/// overflows its outputs: eval says so on either engine instead of printing an accuracy as if
/// nothing were wrong, and exits non-zero.
#[test]
fn eval_says_when_the_outputs_are_not_finite() {
    use tabcnn::model::{Arch, Layout};
    let l = Layout::new(Arch::LENET);
    let m = model_path("tabcnn-cli-huge", "huge.safetensors");
    std::fs::write(&m, tabcnn::checkpoint::to_safetensors(&vec![1e20; l.total], &l)).unwrap();
    for engine in ["cpu", "gpu"] {
        let (ok, text) = tabcnn(&["eval", "--model", &m, "--engine", engine]);
        println!("{engine}: {text}");
        assert!(!ok, "{engine}: {text}");
        assert!(text.contains("(means nothing: the outputs of 1000 images are not finite)"), "{engine}: {text}");
        assert!(text.contains("error: the network's outputs overflowed (are not finite) on 1000 of 1000 test images"), "{engine}: {text}");
    }
}

/// `tabcnn net`: any network's table, its PyTorch program, its errors; a LeNet-shaped network
/// in the text form trains as its name does.
#[test]
fn net_shows_any_network_and_the_text_form_trains_lenet_shaped_ones() {
    let (ok, out) = tabcnn(&["net", "lenet"]);
    println!("{out}");
    assert!(ok && out.starts_with("lenet\n") && out.contains("total: 62,006 trained parameters; per image 651,720 multiply-adds forward"), "{out}");
    // Layers as separate arguments, a block and batch norm.
    let (ok, out) = tabcnn(&["net", "conv(16,3,pad=1)", "bn", "relu", "res(conv(16,3,pad=1) bn relu)", "gap", "flatten", "linear(10)"]);
    assert!(ok && out.contains("  4.1    conv(16,3,pad=1)") && out.contains("16x32x32"), "{out}");
    let (ok, out) = tabcnn(&["net", "conv(8,3) flatten linear(10)", "--pytorch"]);
    assert!(ok && out.contains("net = nn.Sequential(") && out.contains("\"2.weight\": [10, 7200],"), "{out}");
    let (ok, out) = tabcnn(&["net", "conv(6,5) maxpool(2) conv(6,5) maxpool(2) conv(6,5) maxpool(2) flatten linear(10)"]);
    assert!(!ok && out.contains("error: layer 6, maxpool(2): its input is 1x1, smaller than the window"), "{out}");
    // --net takes the text of a LeNet-shaped network: the same run as its name, bit for bit.
    let text = "conv(20,5) relu maxpool(2) conv(32,5) relu maxpool(2) flatten linear(256) relu linear(128) relu linear(10)";
    let run = |net: &str| tabcnn(&["train", "--engine", "cpu", "--threads", "1", "--net", net, "--limit", "40", "--epochs", "1", "--batch", "8", "--seed", "3"]);
    let ((ok_a, a), (ok_b, b)) = (run("wide"), run(text));
    assert!(ok_a && ok_b, "{a}\n{b}");
    // One engine, one thread, one seed: the same weights, so the same accuracy exactly.
    assert_eq!(accuracy_line(&b), accuracy_line(&a), "the wide network by its text and by its name");
}

/// Any network trains from the CLI on the CPU engine and on the GPU engine: saved with its
/// text and batch norm's statistics, evaluated from the file alone to the same accuracy (on
/// the other engine too), continued with --load; a file without its text needs --net, and a
/// wrong --net names the first tensor that differs.
#[test]
fn any_network_trains_saves_and_evaluates_on_the_cpu_engine() {
    let m = &model_path("tabcnn-cli-net", "net.safetensors");
    let net = "conv(8,3,pad=1,bias=0) bn relu maxpool(2) res(conv(8,3,pad=1,bias=0) bn(scale=0) gelu) avgpool(2) flatten dropout(0.1) linear(10)";
    let (ok, text) = tabcnn(&["train", "--net", net, "--limit", "400", "--epochs", "1", "--batch", "16", "--lr", "0.02", "--save", m]);
    println!("{text}");
    assert!(ok && text.contains(&format!("recipe: '{net}' network (")) && text.contains("engine: CPU") && text.contains("model saved to"), "{text}");
    let trained = accuracy_line(&text);
    let (ok, again) = tabcnn(&["eval", "--model", m]);
    assert!(ok, "{again}");
    assert_eq!(accuracy_line(&again), trained, "the saved model evaluated from the file alone");
    // Continued, its step count goes on: 25 steps and 5 more (batch norm's num_batches_tracked).
    let m2 = &model_path("tabcnn-cli-net", "net2.safetensors");
    let (ok, text) = tabcnn(&["train", "--net", net, "--load", m, "--limit", "40", "--epochs", "1", "--batch", "8", "--save", m2]);
    assert!(ok && text.contains(&format!("model: continuing from {m} (after 25 steps)")), "{text}");
    let saved = tabcnn::checkpoint::from_safetensors_net(&std::fs::read(m2).unwrap(), "m2", None).unwrap();
    assert_eq!(saved.steps, 30);
    let (ok, text) = tabcnn(&["eval", "--model", m, "--net", "lenet"]);
    assert!(!ok && text.contains(&format!("{m} holds the network '{net}', not 'lenet': drop --net, or give that one")), "{text}");
    let (ok, text) = tabcnn(&["train", "--load", m, "--limit", "40"]);
    assert!(!ok && text.contains(&format!("holds the network '{net}', not 'lenet': add --net '{net}'")), "{text}");
    let (ok, text) = tabcnn(&["train", "--net", "conv(8,3) flatten linear(10)", "--load", m, "--limit", "40"]);
    assert!(!ok && text.contains(&format!("holds the network '{net}', not 'conv(8,3) flatten linear(10)'")), "{text}");
    // The GPU engine trains it too, and the CPU engine scores what it saved as it did.
    let g = &model_path("tabcnn-cli-net", "gpu.safetensors");
    let (ok, text) = tabcnn(&["train", "--net", net, "--engine", "gpu", "--limit", "64", "--epochs", "1", "--batch", "16", "--save", g]);
    assert!(ok && text.contains("engine: GPU"), "{text}");
    let (ok, cpu) = tabcnn(&["eval", "--model", g, "--engine", "cpu"]);
    assert!(ok, "{cpu}");
    assert_same_accuracy(&accuracy_line(&cpu), &accuracy_line(&text), "the GPU's model evaluated on the CPU");
    let (ok, text) = tabcnn(&["train", "--net", net, "--engine", "burn", "--limit", "40"]);
    assert!(!ok && (text.contains("burn trains the tutorial's LeNet only") || text.contains("built without burn")), "{text}");
    // The same tensors without the text (as PyTorch's safetensors.torch.save_file writes them).
    let bytes = std::fs::read(m).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bare_path = model_path("tabcnn-cli-net", "bare.safetensors");
    std::fs::write(&bare_path, safetensors::serialize(st.tensors(), None).unwrap()).unwrap();
    let (ok, text) = tabcnn(&["eval", "--model", &bare_path]);
    assert!(!ok && text.contains("tensor conv1.weight is missing") && text.contains("needs its text (--net)"), "{text}");
    let (ok, text) = tabcnn(&["eval", "--model", &bare_path, "--net", net]);
    assert!(ok, "{text}");
    assert_eq!(accuracy_line(&text), trained, "the file without its text, given --net");
    let (ok, text) = tabcnn(&["eval", "--model", &bare_path, "--net", &net.replace("conv(8,3,pad=1,bias=0) bn relu", "conv(8,5,pad=2,bias=0) bn relu")]);
    assert!(!ok && text.contains("tensor 0.weight has shape [8, 3, 3, 3], and the network"), "{text}");
}
