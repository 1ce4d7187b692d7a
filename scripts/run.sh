#!/usr/bin/env bash
# The README's first command: install what building amvm needs, build (release), and run
# `amvm demo`: the controller replaying the embedded PlanetLab day (800 hosts, 1052 VMs) in real
# time under lr-mmt-1.2, with its API on http://127.0.0.1:8080. Extra arguments go to
# `amvm demo` (e.g. --listen 127.0.0.1:9090, --automation manual, --step-ms 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p amvm-host
exec target/release/amvm demo "$@"
