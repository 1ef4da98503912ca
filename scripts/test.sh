#!/usr/bin/env bash
# The whole test suite, with its own set-up. Usage: bash scripts/test.sh
#   FUZZ_SECONDS=N   seconds per fuzz target in the short fuzz run (default 20; 0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain (pinned in rust-toolchain.toml)"
rustc --version
cargo --version

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "unit, property and loopback tests"
cargo test --workspace

step "benchmark harnesses build"
cargo build --release -p ipsla-bench

if [ "${FUZZ_SECONDS:-20}" != "0" ]; then
  step "fuzz every parser briefly (fuzz/run.sh)"
  bash fuzz/run.sh "${FUZZ_SECONDS:-20}"
fi

step "all tests passed"
