#!/usr/bin/env bash
# A local Debian bookworm base image with Python 3.11, for hosts where no image registry is
# reachable (so python:3.11-slim cannot be pulled). mmdebstrap builds the root filesystem from
# Debian's packages and `podman import` makes it an image. Cached: does nothing if the tag exists.
#   usage: build-base.sh [TAG]        (default localhost/tickertape-base:bookworm)
set -euo pipefail
tag="${1:-localhost/tickertape-base:bookworm}"
podman image exists "$tag" && exit 0
mirror="${TT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)/rootfs.tar"
trap 'rm -rf "$(dirname "$rootfs")"' EXIT
echo "building base image $tag from Debian bookworm ($mirror)" >&2
# minbase + python3.11 and venv (ensurepip, for the build stage's uv) + CA certificates.
# Docs, man pages, locales and apt lists stay out: the runtime image is this plus the app venv.
# The merged-/usr hook instead of the usrmerge package, which would pull in Perl (~45 MB).
mmdebstrap --quiet --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3.11,python3.11-venv,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$rootfs" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb ${mirror%/debian}/debian-security bookworm-security main"
podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV=LANG=C.UTF-8' \
    --change 'CMD=["python3"]' \
    "$rootfs" "$tag" >/dev/null
