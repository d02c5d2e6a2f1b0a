#!/usr/bin/env bash
# Runs every test: installs what is missing, then
#  1. the native tests (kernels vs the CPU reference, gradients, engine, data, CLI, page logic,
#     and with the `burn` feature our engines against burn's LeNet) on whatever wgpu adapter is
#     there (lavapipe in CI);
#  2. the tests that compare engines again, with the CPU engine's sums in another order
#     (TABCNN_ROUNDING=shifted, src/cpu/engine.rs): a test that holds under one rounding only
#     would hold on one machine only;
#  3. the page built to wasm by trunk, end to end in headless Chromium and Firefox.
# Each part runs whatever the others did; the end prints each part's count and exits non-zero
# if any failed. Arguments go to both `cargo test` runs (a test name filters them).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=target/test-logs
mkdir -p "$LOGS"

# "N passed, M failed" of a cargo test log (its `test result:` lines summed); a build that
# failed before any test ran counts as one failure.
cargo_counts() {
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
       END { printf "%d passed, %d failed", p, f }' "$1"
}
# The same of the page's tests (their `ok` and `FAIL` lines).
e2e_counts() {
  printf "%d passed, %d failed" "$(grep -c '^ok ' "$1")" "$(grep -c '^FAIL ' "$1")"
}

# Sourced here, not in a subshell: bash 5.2 execs the last command of a file sourced in
# `( ... )`, so what followed it in the subshell never ran. Its `set -e` is for its own lines
# (they run in a `||` list here); a failing part is counted below, not fatal.
native_setup=0
source scripts/setup-native.sh || native_setup=1
set +e
native=$native_setup
shifted=$native_setup
if [ "$native_setup" = 0 ]; then
  cargo test --locked --features burn "$@" 2>&1 | tee "$LOGS/native.log" || native=1
  TABCNN_ROUNDING=shifted cargo test --locked --features burn \
    --test engine --test cpu_engine --test burn "$@" 2>&1 | tee "$LOGS/shifted.log" || shifted=1
else
  echo "setup of the native tests failed: they did not run" | tee "$LOGS/native.log" "$LOGS/shifted.log"
fi
web=0
bash scripts/test-web.sh 2>&1 | tee "$LOGS/web.log" || web=1

echo
echo "== summary (logs in $LOGS) =="
total_p=0; total_f=0
for part in native shifted web; do
  if [ "$part" = web ]; then counts=$(e2e_counts "$LOGS/web.log"); else counts=$(cargo_counts "$LOGS/$part.log"); fi
  read -r p _ f _ <<<"${counts//,/}"
  # A part that exited non-zero with no failed test counted (a build or set-up error) fails once.
  [ "${!part}" = 1 ] && [ "$f" = 0 ] && f=1
  echo "$part: $p passed, $f failed"
  total_p=$((total_p + p)); total_f=$((total_f + f))
done
echo "total: $total_p passed, $total_f failed"
[ "$total_f" = 0 ] || exit 1
