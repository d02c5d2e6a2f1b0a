#!/usr/bin/env bash
# The app: installs what is missing (scripts/setup-web.sh), builds the page with trunk and
# serves it; open the URL it prints. The page trains on the bundled sample at once; with
# --full, the shared CIFAR-10 archive (../shared/data/cifar-10-binary.tar.gz, or the path after
# --full) is put in www/data/ so the page's "CIFAR-10" choice fetches it. Other arguments go to
# `trunk serve` (e.g. --port 9000, --address 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-web.sh
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full)
      src=../shared/data/cifar-10-binary.tar.gz
      if [ $# -gt 1 ] && [ -f "$2" ]; then src=$2; shift; fi
      [ -f "$src" ] || { echo "serve: $src not found: give the path of cifar-10-binary.tar.gz after --full" >&2; exit 1; }
      cp -f "$src" www/data/cifar-10-binary.tar.gz
      echo "serve: the full dataset is served as data/cifar-10-binary.tar.gz" ;;
    *) args+=("$1") ;;
  esac
  shift
done
port=8080
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = --port ] && port=${args[$((i + 1))]}; done
echo "serve: building the page (trunk build --release), then serving it at http://127.0.0.1:$port/"
echo "serve: open that URL in a browser with WebGPU (Chrome, Edge; Firefox and Safari recent versions)"
exec trunk serve --release "${args[@]}"
