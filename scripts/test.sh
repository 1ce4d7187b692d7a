#!/usr/bin/env bash
# The test command of the README: installs what the tests need, starts the services they use,
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/services.sh
# End-to-end tests run the real `amvm` binary: build it first.
cargo build -p amvm-host --locked
cargo test --workspace --locked
