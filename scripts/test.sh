#!/usr/bin/env bash
# The test command of the README: installs what the tests need, starts the services they use,
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
scripts/services.sh
# End-to-end tests run the real `amvm` binary. `cargo test --workspace` builds it (host's own
# integration tests need it) with the same feature set as the tests: a separate `cargo build`
# would resolve dev-dependency features differently and compile wasmtime a second time.
cargo test --workspace --locked
