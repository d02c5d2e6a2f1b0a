#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the native engine and its tests: a Vulkan
# loader and Mesa's software Vulkan driver (lavapipe), so wgpu finds an adapter without a GPU.
# Sourced by scripts/test.sh and scripts/train.sh; does nothing when all is there.
set -euo pipefail
# (grep reads all of ldconfig's list: with -q it could stop early, and under pipefail the
# SIGPIPE of ldconfig would read as a missing loader.)
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ldconfig -p | grep libvulkan.so.1 >/dev/null; then
  echo "setup: installing the Vulkan loader and Mesa lavapipe (software Vulkan)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust with rustup" >&2; exit 1; }
# The Vulkan loader probes for a Wayland display and complains when XDG_RUNTIME_DIR is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
