#!/usr/bin/env bash
# Runs every test suite: unit tests and the checks that start real sandboxes.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-libtensorflow.sh
# The CUDA libraries (about 2.3 GB of wheels, 3.7 GB unpacked): checks/tests/cuda.rs resolves the
# CUDA image's closure from them. Kept in .cache like the CPU library; nothing is fetched twice.
./scripts/setup-libtensorflow.sh --variant cuda
# TensorFlow Serving's Python client, which checks/tests/serve.rs drives against `tfsandbox serve`.
./scripts/setup-serving-client.sh
# The suites start the real binaries, so they are built first.
cargo build --workspace --bins --tests
# The docker suites share one worker image; built and loaded once here rather than by whichever
# test starts first (skipped when the engine has it already).
./target/debug/tfsandbox image build --load
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
