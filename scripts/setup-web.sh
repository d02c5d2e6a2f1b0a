#!/usr/bin/env bash
# Installs what building the page needs on a fresh machine (sourced by scripts/serve.sh and
# scripts/test-web.sh; does nothing when all is there): the wasm32 target, trunk 0.21.14 and
# wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock (trunk then
# uses it from PATH and downloads nothing). With SETUP_BROWSER=1 also Debian's Chromium and
# Firefox ESR and the end-to-end tests' npm packages (playwright-core and puppeteer-core, which
# never download a browser).
set -euo pipefail
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust with rustup" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup target list --installed 2>/dev/null | grep '^wasm32-unknown-unknown$' >/dev/null; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
# Both tools are compiled without optimisation (--debug): that takes 3.6 min instead of 8.4 on
# 2 cores, and they only drive the build (trunk builds the page in 5.2 s instead of 4.5,
# wasm-bindgen runs 0.9 s instead of 0.2).
if ! trunk --version 2>/dev/null | grep ' 0\.21\.14' >/dev/null; then
  echo "setup: installing trunk 0.21.14 (about 3 minutes, once)"
  cargo install trunk --version 0.21.14 --locked --debug
fi
WBG=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep " $WBG\$" >/dev/null; then
  echo "setup: installing wasm-bindgen-cli $WBG (the version in Cargo.lock; about a minute, once)"
  # Not --locked: its lock file names a crate version this registry lacks.
  cargo install wasm-bindgen-cli --version "$WBG" --debug
fi
if [ "${SETUP_BROWSER:-0}" = 1 ]; then
  # Debian's firefox-esr too: the page's tests run in a second browser (puppeteer-core over
  # WebDriver BiDi; nothing downloads a browser).
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/firefox-esr ]; then
    echo "setup: installing Debian's chromium (headless, WebGPU through SwiftShader) and firefox-esr"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium firefox-esr >/dev/null
  fi
  if [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/puppeteer-core ]; then
    echo "setup: installing playwright-core and puppeteer-core (npm ci in tests/e2e)"
    (cd tests/e2e && npm ci --no-audit --no-fund --silent)
  fi
fi
