#!/usr/bin/env bash
# The test command of the README: installs what the tests need, starts the services they use,
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/services.sh
cargo test --workspace --locked
