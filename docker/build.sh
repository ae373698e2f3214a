#!/usr/bin/env bash
# Builds Hardy's runtime images offline: hardy:cpu and/or hardy:cuda, from the binary built on
# this machine (`cargo build --release`) and a Debian bookworm base made by debootstrap, with
# docker/Dockerfile's runtime stage (the same one the online build uses).
#   docker/build.sh [cpu] [cuda]       (default: cpu)
# Environment: HARDY_BIN (a prebuilt hardy binary with the `cuda` feature, on by default;
# default: build target/release/hardy; the tests pass the binary of their own build),
# HARDY_IMAGE (the repository name, default hardy), DEBIAN_MIRROR.
# Starts the Docker engine first (docker/engine.sh). The base is made once and kept as
# debian:bookworm-slim (so the Dockerfile's FROM resolves without a registry); an image of
# that name that is already there (a real one, pulled) is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
flavors=("$@")
[ ${#flavors[@]} -gt 0 ] || flavors=(cpu)
name=${HARDY_IMAGE:-hardy}
base=debian:bookworm-slim
docker=/usr/bin/docker
docker/engine.sh

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  rootfs=$(mktemp -d /tmp/hardy-base.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "docker/build.sh: making $base with debootstrap (minbase)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  # As Debian's own slim images: no package caches, indexes, documentation or translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
  chmod 0755 "$rootfs"   # mktemp made it 0700: it becomes the image's /
  tar -C "$rootfs" -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

bin=${HARDY_BIN:-}
if [ -z "$bin" ]; then
  # One binary for both images: the `cuda` feature (a default) only adds the CUDA provider's
  # registration (ONNX Runtime is loaded at run time), and it runs on CPU with the CPU library.
  cargo build --release --quiet --bin hardy
  bin=target/release/hardy
fi
for flavor in "${flavors[@]}"; do
  context=target/docker/$flavor
  docker/stage.sh "$flavor" "$bin" "$context"
  echo "docker/build.sh: building $name:$flavor" >&2
  DOCKER_BUILDKIT=1 "$docker" build --quiet --network none -f docker/Dockerfile \
    --build-arg FLAVOR="$flavor" --build-arg ARTIFACTS=prebuilt \
    -t "$name:$flavor" "$context" >/dev/null
  # vfs storage keeps full copies of everything: drop what the next run does not need.
  # The build cache (the context's copy) and the image this build replaced (now untagged).
  "$docker" builder prune -af >/dev/null
  "$docker" image prune -f >/dev/null
  rm -rf "$context"
  size=$("$docker" image inspect -f '{{.Size}}' "$name:$flavor")
  echo "docker/build.sh: $name:$flavor, $((size / 1000000)) MB" >&2
done
