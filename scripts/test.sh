#!/usr/bin/env bash
# Runs every test: installs what is missing (scripts/setup-native.sh), then the kernel,
# gradient, engine, data and CLI tests on whatever wgpu adapter is there (lavapipe in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-native.sh
cargo test --locked "$@"
