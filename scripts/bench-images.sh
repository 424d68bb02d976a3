#!/usr/bin/env bash
# Image import/pull benchmark: herd vs `skopeo copy` (100 MiB, 4 layers).
# Prints a Markdown table and writes it to target/bench-images.md.
# HERD_BENCH_ITERS sets the iteration count (default 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p herd-agent -p herd-integration
HERD_BIN="$PWD/target/release/herd" cargo bench -p herd-integration --bench images
