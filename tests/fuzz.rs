//! Fuzzing every parser a user's bytes reach: the gzip/tar unpacker (whole and fed in slices),
//! the folder loader's batch files, model files, saved runs, the link's query, a drawn
//! picture's pixels and the messages between the page's threads. A deterministic mutator (the project's seeded `Rng`) starts from a corpus
//! of real inputs (the bundled sample's files, a model and a saved run written by this code,
//! real links) and flips, sets, cuts, splices and inflates their bytes, and for archives also
//! the tar inside the gzip (or the CRC would stop every input at the first check). Each target
//! runs for FUZZ_SECONDS (default 30) and fails on any panic; an allocation past 1 GiB aborts
//! the binary (the global allocator below), so CI fails on those too. Each prints how many
//! inputs it ran and how many were refused (every one of those with an error, not a crash).
//! A failing input is written to target/fuzz-failures/ with the seed that made it.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

mod common;
use common::{gzip, tar_of};
use tabcnn::data::{self, RECORD};
use tabcnn::model::{init_params, Arch, Layout, Rng};

/// No single allocation may pass this: CIFAR-10's largest legitimate buffer is the ~193 MB tar.
const MAX_ALLOC: usize = 1 << 30;

struct Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        if l.size() > MAX_ALLOC {
            // Rust's alloc error handler then aborts, printing the size asked for.
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, new: usize) -> *mut u8 {
        if new > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Bounded = Bounded;

fn budget() -> f64 {
    std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30.0)
}

/// One mutation of `input`: a handful of edits of the kinds that break parsers.
fn mutate(input: &[u8], corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        match rng.below(9) {
            // flip bits
            0 => {
                for _ in 0..1 + rng.below(8) {
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // an interesting byte
            1 => {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = [0, 0xff, 0x7f, 0x80, b'0', b'9', b'-', b' ', 0x1f, 0x8b][rng.below(10)];
                }
            }
            // a huge or boundary little-endian integer (sizes, offsets, header lengths)
            2 => {
                let at = rng.below(len);
                let v: u64 = [u64::MAX, 1 << 63, 1 << 32, u32::MAX as u64, 0, 30_730_001, 1 << 40][rng.below(7)];
                for (k, byte) in v.to_le_bytes().iter().enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = *byte;
                    }
                }
            }
            // ASCII digits (tar's octal fields, JSON shapes and offsets)
            3 => {
                let at = rng.below(len);
                for k in 0..1 + rng.below(12) {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = b"0123456777"[rng.below(10)];
                    }
                }
            }
            // cut
            4 => b.truncate(rng.below(len)),
            // delete a run
            5 => {
                if !b.is_empty() {
                    let at = rng.below(b.len());
                    let n = (1 + rng.below(64)).min(b.len() - at);
                    b.drain(at..at + n);
                }
            }
            // insert random bytes
            6 => {
                let at = rng.below(len).min(b.len());
                let n = 1 + rng.below(64);
                let ins: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                b.splice(at..at, ins);
            }
            // splice a piece of another corpus input
            7 => {
                let other = if corpus.is_empty() { b.clone() } else { corpus[rng.below(corpus.len())].clone() };
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = (1 + rng.below(512)).min(other.len() - from);
                    let at = rng.below(len).min(b.len());
                    b.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            // duplicate a block (repeated tar headers, repeated JSON keys)
            _ => {
                if !b.is_empty() {
                    let at = rng.below(b.len());
                    let n = (1 + rng.below(1024)).min(b.len() - at);
                    let piece = b[at..at + n].to_vec();
                    b.splice(at..at, piece);
                }
            }
        }
    }
    b
}

/// Run `parse` (true: accepted, false: refused with an error) on mutations of the corpus for
/// the time budget; any panic fails the test with the input saved.
fn fuzz(name: &str, corpus: &[Vec<u8>], prepare: impl Fn(&[u8], &mut Rng) -> Vec<u8>, parse: impl Fn(&[u8], &mut Rng) -> bool) {
    let seed = 0x5eed ^ name.bytes().fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
    let mut rng = Rng::new(seed);
    let (t, secs) = (Instant::now(), budget());
    let (mut runs, mut refused) = (0u64, 0u64);
    // every corpus input as it is first, then mutations
    let mut queue: Vec<Vec<u8>> = corpus.to_vec();
    while t.elapsed().as_secs_f64() < secs || runs < corpus.len() as u64 {
        let input = match queue.pop() {
            Some(i) => i,
            None => prepare(&mutate(&corpus[rng.below(corpus.len())], corpus, &mut rng), &mut rng),
        };
        let mut case_rng = Rng::new(rng.next_u64());
        match catch_unwind(AssertUnwindSafe(|| parse(&input, &mut case_rng))) {
            Ok(ok) => refused += !ok as u64,
            Err(e) => {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{name}-{runs}.bin"));
                std::fs::write(&file, &input).unwrap();
                let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                panic!("{name}: input {runs} (seed {seed:#x}) panicked: {msg}; saved to {}", file.display());
            }
        }
        runs += 1;
    }
    println!("{name}: {runs} inputs in {:.1} s, {refused} refused with an error, none crashed", t.elapsed().as_secs_f64());
    // a run that tried too little, or whose mutations never broke anything, proves nothing
    assert!(runs > 100 && refused > 0, "{name}: {runs} inputs, {refused} refused");
}

fn sample_files() -> BTreeMap<String, Vec<u8>> {
    let dir = data::sample_dir().join("cifar-10-batches-bin");
    // 40 records each: the parsers see every structure, and each input stays fast.
    let cut = |v: Vec<u8>| v[..40 * RECORD].to_vec();
    BTreeMap::from([
        ("data_batch_1.bin".to_string(), cut(std::fs::read(dir.join("data_batch_1.bin")).unwrap())),
        ("test_batch.bin".to_string(), cut(std::fs::read(dir.join("test_batch.bin")).unwrap())),
        ("batches.meta.txt".to_string(), std::fs::read(dir.join("batches.meta.txt")).unwrap()),
    ])
}

#[test]
fn fuzz_the_archive_unpacker_whole_and_in_slices() {
    let tar = tar_of(&sample_files());
    let corpus = vec![tar.clone(), tar[..tar.len() / 2].to_vec(), tar_of(&BTreeMap::new())];
    // Half the inputs are the mutated tar gzipped (past the CRC), half mutated gzip bytes.
    let prepare = |t: &[u8], rng: &mut Rng| if rng.below(2) == 0 { gzip(t) } else { mutate(&gzip(t), &[], rng) };
    fuzz("archive", &corpus, prepare, |gz, rng| {
        let whole = data::load_archive(gz, "fuzz.tar.gz");
        // the same bytes fed in random slices give the same answer
        let mut u = data::Unpacker::new("fuzz.tar.gz");
        let mut at = 0;
        let mut fed = Ok(());
        while at < gz.len() && fed.is_ok() {
            let n = 1 + rng.below(4096);
            fed = u.feed(&gz[at..(at + n).min(gz.len())]);
            at += n;
        }
        let sliced = fed.and_then(|_| u.finish());
        assert_eq!(whole.as_ref().map(|d| (&d.train, &d.test)).ok(), sliced.as_ref().map(|d| (&d.train, &d.test)).ok(), "whole and sliced agree");
        whole.is_ok()
    });
}

#[test]
fn fuzz_the_batch_files_of_a_folder() {
    let files = sample_files();
    let corpus: Vec<Vec<u8>> = files.values().cloned().collect();
    fuzz(
        "batch files",
        &corpus,
        |b, _| b.to_vec(),
        |b, rng| {
            // the mutated bytes as one of the files, the others as they are
            let mut f = sample_files();
            let name = ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt", "data_batch_2.bin", "data_batch_01.bin"][rng.below(5)];
            f.insert(name.to_string(), b.to_vec());
            data::assemble(&f, "fuzz-dir").is_ok()
        },
    );
}

#[test]
fn fuzz_model_files() {
    let files: Vec<Vec<u8>> = [Arch::LENET, Arch { c1: 3, c2: 5, f1: 7, f2: 9 }]
        .iter()
        .map(|&a| {
            let l = Layout::new(a);
            tabcnn::checkpoint::to_safetensors(&init_params(&l, 1), &l)
        })
        .collect();
    fuzz(
        "model files",
        &files,
        |b, _| b.to_vec(),
        |b, _| {
            let any = tabcnn::checkpoint::from_safetensors_any(b, "fuzz.safetensors");
            let lenet = tabcnn::checkpoint::from_safetensors(b, &Layout::lenet(), "fuzz.safetensors");
            if let Ok((arch, p)) = &any {
                assert!(arch.in_limits() && p.len() == Layout::new(*arch).total && p.iter().all(|v| v.is_finite()));
            }
            any.is_ok() || lenet.is_ok()
        },
    );
}

#[test]
fn fuzz_model_files_of_any_network() {
    let files: Vec<Vec<u8>> = ["conv(4,3,pad=1,bias=0) bn relu res(conv(4,3,pad=1) bn) gap flatten linear(10)", "conv(3,2,stride=2) gelu flatten linear(10,bias=0)"]
        .iter()
        .map(|text| {
            let plan = tabcnn::net::plan::Plan::new(&tabcnn::net::text::parse(text).unwrap()).unwrap();
            let p = &plan.params;
            tabcnn::checkpoint::to_safetensors_net(&p.init(1), &p.init_buffers(), 3, p, text)
        })
        .collect();
    fuzz(
        "model files of any network",
        &files,
        |b, _| b.to_vec(),
        |b, _| match tabcnn::checkpoint::from_safetensors_net(b, "fuzz.safetensors", None) {
            Ok(m) => {
                let plan = tabcnn::net::plan::Plan::new(&tabcnn::net::text::parse(&m.text).unwrap()).unwrap();
                assert!(m.params.len() == plan.params.total && m.buffers.len() == plan.params.buffer_total);
                assert!(m.params.iter().chain(&m.buffers).all(|v| v.is_finite()));
                true
            }
            Err(_) => false,
        },
    );
}

#[test]
fn fuzz_saved_runs() {
    use tabcnn::saved::SavedRun;
    let l = Layout::new(Arch { c1: 3, c2: 5, f1: 7, f2: 9 });
    let mut rng = Rng::new(3);
    let run = SavedRun {
        id: "run-1".into(),
        query: "?batch=4&lr=0.01&net=3-5-7-9".into(),
        dataset: "sample".into(),
        started_ms: 1.0,
        saved_ms: 2.0,
        epochs: 2,
        curves: tabcnn::app::Curves { loss: vec![(0.1, 2.3)], train_accuracy: vec![(0.1, 0.1)], test_accuracy: vec![(1.0, 0.2)] },
        checkpoint: Some(tabcnn::train::Checkpoint {
            params: init_params(&l, 0),
            momentum: vec![0.0; l.total],
            epoch: 1,
            epoch_step: 3,
            global_step: 3,
            order: rng.permutation(40),
            rng: Rng::new(9),
            images: 12,
            seconds: 0.5,
        }),
        at: (1, 3, 3),
        done: false,
        snapshots: vec![0, 3],
        stored_bytes: 1 << 20,
        history_bytes: 2 * 4 * 1000,
        problem: None,
    };
    let corpus = vec![run.to_bytes(true), run.to_bytes(false)];
    fuzz(
        "saved runs",
        &corpus,
        |b, _| b.to_vec(),
        |b, _| match SavedRun::from_bytes(b, "fuzz-run") {
            Ok(r) => {
                // what the page does with one: its label, and the resume check against its network
                let _ = r.label();
                if let Some(ck) = &r.checkpoint {
                    let _ = ck.check(Layout::new(Arch { c1: 3, c2: 5, f1: 7, f2: 9 }).total, "the 3-5-7-9", 4, 40);
                }
                true
            }
            Err(_) => false,
        },
    );
}

#[test]
fn fuzz_the_link_query() {
    let corpus: Vec<Vec<u8>> = [
        "?batch=64&lr=0.01&epochs=1&autostart=1&data=full&weight-decay=5e-4&seed=7&engine=cpu&limit=500",
        "augment=flip%2Ccrop&schedule=step:10:0.1&epochs=30&net=wide",
        "?net=256-256-256-256&batch=1024&momentum=0.95",
        "lr=1e%2D3&schedule=cosine",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz(
        "link query",
        &corpus,
        |b, _| b.to_vec(),
        |b, _| {
            let q = String::from_utf8_lossy(b);
            let (s, problems) = tabcnn::recipe::Settings::from_query(&q);
            // whatever the link says, the settings it leaves are ones the page can run
            let h = &s.hyper;
            assert!((1..=tabcnn::recipe::MAX_BATCH).contains(&h.batch) && (1..=tabcnn::recipe::MAX_EPOCHS).contains(&h.epochs));
            assert!(h.lr.is_finite() && h.lr > 0.0 && (0.0..1.0).contains(&h.momentum) && h.weight_decay >= 0.0 && h.net.in_limits());
            // and its own link reads back as the same settings
            assert_eq!(tabcnn::recipe::Settings::from_query(&s.to_query()).0, s, "{q} -> {}", s.to_query());
            problems.is_empty()
        },
    );
}

/// Network texts: whatever is typed, parsing and the shape check answer (never panic), and a
/// network that parses prints a text that parses back to it; one that fits has a table and a
/// PyTorch program.
#[test]
fn fuzz_network_texts() {
    use tabcnn::net::{cost, pytorch, text};
    let corpus: Vec<Vec<u8>> = [
        "lenet",
        "256-256-256-256",
        text::LENET,
        "conv(24,2,bias=0) gelu conv(64,3,pad=1,bias=0) maxpool(2) bn(scale=0) gelu res(conv(64,3,pad=1,bias=0) bn(scale=0) gelu) maxpool(3) flatten linear(10,bias=0) scale(0.11111111)",
        "conv(16,3,stride=2,pad=1) bn(momentum=0.6,eps=0.001) relu res(conv(16,3,pad=1) bn relu res(conv(16,1) tanh)) avgpool(2,stride=1) sigmoid gap flatten dropout(0.25) linear(10)",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz(
        "network text",
        &corpus,
        |b, _| b.to_vec(),
        |b, _| {
            let t = String::from_utf8_lossy(b);
            let Ok(net) = text::parse(&t) else { return false };
            assert_eq!(text::parse(&text::print(&net)).as_ref(), Ok(&net), "{t}");
            assert_eq!(text::parse(&text::print_layers(&net)).as_ref(), Ok(&net), "{t}");
            match net.infer() {
                Ok(_) => {
                    assert!(cost::table(&net).is_ok() && pytorch::program(&net).is_ok());
                    true
                }
                Err(e) => {
                    assert!(e.starts_with("layer ") || e.starts_with("the network"), "{e}");
                    false
                }
            }
        },
    );
}

#[test]
fn fuzz_a_picture_files_header() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x02\x80\0\0\x01\xe0\x08\x06\0\0\0".to_vec();
    let mut jpg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
    jpg.extend([0; 14]);
    jpg.extend([0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80, 0x03]);
    let corpus = vec![png, jpg, b"GIF89a\x20\x03\x58\x02".to_vec(), b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0\x1f\x4e\x00\x1f\x4e\x00".to_vec()];
    fuzz(
        "picture header",
        &corpus,
        |b, _| b.to_vec(),
        |b, _| {
            let ok = tabcnn::picture::check("fuzz", b.len() as u64, b).is_ok();
            if ok {
                let (_, w, h) = tabcnn::picture::declared_size(b).unwrap();
                assert!(w >= 1 && h >= 1 && w as u64 * h as u64 <= tabcnn::picture::MAX_PICTURE_PIXELS);
            }
            ok
        },
    );
}

#[test]
fn fuzz_a_drawn_pictures_pixels() {
    let corpus = vec![vec![128u8; 32 * 32 * 4], (0..32 * 32 * 4).map(|i| (i % 251) as u8).collect()];
    fuzz(
        "picture pixels",
        &corpus,
        |b, _| b.to_vec(),
        |b, _| match tabcnn::views::record_from_rgba(b) {
            Ok(r) => {
                assert_eq!(r.len(), 3072);
                true
            }
            Err(_) => false,
        },
    );
}

#[test]
fn fuzz_the_messages_between_the_pages_threads() {
    use tabcnn::wire::{decode, encode, Bulk, FromWorker, ToWorker};
    let (settings, _) = tabcnn::recipe::Settings::from_query("?batch=32&lr=0.02&augment=flip,crop&net=wide&limit=400");
    let to: Vec<ToWorker> = vec![
        ToWorker::Begin { settings: settings.clone(), base: "http://127.0.0.1:8080/".into() },
        ToWorker::Settings { settings },
        ToWorker::Scrub { step: Some(120) },
        ToWorker::Cell { truth: 3, pred: 5 },
        ToWorker::Upload { name: "m.safetensors".into(), bytes: vec![7; 64] },
        ToWorker::Own { source: "cat.png".into(), record: vec![9; 3072] },
    ];
    let probs = [[0.1f32, f32::NAN, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]];
    let from: Vec<FromWorker> = vec![
        FromWorker::Grid { records: vec![1], images: vec![0; 3072], labels: vec![3], probs: Some(probs.to_vec()) },
        FromWorker::Eval { eval: Some(tabcnn::outputs::EvalResult::from_preds(vec![1, 2, 3], &[1, 2, 0])) },
        FromWorker::Timeline { steps: vec![0, 10, 20], steps_per_epoch: 10, shown: None },
        FromWorker::Curves { curves: tabcnn::app::Curves { loss: vec![(0.1, f64::NAN)], ..Default::default() }, epochs: 2, steps_per_epoch: 10, append: true },
        FromWorker::RunsStatus { text: "saved".into(), saved: Some(("run-1".into(), 40)) },
    ];
    // Each input: one byte saying which way it goes, then the encoded message; its buffers
    // come with it as encode set them aside (a mutation may name ones that did not come).
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut buffers: Vec<Vec<Bulk>> = Vec::new();
    for m in &to {
        let (packed, bulk) = encode(m).unwrap();
        corpus.push([&[0u8][..], &packed].concat());
        buffers.push(bulk);
    }
    for m in &from {
        let (packed, bulk) = encode(m).unwrap();
        corpus.push([&[1u8][..], &packed].concat());
        buffers.push(bulk);
    }
    fuzz(
        "wire messages",
        &corpus,
        |b, _| b.to_vec(),
        |b, rng| {
            let Some((&way, packed)) = b.split_first() else { return false };
            let bulk = buffers[rng.below(buffers.len())].clone();
            if way % 2 == 0 {
                decode::<ToWorker>(packed, bulk).is_ok()
            } else {
                decode::<FromWorker>(packed, bulk).is_ok()
            }
        },
    );
}
