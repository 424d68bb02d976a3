#!/usr/bin/env bash
# The API benchmark (root), three sides in the same run, one after another
# (each torn down before the next starts), holding the same N pods:
#   embedded: a 3-node herd cluster in network namespaces on its embedded
#             Raft store (client on node 0's HTTPS API with the
#             `herd kubeconfig` client certificate);
#   etcd:     the same 3-node herd cluster with every node on
#             `--datastore etcd://...` (a 3-member etcd 3.4 in the cluster's
#             bridge namespace);
#   raw:      a 3-member Debian etcd alone on 127.0.0.1 (its v3 gRPC-gateway
#             JSON API, and etcdctl), the floor.
# Creates/s with 1 and 16 writers, GET/LIST/LIST limit=500/update/watch
# latency p50/p99, RSS of node 0's agent on both herd sides and of the etcd
# members. Release build. Prints a table.
# Options: --pods N (10000), --samples N (1000), --writers N (16),
#          --serial N (creates by the single writer, 1000),
#          --sides embedded,etcd,raw (default all three).
# Quick check: scripts/bench-api.sh --pods 500 --samples 100 --sides etcd
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo bench -p herd-agent --bench api -- "$@"
