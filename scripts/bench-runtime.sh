#!/usr/bin/env bash
# Pod start benchmark: herd's pod runtime vs raw `runc run --detach` of an
# equivalent bundle, same run (root). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The static per-pod monitor next to target/release/herd.
scripts/build-monitor.sh
cargo bench -p herd-agent --bench pod_start -- "$@"
