#!/usr/bin/env bash
# The main job, as far as herd goes today: build herd, build the project's
# busybox test images, import them, serve one from a local registry on
# 127.0.0.1 and pull it, mount a container rootfs from it and run a command
# in it, then clean up. State lives in a temp dir (or $HERD_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p herd-agent -p herd-integration --bins
HERD=$PWD/target/release/herd
WORK=${HERD_DEMO_DIR:-$(mktemp -d /tmp/herd-demo.XXXXXX)}
ROOT=$WORK/root
REG_PID=
cleanup() {
  "$HERD" --root-dir "$ROOT" image unmount demo 2>/dev/null || true
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  [ -z "${HERD_DEMO_DIR:-}" ] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

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
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo --insecure-policy copy -q "oci:$WORK/images/busybox-oci:latest" "docker://127.0.0.1:$PORT/demo/busybox:latest" --dest-tls-verify=false

echo "== pulling"
"$HERD" --root-dir "$ROOT" image pull --plain-http "127.0.0.1:$PORT/demo/busybox:latest"

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
"$HERD" --root-dir "$ROOT" image prune --all
echo "demo finished"
