#!/usr/bin/env bash
# The README's first command: install, build, and simulate the default strategy (lr-mmt-1.2) on the
# embedded PlanetLab day (800 hosts, 1052 VMs). Extra arguments go to `amvm sim` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p amvm-host
exec target/release/amvm sim "$@"
