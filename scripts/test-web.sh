#!/usr/bin/env bash
# The page's tests: installs what is missing (scripts/setup-web.sh with the browsers), builds
# the page with trunk exactly as users get it (dist/), then runs the end-to-end tests in
# Debian's headless Chromium (tests/e2e/page.test.mjs) and the CPU-engine, controls, model and
# saved-run tests in Debian's headless Firefox ESR (tests/e2e/firefox.test.mjs). Screenshots:
# target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_BROWSER=1 source scripts/setup-web.sh
trunk build --release
status=0
node tests/e2e/page.test.mjs || status=1
node tests/e2e/firefox.test.mjs || status=1
exit $status
