#!/usr/bin/env bash
# The main job: build herd and the project's busybox test images, serve one
# from a local registry on 127.0.0.1, import and pull images, then run a
# node (`herd agent`) with a sample workload (ConfigMap, Secret, a web pod
# with an init container, probes and volumes, and a run-once pod that talks
# to it), drive it with the CLI, and clean up. The node runs in its own
# network namespace (herd-demo) so the host's network is untouched. State
# lives in a temp dir (or $HERD_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p herd-agent -p herd-integration --bins
HERD=$PWD/target/release/herd
WORK=${HERD_DEMO_DIR:-$(mktemp -d /tmp/herd-demo.XXXXXX)}
ROOT=$WORK/root
REG_PID=
AGENT_PID=
NETNS=herd-demo
CG=herd-demo
cleanup() {
  if [ -n "$AGENT_PID" ]; then
    "$HERD" --root-dir "$ROOT" delete pods --all --grace-period 1 >/dev/null 2>&1 || true
    kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  fi
  ip netns del "$NETNS" 2>/dev/null || true
  for d in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  "$HERD" --root-dir "$ROOT" image unmount demo 2>/dev/null || true
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  [ -z "${HERD_DEMO_DIR:-}" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

echo "== the node's network namespace ($NETNS): the registry and the agent live there"
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
IN_NODE="nsenter --net=/run/netns/$NETNS"

echo "== building test images"
target/release/herd-testimages "$WORK/images"

echo "== serving the image from a local registry on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: 127.0.0.1:$PORT
YML
$IN_NODE docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do $IN_NODE curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
$IN_NODE skopeo --insecure-policy copy -q "oci:$WORK/images/busybox-oci:latest" "docker://127.0.0.1:$PORT/demo/busybox:latest" --dest-tls-verify=false

echo "== pulling"
$IN_NODE "$HERD" --root-dir "$ROOT" image pull --plain-http "127.0.0.1:$PORT/demo/busybox:latest"

echo "== importing: OCI layout, OCI archive, docker-archive"
"$HERD" --root-dir "$ROOT" image import "$WORK/images/busybox-oci"
"$HERD" --root-dir "$ROOT" image import "$WORK/images/busybox.oci.tar"
"$HERD" --root-dir "$ROOT" image import "$WORK/images/busybox.docker.tar"

"$HERD" --root-dir "$ROOT" image ls

echo "== a container rootfs (overlay of the image's layers) and a command in it"
"$HERD" --root-dir "$ROOT" image mount "127.0.0.1:$PORT/demo/busybox:latest" "$WORK/rootfs" --id demo
chroot "$WORK/rootfs" /bin/sh -c 'cat /var/www/index.html; ls /etc'
echo "== removing an image in use is refused:"
"$HERD" --root-dir "$ROOT" image rm "127.0.0.1:$PORT/demo/busybox:latest" || true
"$HERD" --root-dir "$ROOT" image unmount demo

echo "== a node: herd agent (in network namespace $NETNS)"
$IN_NODE "$HERD" --root-dir "$ROOT" agent --node-name demo \
  --run-dir "$WORK/run" --log-dir "$WORK/logs" --cgroup-name "$CG" \
  --manifests "$WORK/manifests" --listen none --pod-cidr 10.199.0.0/24 --bridge herddemo0 \
  >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do "$HERD" --root-dir "$ROOT" get pods >/dev/null 2>&1 && break; sleep 0.1; done

echo "== herd apply -f (the image is pulled from the registry: imagePullPolicy Always for :latest)"
sed -e "s#REGISTRY#127.0.0.1:$PORT#" -e "s#WEB_IP#pending#" scripts/demo-workload.yaml \
  | awk 'BEGIN{RS="---\n"; ORS="---\n"} !/name: once/' > "$WORK/web.yaml"
"$HERD" --root-dir "$ROOT" apply -f "$WORK/web.yaml"
for _ in $(seq 300); do
  [ "$("$HERD" --root-dir "$ROOT" get pod web -o json | python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print(all(c["ready"] for c in s.get("containerStatuses",[])) and s["phase"])')" = Running ] && break
  sleep 0.1
done
"$HERD" --root-dir "$ROOT" get pods -o wide
WEB_IP=$("$HERD" --root-dir "$ROOT" get pod web -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["podIP"])')
echo "== from the node, http://$WEB_IP:8080/"
$IN_NODE busybox wget -qO- "http://$WEB_IP:8080/index.html"
echo "== a run-once pod that calls the web pod"
sed -e "s#REGISTRY#127.0.0.1:$PORT#" -e "s#WEB_IP#$WEB_IP#" scripts/demo-workload.yaml \
  | awk 'BEGIN{RS="---\n"; ORS="---\n"} /name: once/' > "$WORK/once.yaml"
"$HERD" --root-dir "$ROOT" apply -f "$WORK/once.yaml"
for _ in $(seq 300); do
  [ "$("$HERD" --root-dir "$ROOT" get pod once -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"].get("phase"))')" = Succeeded ] && break
  sleep 0.1
done
"$HERD" --root-dir "$ROOT" get pods
echo "== herd logs once"
"$HERD" --root-dir "$ROOT" logs once
echo "== herd exec web -- (env from a fieldRef and a secret, the secret volume)"
"$HERD" --root-dir "$ROOT" exec web -c httpd -- sh -c 'echo "POD_IP=$POD_IP TOKEN=$TOKEN"; cat /run/token/token; echo; grep " /run/token " /proc/mounts'
echo "== herd describe pod web"
"$HERD" --root-dir "$ROOT" describe pod web
echo "== herd delete -f"
"$HERD" --root-dir "$ROOT" delete -f "$WORK/web.yaml" -f "$WORK/once.yaml" --grace-period 1
"$HERD" --root-dir "$ROOT" get pods
kill "$AGENT_PID" && wait "$AGENT_PID" 2>/dev/null || true
AGENT_PID=
"$HERD" --root-dir "$ROOT" image prune --all
echo "demo finished"
