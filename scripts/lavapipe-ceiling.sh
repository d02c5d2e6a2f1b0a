#!/usr/bin/env bash
# How far the GPU engine on lavapipe can go at batch 4, in one run (BENCHMARKS.md, "The lavapipe
# target"): the GPU engine with llvmpipe's thread pool (2 threads) and inline on one thread
# (LP_NUM_THREADS=0), each with the per-kernel profile; the same on Mesa 25.0.7's lavapipe from
# Debian's bookworm-backports, unpacked into a temporary folder (nothing is installed); then the
# CPU engine and the PyTorch recipe.
#   bash scripts/lavapipe-ceiling.sh [ARCHIVE]   (default ../shared/data/cifar-10-binary.tar.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-native.sh
archive="${1:-../shared/data/cifar-10-binary.tar.gz}"
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tar xzf "$archive" -C "$dir"
data="$dir/cifar-10-batches-bin"
bench() { ./target/release/tabcnn bench --data "$data" --batches 4 --seconds 10 "$@" 2>&1 | grep -Ev "XDG_RUNTIME_DIR|^data:"; }
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== Debian's lavapipe $(dpkg-query -W -f '${Version}' mesa-vulkan-drivers), llvmpipe's 2 threads"
bench --engine gpu --profile
echo "== the same, LP_NUM_THREADS=0 (every dispatch inline on the submitting thread)"
LP_NUM_THREADS=0 bench --engine gpu --profile
# Mesa 25 from bookworm-backports, unpacked beside the system's, used through VK_ICD_FILENAMES.
m25="$dir/mesa25"
mkdir -p "$m25"
# A private apt state in the temporary folder: the system's sources and lists are untouched.
mkdir -p "$m25/lists/partial"
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$m25/sources.list"
apt_tmp=(-o Dir::Etc::sourcelist="$m25/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$m25/lists")
if apt-get "${apt_tmp[@]}" update -qq 2>/dev/null \
   && (cd "$m25" && apt-get "${apt_tmp[@]}" download -qq mesa-vulkan-drivers libdrm2 libdrm-amdgpu1 2>/dev/null); then
  for f in "$m25"/*.deb; do dpkg -x "$f" "$m25/root"; done
  lib="$m25/root/usr/lib/x86_64-linux-gnu"
  sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib/libvulkan_lvp.so\"#" "$m25/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$m25/lvp.json"
  v=$(dpkg-deb -f "$m25"/mesa-vulkan-drivers_*.deb Version)
  echo "== lavapipe $v (bookworm-backports), llvmpipe's 2 threads"
  VK_ICD_FILENAMES="$m25/lvp.json" LD_LIBRARY_PATH="$lib" bench --engine gpu --profile
  echo "== the same, LP_NUM_THREADS=0"
  LP_NUM_THREADS=0 VK_ICD_FILENAMES="$m25/lvp.json" LD_LIBRARY_PATH="$lib" bench --engine gpu --profile
else
  echo "== (bookworm-backports' Mesa could not be fetched: skipped)"
fi
echo "== CPU engine"
bench --engine cpu
if [ -f ../shared/reference/seed_lenet.py ]; then
  python3 -c "import torch, numpy" 2>/dev/null || pip install -q torch numpy
  echo "== PyTorch $(python3 -c 'import torch; print(torch.__version__)') reference, 2 threads, one epoch on 20,000 images"
  python3 ../shared/reference/seed_lenet.py "$data" --batch 4 --epochs 1 --limit 20000 --threads 2 | grep throughput
fi
