#!/usr/bin/env bash
# The side-by-side benchmark of BENCHMARKS.md, in one run on one machine: tabcnn's GPU engine
# (on whatever adapter wgpu finds: lavapipe here), its CPU engine and burn-wgpu 0.22.1 running
# the same LeNet on the same adapter, then the PyTorch recipe (../shared/reference/seed_lenet.py),
# each at batch 4 and 64, training images per second.
#   bash scripts/bench.sh [ARCHIVE]   (default ../shared/data/cifar-10-binary.tar.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-native.sh
archive="${1:-../shared/data/cifar-10-binary.tar.gz}"
ref=../shared/reference/seed_lenet.py
cargo build --release --locked -q --features burn
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== tabcnn bench (GPU and CPU engines, burn-wgpu; batch 4 and 64)"
./target/release/tabcnn bench --data "$archive" --engine gpu,cpu,burn --batches 4,64 --seconds 10 --profile --threads 1,2
if [ -f "$ref" ]; then
  python3 -c "import torch, numpy" 2>/dev/null || pip install -q torch numpy
  dir=$(mktemp -d)
  tar xzf "$archive" -C "$dir"
  echo "== PyTorch $(python3 -c 'import torch; print(torch.__version__)') reference, 2 threads, one epoch on 20,000 images"
  for b in 4 64; do
    python3 "$ref" "$dir/cifar-10-batches-bin" --batch "$b" --epochs 1 --limit 20000 --threads 2 | grep throughput
  done
  rm -rf "$dir"
fi
