#!/usr/bin/env bash
# The real-GPU check: our GPU engine through Vulkan on an NVIDIA GPU, beside the PyTorch recipe
# on CUDA, in one run. Two halves:
#
#   bash scripts/gpu-check.sh prepare   # here: the release binary, the Vulkan loader packages
#                                       # (x86-64) and the PyTorch reference into .gpu-check/
#   bash scripts/gpu-check.sh run       # there, from the repository root, with .gpu-check and
#                                       # .gl carried: writes its logs to $OUT (or ./gpu-check-out)
#
# The machine there has no internet and a driver but maybe no Vulkan loader: the loader's .deb
# files travel in .gl and are unpacked at the start. The data is the bundled sample (the full
# archive is too big to carry); images/s does not depend on the set's size once it is on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
  grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >>.git/info/exclude
  grep -qx '/.gpu-check/' .git/info/exclude 2>/dev/null || echo /.gpu-check/ >>.git/info/exclude
  mkdir -p .gl .gpu-check /tmp/amd64/partial
  if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  [ "$(uname -m)" = x86_64 ] || { echo "gpu-check: build on x86-64 (the GPU machine's processor)" >&2; exit 1; }
  cargo build --release --locked --bin tabcnn --example overlap
  cp target/release/tabcnn target/release/examples/overlap .gpu-check/
  strip .gpu-check/tabcnn .gpu-check/overlap # the debug info would take most of the 64 MiB a run carries
  cp ../shared/reference/seed_lenet.py .gpu-check/
  du -sh .gl .gpu-check
}

run() {
  out="${OUT:-gpu-check-out}"
  mkdir -p "$out"
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
  {
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv || true
    for net in lenet wide; do
      echo "== tabcnn bench --net $net"
      ./.gpu-check/tabcnn bench --data data/sample --engine gpu --net "$net" --batches 4,64,256 --seconds 4 --profile --shape
    done
    for b in 4 64; do
      echo "== overlap: a chunk in flight while the last one's metrics come back, batch $b"
      ./.gpu-check/overlap "$b" $((b == 4 ? 250 : 40)) 2 data/sample
    done
    for b in 4 64 256; do
      echo "== seed_lenet.py --device cuda --batch $b"
      epochs=$((b == 4 ? 2 : 20))
      python3 .gpu-check/seed_lenet.py data/sample/cifar-10-batches-bin --device cuda --batch "$b" --epochs "$epochs" --lr 0.001
    done
  } 2>&1 | tee "$out/gpu-check.log"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
