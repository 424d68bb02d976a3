#!/usr/bin/env bash
# Installs the system packages herd's build, tests, demo and benchmarks use.
# Idempotent: installs only what is missing. Debian/Ubuntu (apt) only.
set -euo pipefail

# package -> a file it provides (checked before installing)
declare -A PKGS=(
  [busybox-static]=/bin/busybox        # base of the project's test images
  [docker-registry]=/usr/bin/docker-registry  # local OCI registry for pull tests
  [apache2-utils]=/usr/bin/htpasswd    # bcrypt htpasswd for registry basic auth
  [skopeo]=/usr/bin/skopeo             # independent OCI implementation: test oracle and benchmark baseline
  [runc]=/usr/sbin/runc                # OCI runtime
  [containernetworking-plugins]=/usr/lib/cni/bridge  # reference CNI plugins: chaining tests, benchmark baseline
  [nftables]=/usr/sbin/nft             # masquerade / Service rules
  [iptables]=/usr/sbin/iptables        # used by the reference portmap plugin (chaining test)
  [iproute2]=/usr/sbin/ip              # tests only: independent view of links and routes
  [hyperfine]=/usr/bin/hyperfine       # benchmarks
  [etcd-server]=/usr/bin/etcd          # API benchmark baseline (3-member cluster)
  [etcd-client]=/usr/bin/etcdctl       # API benchmark baseline (process per op); etcd datastore tests
  [protobuf-compiler]=/usr/bin/protoc  # etcd-client's build script compiles etcd's protos
  [containerd]=/usr/bin/containerd     # alternative container backend (--runtime containerd) and its tests; ships ctr
  [podman]=/usr/bin/podman             # another runtime driving herd-cni (CNI interop test)
  [tar]=/bin/tar
  [curl]=/usr/bin/curl                 # readiness probe in the demo
  [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
)

missing=()
for pkg in "${!PKGS[@]}"; do
  [ -e "${PKGS[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
