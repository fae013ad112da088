#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, made from Debian's packages with debootstrap and
# stored in buildah's image storage as localhost/cascadeflow-base:bookworm, for machines that cannot
# pull python:3.11-slim from Docker Hub. Builds nothing when the image is already there.
#
#   bash deploy/base-image.sh            # then: buildah bud --build-arg BASE_IMAGE=localhost/cascadeflow-base:bookworm ...
#
# Needs buildah and debootstrap (`apt-get install buildah debootstrap`; installed here when run as root
# on Debian/Ubuntu and missing) and root. DEBIAN_MIRROR picks the mirror.
set -euo pipefail

IMAGE="${CASCADEFLOW_BASE_IMAGE:-localhost/cascadeflow-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null
    else
        echo "base-image.sh: needs buildah and debootstrap (apt-get install buildah debootstrap)" >&2
        exit 1
    fi
fi

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: present"
    exit 0
fi

started=$(date +%s)
rootfs="$(mktemp -d /var/tmp/cascadeflow-rootfs.XXXXXX)"
container=""
cleanup() {
    [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
    rm -rf "$rootfs"
}
trap cleanup EXIT

# minbase: essential packages and apt only; python3-venv brings ensurepip (pip for the venv),
# ca-certificates lets pip and the gateway verify TLS.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null
# No package caches, manuals or translations in the image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*

container="$(buildah from scratch)"
mountpoint="$(buildah mount "$container")"
cp -a "$rootfs"/. "$mountpoint"/   # cp -a keeps owners, modes and links (buildah copy would chown to root)
buildah umount "$container" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian bookworm (debootstrap minbase) with python3" \
    "$container"
buildah commit --quiet --rm "$container" "$IMAGE" >/dev/null
container=""
echo "base image $IMAGE: built in $(( $(date +%s) - started )) s"
