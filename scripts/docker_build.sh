#!/usr/bin/env bash
# Build the ResonFL image on this machine class: start dockerd if needed, make the base image
# (debootstrap + docker import: no registry here), put this machine's CPU torch wheel in the
# build context, build with host networking (pip reaches the package index as the host does).
#
#   bash scripts/docker_build.sh [TAG]            # default resonfl:latest
#   TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash scripts/docker_build.sh resonfl:cuda
#
# Where a registry is reachable, plain `docker build -f docker/Dockerfile .` does the same.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-resonfl:latest}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
bash scripts/docker_daemon.sh
BASE=${BASE_IMAGE:-resonfl-base:bookworm}
[ "$BASE" = resonfl-base:bookworm ] && bash scripts/docker_base.sh "$BASE"
if [ -z "${TORCH_INDEX:-}" ]; then
  # The CPU wheel pip here installs from disk: the find-links folders of pip's config.
  links=$( (pip config get global.find-links 2>/dev/null; echo "${PIP_FIND_LINKS:-}") | tr ' ' '\n')
  wheel=$(for d in $links; do ls "$d"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl 2>/dev/null || true; done | head -1)
  if [ -n "$wheel" ] && [ ! -f "docker/wheels/$(basename "$wheel")" ]; then
    rm -f docker/wheels/torch-*.whl
    cp "$wheel" docker/wheels/
  fi
  ls docker/wheels/torch-*.whl >/dev/null 2>&1 || echo "no local torch wheel: the build fetches the CPU torch from its index"
fi
# pip's CA bundle here, for the build stage's pip (a network that inspects TLS needs it).
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
mkdir -p docker/certs
if [ -n "$cert" ] && [ -f "$cert" ]; then cp "$cert" docker/certs/ca-bundle.crt; else rm -f docker/certs/ca-bundle.crt; fi
start=$(date +%s)
DOCKER_BUILDKIT=0 docker build --network host -f docker/Dockerfile -t "$TAG" \
  --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
  --build-arg TORCH_INDEX="${TORCH_INDEX:-}" .
echo "built $TAG in $(( $(date +%s) - start )) s; size $(docker image inspect "$TAG" --format '{{.Size}}') bytes"
