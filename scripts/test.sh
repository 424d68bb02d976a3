#!/usr/bin/env bash
# The whole test suite: system packages, format, lints, unit and integration
# tests (integration tests need root: real mounts, mknod, a local registry).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
