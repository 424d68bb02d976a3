#!/usr/bin/env bash
# The cluster on one machine (root): 3 `herd agent`s, each in its own network
# namespace on a test bridge. Leader failover time (SIGKILL the leader until
# a survivor leads and acknowledges a write) and node-loss-to-replacement
# time (SIGKILL a non-leader running a Deployment pod until 3 pods Running
# elsewhere), median and max over N trials; agent RSS per node, idle and
# with the Deployment. Release build. Prints a table.
# Options: --trials N (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo bench -p herd-agent --bench cluster -- "$@"
