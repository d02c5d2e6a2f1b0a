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

/// What CIFAR-10 can be, in its official layout: every input is held to it before anything is
/// allocated from it, so a hostile file (a gzip bomb, a tar member declaring 2^63 bytes, an
/// endless device) is an error, not an out-of-memory abort or a hang.
/// Records in one batch file (each of data_batch_1..5.bin and test_batch.bin).
pub const BATCH_RECORDS: usize = 10_000;
/// Bytes of one batch file at most: 30,730,000.
pub const MAX_BATCH_BYTES: u64 = (BATCH_RECORDS * RECORD) as u64;
/// Training batch files in the official layout.
pub const TRAIN_BATCHES: usize = 5;
/// batches.meta.txt at most (the official one is 61 bytes).
pub const MAX_META_BYTES: u64 = 64 * 1024;
/// The uncompressed tar at most: the six batch files and 8 MiB for headers and other members
/// (the official tar is 184,381,440 bytes).
pub const MAX_TAR_BYTES: u64 = (TRAIN_BATCHES as u64 + 1) * MAX_BATCH_BYTES + 8 * 1024 * 1024;
/// The compressed archive at most (gzip adds a little to bytes it cannot compress; the
/// official archive is 170,052,171 bytes).
pub const MAX_ARCHIVE_BYTES: u64 = MAX_TAR_BYTES + MAX_TAR_BYTES / 64;

/// The most a member or file of this name can hold, or None when it is not one the loader reads.
fn member_limit(name: &str) -> Option<u64> {
    if name == META_NAME {
        Some(MAX_META_BYTES)
    } else if name == TEST_NAME || train_number(name).is_some() {
        Some(MAX_BATCH_BYTES)
    } else {
        None
    }
}

/// n for the official name data_batch_n.bin (n = 1, 2, ...): only the canonical spelling, so
/// "data_batch_01.bin" or "data_batch_+1.bin" is not taken for batch 1.
fn train_number(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix("data_batch_")?.strip_suffix(".bin")?.parse().ok()?;
    (train_name(n) == name).then_some(n)
}

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
    let mut numbers: Vec<usize> = files.keys().filter_map(|k| train_number(k)).collect();
    numbers.sort();
    if let Some(&last) = numbers.iter().find(|&&n| n > TRAIN_BATCHES) {
        return err(at(&train_name(last)), format!("CIFAR-10 has {TRAIN_BATCHES} training batches (data_batch_1.bin ... data_batch_{TRAIN_BATCHES}.bin): this is not its layout"));
    }
    if numbers.is_empty() {
        return err(at(&train_name(1)), "missing: no training batch file (data_batch_1.bin ... data_batch_5.bin) found; is this the CIFAR-10 binary version?");
    }
    for (want, &got) in (1..).zip(&numbers) {
        if want != got {
            return err(at(&train_name(want)), format!("missing, but data_batch_{got}.bin is present: an incomplete copy of the dataset"));
        }
    }
    for (name, bytes) in files {
        if let Some(limit) = member_limit(name).filter(|&l| bytes.len() as u64 > l) {
            return err(at(name), format!("is {} bytes, more than the {limit} a CIFAR-10 batch or class-name file holds", bytes.len()));
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
/// Neither side may pass what CIFAR-10 can be (MAX_ARCHIVE_BYTES fed, MAX_TAR_BYTES out).
pub struct Unpacker {
    origin: String,
    gz: flate2::write::GzDecoder<Capped>,
    fed: u64,
}

/// The decompressed tar, refusing to grow past MAX_TAR_BYTES (a gzip bomb stops there).
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + b.len() as u64 > MAX_TAR_BYTES {
            return Err(std::io::Error::other(TOO_BIG));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TOO_BIG: &str = "decompresses past the CIFAR-10 archive's size";

/// What went wrong in the gzip stream: the cap reached, or a corrupt or cut stream.
fn gzip_error(origin: &str, e: std::io::Error) -> DataError {
    let what = match e.to_string().contains(TOO_BIG) {
        true => format!("decompresses to more than {MAX_TAR_BYTES} bytes, more than CIFAR-10's archive holds: not the CIFAR-10 archive (or a hostile one)"),
        false => format!("corrupt or truncated archive: {e}"),
    };
    DataError { source: origin.to_string(), what }
}

impl Unpacker {
    pub fn new(origin: &str) -> Unpacker {
        Unpacker { origin: origin.to_string(), gz: flate2::write::GzDecoder::new(Capped(Vec::new())), fed: 0 }
    }

    fn corrupt(&self, e: std::io::Error) -> DataError {
        gzip_error(&self.origin, e)
    }

    /// The next compressed bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        use std::io::Write;
        if self.fed == 0 && !bytes.is_empty() && (bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b) {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return err(&self.origin, format!("not a gzip archive (starts with bytes [{}], a .tar.gz starts with 1f 8b)", head.join(" ")));
        }
        if self.fed + bytes.len() as u64 > MAX_ARCHIVE_BYTES {
            return err(&self.origin, format!("larger than {MAX_ARCHIVE_BYTES} bytes, more than CIFAR-10's archive: not the CIFAR-10 archive"));
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
        let tar_bytes = self.gz.finish().map_err(|e| gzip_error(&self.origin, e))?;
        parse_tar(&tar_bytes.0, &self.origin)
    }
}

/// The CIFAR-10 batch files out of an uncompressed tar. A member is read only after its
/// declared size (the header's, or a PAX record's) is checked against what its name can hold.
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
        let Some(limit) = member_limit(&name) else { continue };
        let at = format!("{origin}/{path}");
        if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            return err(at, format!("is a tar member of type {:?}, not a plain file: not the CIFAR-10 archive", entry.header().entry_type()));
        }
        if entry.size() > limit {
            return err(
                at,
                format!("declares {} bytes, more than the {limit} a CIFAR-10 {} holds", entry.size(), if name == META_NAME { "class-name file" } else { "batch file" }),
            );
        }
        if files.contains_key(&name) {
            return err(at, format!("{name} is in the archive twice"));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(|e| DataError { source: at.clone(), what: format!("corrupt or truncated archive member: {e}") })?;
        if (data.len() as u64) < entry.size() {
            return err(at, format!("truncated archive member: {} of {} bytes", data.len(), entry.size()));
        }
        files.insert(name, data);
    }
    if members == 0 {
        return err(origin, "not a tar archive, or an empty one: the gzip stream holds no tar members");
    }
    assemble(&files, origin)
}

/// Read a file of at most `limit` bytes: a regular file (not a device, a pipe or a folder:
/// a link to /dev/zero would never end), its size checked before it is read, and read no
/// further than `limit` (a file that grows while it is read is refused too). `kind` names
/// what it should be ("CIFAR-10 archive", "model file") in the errors.
pub fn read_bounded(path: &Path, limit: u64, kind: &str) -> Result<Vec<u8>, DataError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| DataError { source: shown.clone(), what: format!("cannot read: {e}") })?;
    if !meta.is_file() {
        return err(shown, format!("is not a regular file (a device, a pipe or a folder): not a {kind}"));
    }
    if meta.len() > limit {
        return err(shown, format!("is {} bytes, more than the {limit} a {kind} holds", meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| DataError { source: shown.clone(), what: format!("cannot read: {e}") })?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| DataError { source: shown.clone(), what: format!("cannot read: {e}") })?;
    if bytes.len() as u64 > limit {
        return err(shown, format!("grew past {limit} bytes while it was read: not a {kind}"));
    }
    Ok(bytes)
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
            if let Some(limit) = member_limit(&name) {
                files.insert(name, read_bounded(&ent.path(), limit, "CIFAR-10 batch or class-name file")?);
            }
        }
        assemble(&files, &origin)
    } else if path.exists() {
        let bytes = read_bounded(path, MAX_ARCHIVE_BYTES, "CIFAR-10 archive")?;
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
