#!/usr/bin/env bash
# The page's tests: installs what is missing (scripts/setup-web.sh with the browsers), builds
# the page with trunk exactly as users get it (dist/), then runs the end-to-end tests in
# Debian's headless Chromium (tests/e2e/page.test.mjs) and the CPU-engine, controls, model and
# saved-run tests in Debian's headless Firefox ESR (tests/e2e/firefox.test.mjs). Screenshots:
# target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_BROWSER=1 source scripts/setup-web.sh
status=0
trunk build --release
# The build visitors get holds no test hook: the prelude the Chromium tests inject into the
# worker (feature test-hooks) is not in its wasm or its script.
if grep -l tabcnnWorkerPrelude dist/*.wasm dist/*.js; then
  echo "FAIL the visitors' build (dist/) holds the test hook tabcnnWorkerPrelude"
  status=1
else
  echo "ok the visitors' build (dist/) holds no test hook"
fi
# The Chromium tests fake faults through the hook: their own build, beside the visitors'.
trunk build --release --features test-hooks --dist target/e2e/dist
DIST=target/e2e/dist node tests/e2e/page.test.mjs || status=1
# Firefox tests the build visitors get.
node tests/e2e/firefox.test.mjs || status=1
exit $status
