#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine: installs Debian's docker.io (and
# debootstrap, which docker/build.sh uses for the base image) when missing, and starts dockerd
# with the settings these machines need (vfs storage, no iptables, no default bridge: containers
# use --network host or none). Idempotent; prints nothing when the engine already answers.
# Usage: docker/engine.sh
set -euo pipefail
docker_cli=/usr/bin/docker   # Debian's client, matched to Debian's dockerd (its BuildKit)

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || [ ! -x "$docker_cli" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker/engine.sh: docker.io and debootstrap are missing; as root: apt-get install docker.io debootstrap" >&2
    exit 1
  fi
  echo "docker/engine.sh: installing docker.io and debootstrap with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Other installers (the tests') may hold the dpkg lock: wait for it.
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends docker.io debootstrap >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends docker.io debootstrap >/dev/null
  }
fi

if "$docker_cli" info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "docker/engine.sh: no Docker engine answers and only root can start dockerd" >&2
  exit 1
fi
log=${DOCKERD_LOG:-/var/log/hardy-dockerd.log}
echo "docker/engine.sh: starting dockerd (log: $log)" >&2
setsid dockerd --storage-driver=vfs --iptables=false --bridge=none >"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if "$docker_cli" info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "docker/engine.sh: dockerd did not answer within 30 s; its log:" >&2
tail -20 "$log" >&2
exit 1
