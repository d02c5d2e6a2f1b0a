#!/usr/bin/env python3
"""Makes data/sample/cifar-10-batches-bin/ (the sample shipped in the repo) from the official
cifar-10-binary.tar.gz: the first TRAIN records of data_batch_1.bin as data_batch_1.bin, the
first TEST records of test_batch.bin as test_batch.bin, and batches.meta.txt. The shared copy's
records are shuffled, so the first records are a fair sample of every class.

  python3 scripts/make_sample.py [ARCHIVE] [--train 2000] [--test 1000]
"""
import argparse, os, tarfile

RECORD = 3073
ap = argparse.ArgumentParser()
ap.add_argument("archive", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar-10-binary.tar.gz"))
ap.add_argument("--train", type=int, default=2000)
ap.add_argument("--test", type=int, default=1000)
ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "sample", "cifar-10-batches-bin"))
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
want = {"data_batch_1.bin": a.train, "test_batch.bin": a.test, "batches.meta.txt": None}
with tarfile.open(a.archive, "r:gz") as t:
    for m in t:
        name = os.path.basename(m.name)
        if name in want:
            data = t.extractfile(m).read()
            if want[name] is not None:
                data = data[: want[name] * RECORD]
            with open(os.path.join(a.out, name), "wb") as f:
                f.write(data)
            print(f"{name}: {len(data)} bytes")
