#!/usr/bin/env bash
# CNI ADD/DEL benchmark (issue 4): herd-cni vs the reference bridge+host-local
# plugins vs the in-agent netlink path, same run, same machine, each inside a
# node netns the benchmark creates (nothing is added to the root netns).
# Needs root. Prints a markdown table (median and p99 per verb, plus CPU time).
# State files go under $TMPDIR (default /tmp); fsync latency of that disk is
# part of ADD/DEL. TMPDIR=/dev/shm scripts/bench-net.sh measures without it.
#
#   scripts/bench-net.sh [--iterations N] [--warmup N] [--reference-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench-net: needs root (network namespaces)" >&2
  exit 1
fi
[ -x /usr/lib/cni/bridge ] || scripts/install-deps.sh

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p herd-cni --bin herd-cni
cargo bench -p herd-cni --bench cni_add_del -- --herd-cni "$target/release/herd-cni" "$@"
