#!/usr/bin/env bash
# Runs every test: installs what is missing, then the native tests (kernels vs the CPU
# reference, gradients, engine, data, CLI, page logic, and with the `burn` feature our engines
# against burn's LeNet) on whatever wgpu adapter is there (lavapipe in CI), then the page built
# to wasm by trunk, end to end in headless Chromium. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-native.sh
cargo test --locked --features burn "$@"
bash scripts/test-web.sh
