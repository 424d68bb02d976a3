#!/usr/bin/env bash
# The main job: build herd and the project's busybox test images, serve one
# from a local registry on 127.0.0.1, import and pull images, then run a
# three-node cluster (`herd agent --init` on the first node, `--join` on the
# others) with a sample workload (ConfigMap, Secret, a web pod with an init
# container, probes and volumes, a run-once pod that talks to it, and a
# Deployment of 6 behind a Service), drive it with the CLI and the real
# kubectl (a kubeconfig from `herd kubeconfig`), kill the Raft
# leader and watch the cluster recover, and clean up. Every node runs in its
# own network namespace (herd-demo-1..3, wired to a bridge in
# herd-demo-net), so the host's network is untouched; each node has a copy
# of the registry on its own 127.0.0.1. State lives in a temp dir (or
# $HERD_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p herd-agent -p herd-integration --bins
# The static per-pod monitor, next to herd (the agents use it).
scripts/build-monitor.sh
HERD=$PWD/target/release/herd
WORK=${HERD_DEMO_DIR:-$(mktemp -d /tmp/herd-demo.XXXXXX)}
NODES=3
NET=herd-demo-net
REG_PIDS=()
AGENT_PIDS=()
ns() { echo "herd-demo-$1"; }
root() { echo "$WORK/node$1/root"; }
in_node() { local i=$1; shift; nsenter --net="/run/netns/$(ns "$i")" "$@"; }
h() { local i=$1; shift; "$HERD" --root-dir "$(root "$i")" "$@"; }
start_agent() {
  local i=$1; shift
  # nsenter execs herd itself: $! is the agent's pid.
  nsenter --net="/run/netns/$(ns "$i")" "$HERD" --root-dir "$(root "$i")" -v agent --node-name "node-$i" \
    --run-dir "$WORK/node$i/run" --log-dir "$WORK/node$i/logs" --cgroup-name "herd-demo-$i" \
    --manifests "$WORK/node$i/manifests" --bridge herddemo0 \
    --advertise-address "10.250.77.$i" "$@" >>"$WORK/node$i/agent.log" 2>&1 &
  AGENT_PIDS[$i]=$!
}
wait_api() { for _ in $(seq 300); do h "$1" get nodes >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "node $1 did not come up:"; tail -20 "$WORK/node$1/agent.log"; return 1; }
cluster() { curl -s --unix-socket "$(root "$1")/agent.sock" http://localhost/debug/cluster; }
leader() { cluster "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader") or "")'; }
cleanup() {
  for i in $(seq "$NODES"); do
    [ -n "${AGENT_PIDS[$i]:-}" ] && kill "${AGENT_PIDS[$i]}" 2>/dev/null && wait "${AGENT_PIDS[$i]}" 2>/dev/null || true
  done
  for i in $(seq "$NODES"); do
    # Pods outlive their agent (monitors hold them): stop them by exact runc root.
    for c in $(runc --root "$WORK/node$i/run/runtime/runc" list -q 2>/dev/null); do
      runc --root "$WORK/node$i/run/runtime/runc" delete -f "$c" >/dev/null 2>&1 || true
    done
    pkill -9 -f -- "--run-dir $WORK/node$i/run" 2>/dev/null || true
    pkill -9 -f -- "$WORK/node$i/run/" 2>/dev/null || true
  done
  for p in "${REG_PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  sleep 0.5
  grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for i in $(seq "$NODES"); do
    ip netns del "$(ns "$i")" 2>/dev/null || true
    # Anything still in the node's cgroups (by exact name) is ours.
    find /sys/fs/cgroup/*/"herd-demo-$i" /sys/fs/cgroup/"herd-demo-$i" -name cgroup.procs 2>/dev/null \
      | xargs -r cat 2>/dev/null | sort -u | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.5
  for i in $(seq "$NODES"); do
    for d in /sys/fs/cgroup/*/"herd-demo-$i" /sys/fs/cgroup/"herd-demo-$i"; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  ip netns del "$NET" 2>/dev/null || true
  "$HERD" --root-dir "$(root 1)" image unmount demo 2>/dev/null || true
  [ -z "${HERD_DEMO_DIR:-}" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

echo "== three nodes: network namespaces herd-demo-1..3 on a bridge in $NET (10.250.77.0/24)"
ip netns add "$NET"
ip -n "$NET" link add br0 type bridge
ip -n "$NET" link set br0 up
for i in $(seq "$NODES"); do
  ip netns add "$(ns "$i")"
  ip -n "$(ns "$i")" link set lo up
  ip link add "hdemo$i" type veth peer name eth0 netns "$(ns "$i")"
  ip link set "hdemo$i" netns "$NET"
  ip -n "$NET" link set "hdemo$i" master br0 up
  ip -n "$(ns "$i")" addr add "10.250.77.$i/24" dev eth0
  ip -n "$(ns "$i")" link set eth0 up
  mkdir -p "$WORK/node$i"
done

echo "== building test images"
target/release/herd-testimages "$WORK/images"

echo "== serving the image from a registry on every node's 127.0.0.1 (one storage dir)"
PORT=5000
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: 127.0.0.1:$PORT
YML
for i in $(seq "$NODES"); do
  nsenter --net="/run/netns/$(ns "$i")" docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log$i" 2>&1 &
  REG_PIDS+=($!)
  for _ in $(seq 100); do in_node "$i" curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
done
in_node 1 skopeo --insecure-policy copy -q "oci:$WORK/images/busybox-oci:latest" "docker://127.0.0.1:$PORT/demo/busybox:latest" --dest-tls-verify=false
REG=127.0.0.1:$PORT

echo "== images on node 1: pull, and import an OCI layout, an OCI archive, a docker-archive"
in_node 1 "$HERD" --root-dir "$(root 1)" image pull --plain-http "$REG/demo/busybox:latest"
h 1 image import "$WORK/images/busybox-oci"
h 1 image import "$WORK/images/busybox.oci.tar"
h 1 image import "$WORK/images/busybox.docker.tar"
h 1 image ls
echo "== a container rootfs (overlay of the image's layers) and a command in it"
h 1 image mount "$REG/demo/busybox:latest" "$WORK/rootfs" --id demo
chroot "$WORK/rootfs" /bin/sh -c 'cat /var/www/index.html; ls /etc'
echo "== removing an image in use is refused:"
h 1 image rm "$REG/demo/busybox:latest" || true
h 1 image unmount demo

echo "== node 1: herd agent --init (a new cluster: CA, cluster key, join token)"
start_agent 1 --init
wait_api 1
TOKEN=$(cat "$(root 1)/cluster/token")
echo "   join token in $(root 1)/cluster/token"
echo "== nodes 2 and 3: herd agent --join 10.250.77.1 --token ..."
start_agent 2 --join 10.250.77.1 --token "$TOKEN"
start_agent 3 --join 10.250.77.1 --token "$TOKEN"
wait_api 2
wait_api 3
h 1 get nodes -o wide
cluster 1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("raft leader:", d["leader"], " voters:", ", ".join(d["voters"]), " gossip members:", ", ".join(m["name"]+"="+m["state"] for m in d["members"]))'

echo "== herd apply -f (pods are scheduled by the leader; each node pulls from its registry)"
sed -e "s#REGISTRY#$REG#" -e "s#WEB_IP#pending#" scripts/demo-workload.yaml \
  | awk 'BEGIN{RS="---\n"; ORS="---\n"} !/name: once/' > "$WORK/web.yaml"
sed -e "s#REGISTRY#$REG#" scripts/demo-deployment.yaml > "$WORK/hello.yaml"
h 2 apply -f "$WORK/web.yaml" -f "$WORK/hello.yaml"
ready() { h 1 get pods -o json | python3 -c '
import json,sys
items=json.load(sys.stdin)["items"]
ok=[p for p in items if p["status"].get("phase")=="Running" and all(c.get("ready") for c in p["status"].get("containerStatuses",[]))]
print(len(ok))'; }
for _ in $(seq 600); do [ "$(ready)" -ge 7 ] && break; sleep 0.1; done
h 1 get pods -o wide
WEB_NODE=$(h 1 get pod web -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["nodeName"].split("-")[1])')
WEB_IP=$(h 1 get pod web -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])')
echo "== from node 1, the web pod on node $WEB_NODE: http://$WEB_IP:8080/ (routes between nodes)"
in_node 1 sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | busybox nc -w 2 $WEB_IP 8080 | tail -1"
echo
SVC_IP=$(h 1 get svc hello -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["clusterIP"])')
echo "== the Service hello ($SVC_IP:80) from every node (nftables, load-balanced)"
for i in $(seq "$NODES"); do
  for _ in 1 2; do
    printf 'node %s -> ' "$i"
    in_node "$i" sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 2 $SVC_IP 80 | tail -1"
  done
done
echo "== a run-once pod that calls the web pod"
sed -e "s#REGISTRY#$REG#" -e "s#WEB_IP#$WEB_IP#" scripts/demo-workload.yaml \
  | awk 'BEGIN{RS="---\n"; ORS="---\n"} /name: once/' > "$WORK/once.yaml"
h 1 apply -f "$WORK/once.yaml"
for _ in $(seq 300); do
  [ "$(h 1 get pod once -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"].get("phase"))')" = Succeeded ] && break
  sleep 0.1
done
ONCE_NODE=$(h 1 get pod once -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["nodeName"].split("-")[1])')
echo "== herd logs once (asked of node $ONCE_NODE, which runs it)"
h "$ONCE_NODE" logs once
echo "== herd exec web -- (env from a fieldRef and a secret, the secret volume)"
h "$WEB_NODE" exec web -c httpd -- sh -c 'echo "POD_IP=$POD_IP TOKEN=$TOKEN"; cat /run/token/token; echo; grep " /run/token " /proc/mounts'
echo "== herd describe pod web"
h 1 describe pod web

echo "== the real kubectl: a kubeconfig from herd kubeconfig (node 1), kubectl talks to node 3's HTTPS API"
h 1 kubeconfig --server-url https://10.250.77.3:6443 > "$WORK/kubeconfig"
kc() { in_node 1 kubectl --kubeconfig "$WORK/kubeconfig" --cache-dir "$WORK/kube-cache" "$@"; }
kc get nodes -o wide
kc get deploy,rs,svc,pods -o wide
kc scale deployment hello --replicas=4
kc rollout status deployment hello --timeout=60s
echo "== kubectl logs and exec reach the pod's node through node 3"
kc logs once
kc exec web -c httpd -- sh -c 'echo "hello from $(hostname) on $POD_IP"'
echo "== no credentials: 401"
in_node 1 curl -sk https://10.250.77.3:6443/api/v1/pods; echo
kc scale deployment hello --replicas=6

LEADER=$(leader 1)
L=${LEADER#node-}
OTHER=$(( L % NODES + 1 ))
echo "== SIGKILL the Raft leader's agent ($LEADER): its pods keep running, the others elect a new leader"
T0=$(date +%s.%N)
kill -9 "${AGENT_PIDS[$L]}"; wait "${AGENT_PIDS[$L]}" 2>/dev/null || true
AGENT_PIDS[$L]=
for _ in $(seq 200); do NEW=$(leader "$OTHER"); [ -n "$NEW" ] && [ "$NEW" != "$LEADER" ] && break; sleep 0.05; done
echo "   new leader: $NEW after $(python3 -c "import time; print(round(time.time()-$T0, 2))") s"
echo "== gossip declares $LEADER down, the leader marks it NotReady and moves its pods"
for _ in $(seq 300); do
  LEFT=$(h "$OTHER" get pods -o json | python3 -c "
import json,sys
items=json.load(sys.stdin)['items']
print(sum(1 for p in items if p['metadata'].get('labels',{}).get('app')=='hello' and p['spec'].get('nodeName')!='$LEADER' and p['status'].get('phase')=='Running'))")
  [ "$LEFT" -ge 6 ] && break
  sleep 0.1
done
echo "   6 hello pods Running on the survivors after $(python3 -c "import time; print(round(time.time()-$T0, 2))") s"
h "$OTHER" get nodes
h "$OTHER" get pods -o wide -l app=hello
echo "== $LEADER restarts with the same command: it rejoins and stops the pods that moved away"
start_agent "$L"
wait_api "$L"
for _ in $(seq 100); do [ "$(h "$L" get nodes 2>/dev/null | grep -c ' Ready')" -ge 3 ] && break; sleep 0.1; done
h "$L" get nodes
echo "== herd delete -f"
# (the finished pod "once" is gone already if it ran on the killed node:
# the node lifecycle controller evicted it)
h 1 delete -f "$WORK/web.yaml" -f "$WORK/once.yaml" -f "$WORK/hello.yaml" --grace-period 1 --ignore-not-found
for _ in $(seq 100); do [ "$(h 1 get pods 2>/dev/null | wc -l)" -le 1 ] && break; sleep 0.1; done
h 1 get pods
echo "demo finished"
