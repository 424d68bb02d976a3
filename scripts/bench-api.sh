#!/usr/bin/env bash
# The API benchmark (root), herd and etcd side by side in the same run:
# a 3-node herd cluster in network namespaces (client on node 0's HTTPS API
# with the `herd kubeconfig` client certificate) and a 3-member Debian etcd
# cluster on 127.0.0.1 (its v3 gRPC-gateway JSON API, and etcdctl), holding
# the same N pods. Creates/s with 1 and 16 writers, GET/LIST/LIST limit=500/
# update/watch latency p50/p99, RSS of node 0's agent and of the etcd
# members. Release build. Prints a table.
# Options: --pods N (10000), --samples N (1000), --writers N (16),
#          --serial N (creates by the single writer, 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo bench -p herd-agent --bench api -- "$@"
