#!/usr/bin/env bash
# Pods through the whole agent (root): apply → Running latency over the
# unix-socket API next to raw `runc run --detach`, 100 pods at once, agent
# and monitor RSS. Release build. Prints a markdown table.
# Options: --pods N (default 200), --burst N (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The static per-pod monitor next to target/release/herd.
scripts/build-monitor.sh
cargo bench -p herd-agent --bench pod_apply -- "$@"
