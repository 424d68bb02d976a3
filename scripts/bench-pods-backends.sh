#!/usr/bin/env bash
# Pod apply → Running on herd's two runtime backends (native runc and
# containerd) next to the floors (containerd's task create + start through
# its API, raw `runc run --detach`), pod by pod interleaved, in one run
# (root; issue 8). Starts its own containerd 1.6 instances under temp dirs.
# Release build. Prints a markdown table.
# Options: --pods N (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The static per-pod monitor next to target/release/herd.
scripts/build-monitor.sh
uptime
cargo bench -p herd-agent --bench pod_backends -- "$@"
