#!/usr/bin/env bash
# Installs what AMVM needs on Debian 12, idempotently: Debian packages, Rust wasm targets.
#   scripts/install-deps.sh           what building and running `amvm` needs (the README's first command)
#   scripts/install-deps.sh --tests   plus what the tests use: rrdtool, libvirt's daemon, QEMU,
#                                     Chromium and its WebDriver (dashboard tests), the pinned
#                                     nightly and cargo-fuzz (fuzzing)
# Run as root (or with sudo available). Safe to run again; does nothing when all is present.
set -euo pipefail

SUDO=""
if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi

# Debian packages: librrd (RRD store) + rrdtool (tests read our files with the stock tool),
# libclang (bindgen for the rrd crate), libvirt (VM metrics; daemon for tests), pkg-config;
# tgt (the volume tests' disk array), lvm2 (LV-backed volumes), openssh (the volume driver over SSH).
# QEMU comes from bookworm-backports (below).
TESTS=0
[[ "${1:-}" == "--tests" ]] && TESTS=1
PKGS=(build-essential pkg-config libclang-dev librrd-dev libvirt-dev)
if ((TESTS)); then
  PKGS+=(rrdtool libvirt-daemon-system chromium chromium-driver tgt lvm2 openssh-server openssh-client)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU >= 9.0 from bookworm-backports for the lab tests: QEMU 7.2 (bookworm) under TCG loses
# guest writes during pre-copy (its migration bitmap sync did not re-arm TCG's dirty tracking;
# fixed upstream in 9.0, "physmem: Fix migration dirty bitmap coherency with TCG memory
# access"), so a migrated guest can crash on the destination. qemu-utils comes along in the
# same command (installing one without the other downgrades it).
if ((TESTS)); then
  qemu_major=$( (qemu-system-x86_64 --version 2>/dev/null || true) | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
  if [[ -z "$qemu_major" || "$qemu_major" -lt 9 ]]; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "install-deps: adding Debian bookworm-backports (QEMU >= 9.0 for the lab tests)" >&2
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | $SUDO tee "$src" >/dev/null
    fi
    $SUDO apt-get update -qq
    echo "install-deps: installing qemu-system-x86 and qemu-utils from bookworm-backports" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
  fi
  # QEMU's own iSCSI initiator (volumes, issue #11): block-iscsi.so, matching the backports QEMU.
  if [[ ! -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]]; then
    echo "install-deps: installing qemu-block-extra from bookworm-backports" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-block-extra >/dev/null
  fi
  # The real-Nova fixture of the OpenStack test (after QEMU: it refuses to change QEMU/libvirt).
  "$(dirname "$0")/openstack/lab.sh" deps
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

# The dashboard (web/) is built by host/build.rs with the wasm-bindgen CLI, which must be the
# exact version of the wasm-bindgen crate in Cargo.lock (no trunk or cargo-leptos: they download
# tools at build time).
WASM_BINDGEN=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$(dirname "$0")/../Cargo.lock" 2>/dev/null || true)
WASM_BINDGEN=${WASM_BINDGEN:-0.2.130}
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WASM_BINDGEN"; then
  echo "install-deps: installing wasm-bindgen-cli $WASM_BINDGEN" >&2
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN"
fi

if ((!TESTS)); then
  exit 0
fi

# Fuzzing (monitoring wire decoder, fuzz/): a pinned nightly and cargo-fuzz. Optional: when the
# nightly cannot be installed (offline mirror), .ci/run says so and skips the fuzz step.
FUZZ_NIGHTLY=nightly-2026-10-30
if ! rustup toolchain list | grep -q "^$FUZZ_NIGHTLY"; then
  rustup toolchain install "$FUZZ_NIGHTLY" --profile minimal || echo "install-deps: cannot install $FUZZ_NIGHTLY; fuzzing disabled" >&2
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  cargo install cargo-fuzz --version 0.13.2 --locked || echo "install-deps: cannot install cargo-fuzz; fuzzing disabled" >&2
fi
