//! Loading a dataset in the worker: the bundled sample, the full CIFAR-10 from the page's
//! server (decompressed as it downloads), or an archive the visitor dropped on the page (its
//! File handle came with the message). A load that fails leaves the dataset in use, the model
//! and its progress as they were.

use super::{error, note, post, wake, Shared, Want};
use crate::io;
use std::collections::BTreeMap;
use std::rc::Rc;
use tabcnn::data::{self, Cifar, Unpacker};
use tabcnn::recipe::DatasetChoice;
use tabcnn::wire::FromWorker;

/// Where the full dataset is fetched from, relative to the page.
const FULL_URL: &str = "data/cifar-10-binary.tar.gz";
/// The bundled sample, relative to the page (trunk copies data/sample there).
const SAMPLE_DIR: &str = "sample/cifar-10-batches-bin";

pub(crate) enum Source {
    Sample,
    Full,
    File(web_sys::File),
}

/// Switch to the sample or the full dataset (loading it if needed).
pub(crate) fn choose(c: &Shared, full: bool) {
    c.borrow_mut().settings.dataset = if full { DatasetChoice::Full } else { DatasetChoice::Sample };
    let c = c.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let sample = c.borrow().sample.clone();
        match (full, sample) {
            (false, Some(s)) => {
                let mut k = c.borrow_mut();
                k.data_wanted += 1;
                k.new_data = Some((s, DatasetChoice::Sample));
                drop(k);
                wake(&c);
            }
            _ => load_data(&c, if full { Source::Full } else { Source::Sample }).await,
        }
    });
}

fn progress(label: &str, done: u64, total: Option<u64>) {
    let mb = |b: u64| b as f64 / 1e6;
    let label = match total {
        Some(t) => format!("{label}: {:.1} of {:.1} MB", mb(done), mb(t)),
        None => format!("{label}: {:.1} MB", mb(done)),
    };
    let fraction = total.map(|t| done as f64 / t.max(1) as f64).unwrap_or(0.0);
    post(FromWorker::DataProgress { label, fraction });
}

/// Load a dataset and hand it to the runner.
pub(crate) async fn load_data(ctl: &Shared, src: Source) {
    if ctl.borrow().loading {
        error("a dataset is already loading");
        return;
    }
    let origin = match src {
        Source::Sample => DatasetChoice::Sample,
        Source::Full => DatasetChoice::Full,
        Source::File(_) => DatasetChoice::File,
    };
    let wanted = {
        let mut k = ctl.borrow_mut();
        k.loading = true;
        if k.want == Want::Train {
            k.want = Want::Pause;
        }
        k.data_wanted += 1;
        k.data_wanted
    };
    wake(ctl);
    error("");
    let base = ctl.borrow().base.clone();
    let result = load(src, &base).await;
    let mut k = ctl.borrow_mut();
    k.loading = false;
    match result {
        Ok(d) if k.data_wanted != wanted => {
            // Another dataset was chosen while this one loaded: it stays in use.
            note(&format!("{} finished loading after another dataset was chosen: it is not used", d.description));
            if d.description.starts_with("sample") {
                k.sample = Some(Rc::new(d));
            }
        }
        Ok(d) => {
            post(FromWorker::DataProgress { label: format!("loaded: {} training and {} test images", d.train.len(), d.test.len()), fraction: 1.0 });
            let d = Rc::new(d);
            if d.description.starts_with("sample") {
                k.sample = Some(d.clone());
            }
            k.new_data = Some((d, origin));
        }
        Err(e) => {
            progress("failed", 0, Some(1));
            error(&format!("{e} (the dataset in use and the training so far are unchanged)"));
            k.load_failed = true;
        }
    }
    drop(k);
    wake(ctl);
}

/// `path` relative to the page at `base`.
fn url(base: &str, path: &str) -> String {
    web_sys::Url::new_with_base(path, base).map(|u| u.href()).unwrap_or_else(|_| path.to_string())
}

async fn load(src: Source, base: &str) -> Result<Cifar, String> {
    match src {
        Source::Sample => {
            let mut files = BTreeMap::new();
            for name in ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt"] {
                progress(&format!("downloading the sample ({name})"), 0, None);
                files.insert(name.to_string(), io::fetch_bytes(&url(base, &format!("{SAMPLE_DIR}/{name}"))).await?);
            }
            data::assemble(&files, "sample").map_err(|e| e.to_string())
        }
        Source::Full => {
            let mut u = Unpacker::new(FULL_URL);
            io::fetch_stream(&url(base, FULL_URL), |b, got, total| {
                progress("downloading and decompressing CIFAR-10", got, total);
                u.feed(b).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("{e}: put the official cifar-10-binary.tar.gz there (see the README), or drop it on the page"))?;
            progress("reading the batch files", 1, Some(1));
            io::sleep_ms(0).await;
            u.finish().map_err(|e| e.to_string())
        }
        Source::File(f) => {
            let name = f.name();
            // refused by its size before a byte is read (the unpacker holds the same bound)
            if f.size() > data::MAX_ARCHIVE_BYTES as f64 {
                return Err(format!("{name}: {} bytes, more than the {} of CIFAR-10's archive: not the CIFAR-10 archive", f.size(), data::MAX_ARCHIVE_BYTES));
            }
            let mut u = Unpacker::new(&name);
            io::read_file(&f, |b, got, size| {
                progress(&format!("decompressing {name}"), got, Some(size));
                u.feed(b).map_err(|e| e.to_string())
            })
            .await?;
            io::sleep_ms(0).await;
            u.finish().map_err(|e| e.to_string())
        }
    }
}
