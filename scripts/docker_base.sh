#!/usr/bin/env bash
# Make the base image where no image registry is reachable: a minimal Debian bookworm root
# filesystem from debootstrap (it uses this machine's own apt sources), imported with
# `docker import`. Where a registry is reachable you need none of this: docker/Dockerfile's
# default `FROM debian:bookworm-slim` pulls the ordinary image.
#
#   bash scripts/docker_base.sh [TAG]       # default resonfl-base:bookworm; skips if present
#   BASE_REBUILD=1 bash scripts/docker_base.sh
#
# The image is Debian bookworm (Python 3.11 is its python3) with the packages both build
# stages need preinstalled, so a build spends no time in apt.
set -euo pipefail
TAG=${1:-resonfl-base:bookworm}
if [ "${BASE_REBUILD:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG already present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit} /^deb /{print $2; exit}' \
  /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /var/tmp/resonfl-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
INCLUDE=ca-certificates,python3,python3-venv,bubblewrap,util-linux,curl,tini
echo "debootstrap bookworm from $MIRROR into $ROOTFS (minbase + $INCLUDE)"
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$ROOTFS" "$MIRROR" \
  >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
cp /etc/apt/sources.list.d/debian.sources "$ROOTFS/etc/apt/sources.list.d/" 2>/dev/null || true
# Image-size hygiene, as the official slim images do.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["bash"]' - "$TAG"
docker image inspect "$TAG" --format 'base image {{.RepoTags}}: {{.Size}} bytes'
