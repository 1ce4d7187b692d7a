#!/usr/bin/env bash
# Installs everything AMVM needs on Debian 12, idempotently: Debian packages, Rust wasm targets.
# Run as root (or with sudo available). Safe to run again; does nothing when all is present.
set -euo pipefail

SUDO=""
if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi

# Debian packages: librrd (RRD store) + rrdtool (tests read our files with the stock tool),
# libclang (bindgen for the rrd crate), libvirt (VM metrics; daemon for tests), pkg-config.
# Installing qemu-system-x86 downgrades qemu-utils: keep them in one command.
PKGS=(build-essential pkg-config libclang-dev librrd-dev rrdtool libvirt-dev libvirt-daemon-system
      qemu-system-x86 qemu-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: stable toolchain (rustup) with the wasm targets policies and the dashboard build for.
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found; install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
installed=$(rustup target list --installed)
for t in wasm32-wasip2 wasm32-unknown-unknown; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
