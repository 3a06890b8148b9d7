#!/usr/bin/env bash
# Runs every test suite: unit tests and the checks that start real sandboxes.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-libtensorflow.sh
# The suites start the real binaries, so they are built first.
cargo build --workspace --bins --tests
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
