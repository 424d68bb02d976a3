#!/usr/bin/env bash
# Issue 6 benchmarks of the cluster pieces, release builds, each with its
# baseline in the same run (no root needed; traffic only on 127.0.0.0/8):
#   raft_write  3 Raft voters over gRPC + mutual TLS (127.0.0.2-4) and over
#               the in-memory transport, vs LocalStore (single node);
#               sequential latency and 16 concurrent writers, on the leader
#               and through a follower. Files under $HERD_BENCH_DIR or $TMPDIR.
#   scheduler   1,000 nodes / 10,000 pods: the algorithm vs a next-fit
#               baseline, then the loop over LocalStore (tmpfs and disk).
#   gossip      1,000 simulated members, 50 simulated members over 5 seeds,
#               and 60 real UDP members on 127.0.0.1, 10 failures each;
#               down digests on (as the daemon runs) vs off (baseline).
# Builds once (cargo bench --no-run, ~10 min cold on 2 cores), then runs.
#
#   scripts/bench-cluster-pieces.sh [raft|scheduler|gossip ...]
set -euo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(raft scheduler gossip)

cargo bench -p herd-agent --bench raft_write --bench scheduler --bench gossip --no-run

for b in "${benches[@]}"; do
  case "$b" in
    raft) cargo bench -p herd-agent --bench raft_write -- 400 16 ;;
    scheduler) cargo bench -p herd-agent --bench scheduler -- --nodes 1000 --pods 10000 --big 1 ;;
    gossip) cargo bench -p herd-agent --bench gossip -- --members 1000 --failures 10 \
      --small 50 --small-failures 10 --seeds 5 --udp 60 --udp-failures 10 --baseline 1 ;;
    *) echo "bench-cluster-pieces: unknown bench $b (raft, scheduler, gossip)" >&2; exit 2 ;;
  esac
done
