#!/usr/bin/env bash
# Builds the native CLI and trains LeNet with the PyTorch recipe on the bundled sample (or on
# what --data names); every argument goes to `tabcnn train`. See `tabcnn help`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-native.sh
cargo build --release --locked
exec ./target/release/tabcnn train "$@"
