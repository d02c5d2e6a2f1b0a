//! Loading CIFAR-10 from a directory and from a .tar.gz, and every kind of bad input: each gets
//! an error naming the file and what is wrong, never a panic or a partial load. Also the
//! safetensors round trip.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tabcnn::checkpoint::{from_safetensors, to_safetensors};
use tabcnn::data::{self, load_archive, load_path, Split, RECORD};
use tabcnn::model::{init_params, Layout};

mod common;
use common::{gzip, tar_of};

fn sample_files() -> BTreeMap<String, Vec<u8>> {
    let dir = data::sample_dir().join("cifar-10-batches-bin");
    ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt"].iter().map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap())).collect()
}

/// A .tar.gz holding `files` under cifar-10-batches-bin/, as the official archive does.
fn tar_gz(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    gzip(&tar_of(files))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tabcnn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_dir(name: &str, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let d = temp_dir(name);
    for (n, b) in files {
        std::fs::write(d.join(n), b).unwrap();
    }
    d
}

#[test]
fn the_sample_loads_from_a_directory_and_from_an_archive_alike() {
    let d = load_path(&data::sample_dir()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (2000, 1000));
    assert_eq!(d.train.images.len(), 2000 * 3072);
    assert_eq!(d.classes[0], "plane");
    // Every class is present in the sample.
    assert!(d.train.class_counts().iter().all(|&c| c > 100), "{:?}", d.train.class_counts());
    let a = load_archive(&tar_gz(&sample_files()), "sample.tar.gz").unwrap();
    assert_eq!(a.train, d.train);
    assert_eq!(a.test, d.test);
    // Records round-trip through the batch format.
    assert_eq!(data::to_batch_bytes(&d.test), sample_files()["test_batch.bin"]);
}

#[test]
fn the_shared_archive_loads_whole() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar-10-binary.tar.gz");
    if !path.exists() {
        // CI and every developer machine have ../shared; say so loudly if not.
        panic!("{} is missing: the full-dataset test needs the shared archive", path.display());
    }
    let d = load_path(&path).unwrap();
    println!("{}", d.description);
    assert_eq!((d.train.len(), d.test.len()), (50000, 10000));
    assert_eq!(d.test.class_counts(), [1000; 10]);
    assert_eq!(d.train.class_counts(), [5000; 10]);
}

fn expect_err(r: Result<tabcnn::data::Cifar, tabcnn::data::DataError>, source_has: &str, what_has: &str) {
    match r {
        Ok(_) => panic!("expected an error about {source_has}: {what_has}"),
        Err(e) => {
            println!("error as the user sees it: {e}");
            assert!(e.source.contains(source_has), "error source '{}' should name '{source_has}'", e.source);
            assert!(e.what.contains(what_has), "error '{}' should say '{what_has}'", e.what);
        }
    }
}

#[test]
fn a_batch_file_of_the_wrong_size_is_named() {
    let mut f = sample_files();
    f.get_mut("data_batch_1.bin").unwrap().truncate(2000 * RECORD - 100);
    expect_err(load_path(&write_dir("size", &f)), "data_batch_1.bin", "not a multiple of the 3,073-byte");
    expect_err(load_archive(&tar_gz(&f), "x.tar.gz"), "x.tar.gz/data_batch_1.bin", "not a multiple");
}

#[test]
fn a_label_above_nine_is_named_with_its_record() {
    let mut f = sample_files();
    f.get_mut("test_batch.bin").unwrap()[5 * RECORD] = 10;
    expect_err(load_path(&write_dir("label", &f)), "test_batch.bin", "record 5 (byte offset 15365) has label 10");
}

#[test]
fn missing_batch_files_are_named() {
    let mut f = sample_files();
    let b1 = f["data_batch_1.bin"].clone();
    f.insert("data_batch_3.bin".into(), b1);
    expect_err(load_path(&write_dir("gap", &f)), "data_batch_2.bin", "missing");
    let mut f = sample_files();
    f.remove("test_batch.bin");
    expect_err(load_archive(&tar_gz(&f), "x.tar.gz"), "test_batch.bin", "missing");
    let mut f = sample_files();
    f.remove("data_batch_1.bin");
    expect_err(load_path(&write_dir("notrain", &f)), "data_batch_1.bin", "no training batch file");
    expect_err(load_path(Path::new("/nonexistent/cifar")), "/nonexistent/cifar", "no such file");
    let mut f = sample_files();
    f.insert("data_batch_2.bin".into(), Vec::new());
    expect_err(load_path(&write_dir("empty", &f)), "data_batch_2.bin", "empty");
}

#[test]
fn a_truncated_or_corrupt_archive_is_an_error_not_a_partial_load() {
    let gz = tar_gz(&sample_files());
    for cut in [gz.len() / 3, gz.len() / 2, gz.len() - 9, gz.len() - 1] {
        expect_err(load_archive(&gz[..cut], "cut.tar.gz"), "cut.tar.gz", "corrupt or truncated");
    }
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    expect_err(load_archive(&bad, "flipped.tar.gz"), "flipped.tar.gz", "corrupt or truncated");
}

#[test]
fn a_file_that_is_not_an_archive_says_so() {
    expect_err(load_archive(b"PK\x03\x04 a zip file", "data.zip"), "data.zip", "not a gzip archive (starts with bytes [50 4b 03 04]");
    expect_err(load_archive(b"", "empty.tar.gz"), "empty.tar.gz", "not a gzip archive");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"just some text, not a tar file at all").unwrap();
    let r = load_archive(&gz.finish().unwrap(), "text.gz");
    assert!(r.is_err());
    println!("gzip of plain text: {}", r.unwrap_err());
    let d = temp_dir("notarchive");
    std::fs::write(d.join("cifar.tar.gz"), b"hello").unwrap();
    expect_err(load_path(&d.join("cifar.tar.gz")), "cifar.tar.gz", "not a gzip archive");
}

#[test]
fn limit_keeps_the_first_records() {
    let mut s = Split::parse(&sample_files()["test_batch.bin"], "t").unwrap();
    let first = s.labels[..10].to_vec();
    s.truncate(10);
    assert_eq!((s.len(), s.images.len()), (10, 30720));
    assert_eq!(s.labels, first);
}

#[test]
fn safetensors_round_trip_is_exact_and_bad_files_are_named() {
    let l = Layout::lenet();
    let p = init_params(&l, 11);
    let bytes = to_safetensors(&p, &l);
    let back = from_safetensors(&bytes, &l, "m.safetensors").unwrap();
    assert!(p.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()), "bit-exact round trip");
    // PyTorch names and shapes are in the header.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains("\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[6,3,5,5]"), "{header}");
    assert!(header.contains("\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[120,400]"));
    let e = from_safetensors(b"garbage", &l, "g.safetensors").unwrap_err();
    assert!(e.contains("g.safetensors") && e.contains("not a readable safetensors"), "{e}");
    // A model with a wrong shape.
    let mut q = l.clone();
    q.specs[4].shape = vec![400, 120];
    let e = from_safetensors(&to_safetensors(&p, &q), &l, "t.safetensors").unwrap_err();
    assert!(e.contains("fc1.weight has shape [400, 120], expected [120, 400]"), "{e}");
    // A model missing a tensor.
    let mut q = l.clone();
    q.specs[9].name = "fc3.b";
    let e = from_safetensors(&to_safetensors(&p, &q), &l, "t.safetensors").unwrap_err();
    assert!(e.contains("fc3.bias is missing"), "{e}");
}

#[test]
fn a_model_file_names_its_network() {
    // Either network's file is read with its widths taken from the shapes.
    for arch in [tabcnn::model::Arch::LENET, tabcnn::model::Arch::WIDE, tabcnn::model::Arch { c1: 3, c2: 5, f1: 7, f2: 9 }] {
        let l = Layout::new(arch);
        let p = init_params(&l, 2);
        let (got, back) = tabcnn::checkpoint::from_safetensors_any(&to_safetensors(&p, &l), "m.safetensors").unwrap();
        assert_eq!(got, arch);
        assert!(p.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: bit-exact", arch.name());
    }
    // A wide file is not a LeNet one, and says so by shape.
    let w = Layout::new(tabcnn::model::Arch::WIDE);
    let e = from_safetensors(&to_safetensors(&init_params(&w, 0), &w), &Layout::lenet(), "w.safetensors").unwrap_err();
    assert!(e.contains("conv1.weight has shape [20, 3, 5, 5], expected [6, 3, 5, 5]"), "{e}");
    let e = tabcnn::checkpoint::from_safetensors_any(b"garbage", "g.safetensors").unwrap_err();
    assert!(e.contains("g.safetensors: not a readable safetensors"), "{e}");
}

#[test]
fn an_archive_fed_in_slices_loads_as_a_whole_one() {
    // The page feeds the unpacker as a download arrives: slice boundaries anywhere, even inside
    // the gzip header, give the same dataset; a cut stream is refused at finish().
    let gz = tar_gz(&sample_files());
    let whole = load_archive(&gz, "a.tar.gz").unwrap();
    for slice in [1usize, 7, 4096, 1 << 20] {
        let mut u = data::Unpacker::new("a.tar.gz");
        for chunk in gz.chunks(slice.max(gz.len() / 2000)) {
            u.feed(chunk).unwrap();
        }
        assert_eq!(u.fed(), gz.len() as u64);
        let d = u.finish().unwrap();
        assert_eq!((d.train, d.test), (whole.train.clone(), whole.test.clone()), "slices of {slice}");
    }
    let mut u = data::Unpacker::new("cut.tar.gz");
    u.feed(&gz[..gz.len() - 100]).unwrap();
    expect_err(u.finish(), "cut.tar.gz", "corrupt or truncated");
    let mut u = data::Unpacker::new("x.png");
    expect_err(u.feed(b"\x89PNG....").map(|_| unreachable!()), "x.png", "not a gzip archive");
}

/// A gzip stream of `zeros` zero bytes, compressed a megabyte at a time (a few hundred KB).
fn gzip_of_zeros(zeros: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        gz.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    gz.finish().unwrap()
}

#[test]
fn a_gzip_bomb_stops_at_what_cifar_can_be() {
    // Zeros are valid tar blocks (end-of-archive markers): without a cap this would decompress
    // to whatever size the stream says. It stops past MAX_TAR_BYTES, named.
    let bomb = gzip_of_zeros(4 * data::MAX_TAR_BYTES);
    println!("{} compressed bytes of zeros, decompressing past {} bytes", bomb.len(), data::MAX_TAR_BYTES);
    let mut u = data::Unpacker::new("bomb.tar.gz");
    let fed = bomb.chunks(64 * 1024).try_for_each(|c| u.feed(c));
    assert!(u.fed() < bomb.len() as u64 / 2, "refused as it is fed, at a quarter of the stream");
    let e = fed.and_then(|_| u.finish().map(|_| ())).expect_err("a bomb is refused");
    println!("error as the user sees it: {e}");
    assert!(e.source == "bomb.tar.gz" && e.what.contains(&format!("decompresses to more than {} bytes", data::MAX_TAR_BYTES)), "{e}");
}

/// A tar.gz whose members are (header, name, bytes), written as given.
fn raw_tar_gz(members: Vec<(tar::Header, &str, Vec<u8>)>, pax_first: Option<(&str, &str)>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    if let Some((key, value)) = pax_first {
        tar.append_pax_extensions([(key, value.as_bytes())]).unwrap();
    }
    for (mut h, name, bytes) in members {
        tar.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn header(size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

#[test]
fn a_tar_member_that_declares_more_than_a_batch_is_refused_before_it_is_read() {
    let f = sample_files();
    let test = f["test_batch.bin"].clone();
    // A PAX record that makes the next member 2^63 bytes: refused on the declared size, before
    // any allocation (it once hit Vec::with_capacity: "capacity overflow").
    let gz = raw_tar_gz(vec![(header(test.len() as u64, tar::EntryType::Regular), "cifar/data_batch_1.bin", test.clone())], Some(("size", "9223372036854775808")));
    let r = load_archive(&gz, "pax.tar.gz");
    expect_err(r, "pax.tar.gz/cifar/data_batch_1.bin", "declares 9223372036854775808 bytes, more than the 30730000");
    // A member of the right name but declared past 30,730,000 bytes.
    let gz = raw_tar_gz(vec![(header(test.len() as u64, tar::EntryType::Regular), "cifar/data_batch_1.bin", test.clone())], Some(("size", "40000000")));
    expect_err(load_archive(&gz, "big.tar.gz"), "big.tar.gz", "more than the 30730000 a CIFAR-10 batch file holds");
    // A GNU sparse member declares any size in a few KB (here 1 TiB of holes and 512 bytes of
    // data): not a plain file, refused by its type.
    let mut sparse = header(512, tar::EntryType::GNUSparse);
    let gnu = sparse.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset((1 << 40) - 512);
    gnu.sparse[0].set_length(512);
    gnu.set_real_size(1 << 40);
    sparse.set_cksum();
    let gz = raw_tar_gz(vec![(header(test.len() as u64, tar::EntryType::Regular), "cifar/test_batch.bin", test.clone()), (sparse, "cifar/data_batch_1.bin", vec![7; 512])], None);
    expect_err(load_archive(&gz, "sparse.tar.gz"), "sparse.tar.gz/cifar/data_batch_1.bin", "is a tar member of type GNUSparse, not a plain file");
    // The same member twice.
    let gz = raw_tar_gz(
        vec![
            (header(test.len() as u64, tar::EntryType::Regular), "a/test_batch.bin", test.clone()),
            (header(test.len() as u64, tar::EntryType::Regular), "b/test_batch.bin", test),
        ],
        None,
    );
    expect_err(load_archive(&gz, "twice.tar.gz"), "twice.tar.gz/b/test_batch.bin", "in the archive twice");
}

#[test]
fn only_the_official_batch_names_are_read() {
    // "data_batch_01.bin" once parsed as batch 1 and was then looked up as data_batch_1.bin: a
    // panic. Only the canonical names count; the others are not CIFAR-10's files.
    let mut f = sample_files();
    let b1 = f.remove("data_batch_1.bin").unwrap();
    f.insert("data_batch_01.bin".into(), b1.clone());
    f.insert("data_batch_+1.bin".into(), b1.clone());
    expect_err(load_path(&write_dir("names", &f)), "data_batch_1.bin", "no training batch file");
    expect_err(load_archive(&tar_gz(&f), "names.tar.gz"), "data_batch_1.bin", "no training batch file");
    f.insert("data_batch_1.bin".into(), b1.clone());
    let d = load_archive(&tar_gz(&f), "names.tar.gz").expect("the canonical one loads, the others are ignored");
    assert_eq!(d.train.len(), b1.len() / RECORD);
    let mut f = sample_files();
    for i in 2..=6 {
        f.insert(format!("data_batch_{i}.bin"), b1.clone());
    }
    expect_err(load_path(&write_dir("six", &f)), "data_batch_6.bin", "CIFAR-10 has 5 training batches");
}

#[test]
fn a_device_or_an_oversized_file_is_refused_before_it_is_read() {
    // A link to /dev/zero would be read forever: only regular files are read, sizes first.
    let f = sample_files();
    let d = write_dir("devzero", &f);
    std::fs::remove_file(d.join("data_batch_1.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("data_batch_1.bin")).unwrap();
    expect_err(load_path(&d), "data_batch_1.bin", "is not a regular file");
    expect_err(load_path(Path::new("/dev/zero")), "/dev/zero", "is not a regular file");
    // A batch file past 10,000 records (made sparse on disk: nothing is written).
    let d = write_dir("oversized", &f);
    std::fs::OpenOptions::new().write(true).open(d.join("test_batch.bin")).unwrap().set_len(data::MAX_BATCH_BYTES + 1).unwrap();
    expect_err(load_path(&d), "test_batch.bin", "is 30730001 bytes, more than the 30730000");
    // An archive file larger than the official one could be.
    let big = temp_dir("bigarchive").join("cifar.tar.gz");
    std::fs::File::create(&big).unwrap().set_len(data::MAX_ARCHIVE_BYTES + 1).unwrap();
    expect_err(load_path(&big), "cifar.tar.gz", &format!("is {} bytes, more than", data::MAX_ARCHIVE_BYTES + 1));
}

#[test]
fn a_model_file_past_the_width_limit_or_the_size_limit_is_refused_before_anything_is_allocated() {
    use safetensors::{tensor::TensorView, Dtype};
    use tabcnn::checkpoint::{from_safetensors_any, MAX_MODEL_BYTES};
    // Empty tensors (a zero dimension) declaring width 4096: a few hundred bytes that once made
    // the loader allocate the parameters of a 4096-wide network (gigabytes) before any check.
    let shapes: [(&str, Vec<usize>); 4] =
        [("conv1.weight", vec![4096, 0, 5, 5]), ("conv2.weight", vec![4096, 0, 5, 5]), ("fc1.weight", vec![4096, 0]), ("fc2.weight", vec![4096, 0])];
    let views: BTreeMap<String, TensorView> = shapes.iter().map(|(n, s)| (n.to_string(), TensorView::new(Dtype::F32, s.clone(), &[]).unwrap())).collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    println!("{} bytes declaring widths 4096", bytes.len());
    let e = from_safetensors_any(&bytes, "wide4096.safetensors").unwrap_err();
    println!("error as the user sees it: {e}");
    assert!(e.contains("wide4096.safetensors") && e.contains("widths 4096-4096-4096-4096") && e.contains("1 to 256"), "{e}");
    // A real model of fc1 width 300: one width limit everywhere, so the link could never name
    // it and a run of it could never resume; refused here with the same words.
    let arch = tabcnn::model::Arch { c1: 6, c2: 16, f1: 300, f2: 84 };
    let l = Layout::new(arch);
    let e = from_safetensors_any(&to_safetensors(&init_params(&l, 0), &l), "fc300.safetensors").unwrap_err();
    println!("error as the user sees it: {e}");
    assert!(e.contains("widths 6-16-300-84") && e.contains("1 to 256"), "{e}");
    let e = from_safetensors(&to_safetensors(&init_params(&l, 0), &l), &l, "fc300.safetensors").unwrap_err();
    assert!(e.contains("6-16-300-84") && e.contains("1 to 256"), "{e}");
    // A file larger than the largest model could be is refused by its size.
    let big = vec![0u8; MAX_MODEL_BYTES as usize + 1];
    let e = from_safetensors_any(&big, "big.safetensors").unwrap_err();
    println!("error as the user sees it: {e}");
    assert!(e.contains(&format!("big.safetensors: {} bytes, more than the {MAX_MODEL_BYTES}", MAX_MODEL_BYTES + 1)), "{e}");
    // The widest network the tool trains still round-trips.
    let widest = Layout::new(tabcnn::model::Arch { c1: 256, c2: 256, f1: 256, f2: 256 });
    let p = init_params(&widest, 1);
    let file = to_safetensors(&p, &widest);
    assert!((file.len() as u64) < MAX_MODEL_BYTES / 2, "F32 of the widest network: {} bytes", file.len());
    assert_eq!(from_safetensors_any(&file, "widest.safetensors").unwrap().1, p);
}
