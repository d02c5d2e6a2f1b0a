//! CIFAR-10 in its official binary layout: records of 1 label byte + 3,072 image bytes (CHW),
//! in data_batch_1..5.bin and test_batch.bin, class names in batches.meta.txt; read from a
//! directory or straight from the official cifar-10-binary.tar.gz, decompressed in pure Rust
//! (flate2's miniz_oxide backend + tar) so the same code runs in wasm. Every malformed input is
//! an error naming the file and what is wrong; nothing is loaded in part.

use crate::model::{CLASSES, IMG_LEN};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// Bytes of one record: label + 32x32x3 pixels.
pub const RECORD: usize = 1 + IMG_LEN;

/// The tutorial's class names, used when batches.meta.txt is absent.
pub const DEFAULT_CLASSES: [&str; CLASSES] = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// A malformed or missing input: `source` names the file (or archive member), `what` says
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub source: String,
    pub what: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.what)
    }
}

impl std::error::Error for DataError {}

fn err<T>(source: impl Into<String>, what: impl Into<String>) -> Result<T, DataError> {
    Err(DataError { source: source.into(), what: what.into() })
}

/// A set of records, images packed R x 3072 (CHW bytes), labels R bytes in 0..10.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The first `n` records (all when n >= len).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * IMG_LEN);
        }
    }
    /// Parse one batch file's bytes; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Split, DataError> {
        if bytes.is_empty() {
            return err(source, "file is empty");
        }
        if !bytes.len().is_multiple_of(RECORD) {
            return err(
                source,
                format!(
                    "size {} bytes is not a multiple of the 3,073-byte CIFAR-10 record ({} whole records and {} bytes left over): truncated or not a CIFAR-10 batch file",
                    bytes.len(),
                    bytes.len() / RECORD,
                    bytes.len() % RECORD
                ),
            );
        }
        let r = bytes.len() / RECORD;
        let mut s = Split { images: Vec::with_capacity(r * IMG_LEN), labels: Vec::with_capacity(r) };
        for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
            if rec[0] as usize >= CLASSES {
                return err(source, format!("record {i} (byte offset {}) has label {}, above 9: not a CIFAR-10 batch file", i * RECORD, rec[0]));
            }
            s.labels.push(rec[0]);
            s.images.extend_from_slice(&rec[1..]);
        }
        Ok(s)
    }
    fn append(&mut self, o: Split) {
        self.images.extend(o.images);
        self.labels.extend(o.labels);
    }
    /// Records per class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut c = [0; CLASSES];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// A loaded dataset: the training and test splits and the class names.
#[derive(Clone, Debug)]
pub struct Cifar {
    pub train: Split,
    pub test: Split,
    pub classes: Vec<String>,
    /// Where it came from and what was read, for the user.
    pub description: String,
}

/// The official file names, in load order.
fn train_name(i: usize) -> String {
    format!("data_batch_{i}.bin")
}
const TEST_NAME: &str = "test_batch.bin";
const META_NAME: &str = "batches.meta.txt";

/// Build a dataset from the batch files found (file name -> bytes). Training files must be
/// numbered from 1 without gaps; test_batch.bin must be there. `origin` prefixes error sources.
pub fn assemble(files: &BTreeMap<String, Vec<u8>>, origin: &str) -> Result<Cifar, DataError> {
    let at = |name: &str| format!("{origin}/{name}");
    let mut numbers: Vec<usize> = files.keys().filter_map(|k| k.strip_prefix("data_batch_")?.strip_suffix(".bin")?.parse().ok()).collect();
    numbers.sort();
    if numbers.is_empty() {
        return err(at(&train_name(1)), "missing: no training batch file (data_batch_1.bin ... data_batch_5.bin) found; is this the CIFAR-10 binary version?");
    }
    for (want, &got) in (1..).zip(&numbers) {
        if want != got {
            return err(at(&train_name(want)), format!("missing, but data_batch_{got}.bin is present: an incomplete copy of the dataset"));
        }
    }
    let Some(test_bytes) = files.get(TEST_NAME) else {
        return err(at(TEST_NAME), "missing: the test batch file is required");
    };
    let mut train = Split::default();
    for &i in &numbers {
        let name = train_name(i);
        train.append(Split::parse(&files[&name], &at(&name))?);
    }
    let test = Split::parse(test_bytes, &at(TEST_NAME))?;
    let classes = match files.get(META_NAME) {
        Some(b) => {
            let text = String::from_utf8_lossy(b);
            let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if names.len() != CLASSES {
                return err(at(META_NAME), format!("has {} class names, expected 10", names.len()));
            }
            // The meta file says "airplane"/"automobile"; print the tutorial's short names,
            // which name the same classes in the same order.
            DEFAULT_CLASSES.iter().map(|s| s.to_string()).collect()
        }
        None => DEFAULT_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let description = format!("{origin}: {} training records ({} file{}), {} test records", train.len(), numbers.len(), if numbers.len() == 1 { "" } else { "s" }, test.len());
    Ok(Cifar { train, test, classes, description })
}

/// Read the batch files from a .tar.gz held in memory (the official archive, or any tar.gz with
/// the same member names in any folder). `origin` names the archive in errors.
pub fn load_archive(bytes: &[u8], origin: &str) -> Result<Cifar, DataError> {
    let mut u = Unpacker::new(origin);
    u.feed(bytes)?;
    u.finish()
}

/// A .tar.gz decompressed as its bytes arrive (a download, or a file read in slices), so the
/// page can show progress and yield to the event loop between slices. `feed` the compressed
/// bytes in order, then `finish` checks the gzip trailer (CRC, length) and parses the tar.
pub struct Unpacker {
    origin: String,
    gz: flate2::write::GzDecoder<Vec<u8>>,
    fed: u64,
}

impl Unpacker {
    pub fn new(origin: &str) -> Unpacker {
        Unpacker { origin: origin.to_string(), gz: flate2::write::GzDecoder::new(Vec::new()), fed: 0 }
    }

    fn corrupt(&self, e: std::io::Error) -> DataError {
        DataError { source: self.origin.clone(), what: format!("corrupt or truncated archive: {e}") }
    }

    /// The next compressed bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        use std::io::Write;
        if self.fed == 0 && !bytes.is_empty() && (bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b) {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return err(&self.origin, format!("not a gzip archive (starts with bytes [{}], a .tar.gz starts with 1f 8b)", head.join(" ")));
        }
        self.fed += bytes.len() as u64;
        self.gz.write_all(bytes).map_err(|e| self.corrupt(e))
    }

    /// Compressed bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// End of input: check the gzip trailer and read the batch files out of the tar.
    pub fn finish(self) -> Result<Cifar, DataError> {
        if self.fed == 0 {
            return err(&self.origin, "file is empty: not a gzip archive");
        }
        let origin = self.origin.clone();
        let tar_bytes = self.gz.finish().map_err(|e| DataError { source: origin.clone(), what: format!("corrupt or truncated archive: {e}") })?;
        parse_tar(&tar_bytes, &origin)
    }
}

/// The CIFAR-10 batch files out of an uncompressed tar.
fn parse_tar(bytes: &[u8], origin: &str) -> Result<Cifar, DataError> {
    let mut tar = tar::Archive::new(bytes);
    let corrupt = |e: std::io::Error| DataError { source: origin.to_string(), what: format!("corrupt or truncated archive: {e}") };
    let mut files = BTreeMap::new();
    let mut members = 0usize;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        members += 1;
        let path = entry.path().map_err(corrupt)?.to_string_lossy().to_string();
        let name = path.rsplit('/').next().unwrap_or("").to_string();
        let wanted = name == TEST_NAME || name == META_NAME || (name.starts_with("data_batch_") && name.ends_with(".bin"));
        if !wanted {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(|e| DataError { source: format!("{origin}/{path}"), what: format!("corrupt or truncated archive member: {e}") })?;
        if (data.len() as u64) < entry.size() {
            return err(format!("{origin}/{path}"), format!("truncated archive member: {} of {} bytes", data.len(), entry.size()));
        }
        files.insert(name, data);
    }
    if members == 0 {
        return err(origin, "not a tar archive, or an empty one: the gzip stream holds no tar members");
    }
    assemble(&files, origin)
}

/// Load from a path: a directory holding the batch files (directly or in
/// cifar-10-batches-bin/), or a .tar.gz archive file.
pub fn load_path(path: &Path) -> Result<Cifar, DataError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        let inner = path.join("cifar-10-batches-bin");
        let dir = if inner.is_dir() { inner } else { path.to_path_buf() };
        let origin = dir.display().to_string();
        let mut files = BTreeMap::new();
        let listing = std::fs::read_dir(&dir).map_err(|e| DataError { source: origin.clone(), what: format!("cannot list directory: {e}") })?;
        for ent in listing.flatten() {
            let name = ent.file_name().to_string_lossy().to_string();
            let wanted = name == TEST_NAME || name == META_NAME || (name.starts_with("data_batch_") && name.ends_with(".bin"));
            if wanted {
                let bytes = std::fs::read(ent.path()).map_err(|e| DataError { source: ent.path().display().to_string(), what: format!("cannot read: {e}") })?;
                files.insert(name, bytes);
            }
        }
        assemble(&files, &origin)
    } else if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| DataError { source: shown.clone(), what: format!("cannot read: {e}") })?;
        load_archive(&bytes, &shown)
    } else {
        err(shown, "no such file or directory (give a CIFAR-10 binary directory or cifar-10-binary.tar.gz)")
    }
}

/// The small sample shipped in the repository (data/sample: 2,000 training and 1,000 test
/// records taken from the shared archive by scripts/make_sample.py).
pub fn sample_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("sample")
}

/// Serialise records back to the batch-file format (for tests and for writing samples).
pub fn to_batch_bytes(s: &Split) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * RECORD);
    for i in 0..s.len() {
        out.push(s.labels[i]);
        out.extend_from_slice(&s.images[i * IMG_LEN..(i + 1) * IMG_LEN]);
    }
    out
}
