#!/usr/bin/env bash
# The README's first command: install, build, run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p amvm-host
exec target/release/amvm version "$@"
