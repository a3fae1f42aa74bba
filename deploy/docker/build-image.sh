#!/usr/bin/env bash
# Builds the one Tickertape image (tag $TT_IMAGE, default tickertape:latest): `make image`.
# Engine: docker where a Docker engine answers, else podman (with deploy/podman/containers.conf).
# Base: $TT_PYTHON_IMAGE if set; else python:3.11-slim if present or pullable; else (no registry
# reachable, podman) a local Debian bookworm base built by deploy/podman/build-base.sh, once.
# Layers are cached by the engine: a second build with unchanged sources takes seconds.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${TT_IMAGE:-tickertape:latest}"
slim="docker.io/library/python:3.11-slim-bookworm"
local_base="localhost/tickertape-base:bookworm"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/deploy/podman/containers.conf}"

if [ -n "${TT_ENGINE:-}" ]; then
  engine="$TT_ENGINE"
elif command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null 2>&1; then
  engine=podman
else
  echo "neither a Docker engine nor podman is available: run \`make system-deps\`" >&2
  exit 1
fi

has_image() { "$engine" image inspect "$1" >/dev/null 2>&1; }
base="${TT_PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
  if has_image "$slim" || timeout 60 "$engine" pull -q "$slim" >/dev/null 2>&1; then
    base="$slim"
  elif [ "$engine" = podman ]; then
    echo "no registry reachable for $slim: using the local Debian base $local_base" >&2
    bash "$root/deploy/podman/build-base.sh" "$local_base"
    base="$local_base"
  else
    echo "cannot pull $slim: set TT_PYTHON_IMAGE to a local Python 3.11 base image" >&2
    exit 1
  fi
fi

args=(build -f deploy/docker/Dockerfile -t "$tag" --build-arg "PYTHON_IMAGE=$base")
if [ "$engine" = podman ]; then
  # Host networking (no CNI needed) and this host's CA bundle for pip and uv inside the build.
  args+=(--network host --ignorefile deploy/docker/Dockerfile.dockerignore --layers)
  ca=/etc/ssl/certs/ca-certificates.crt
  if [ -f "$ca" ]; then
    args+=(--volume "$ca:/run/host-ca.crt:ro" --build-arg CA_CERT=/run/host-ca.crt)
  fi
fi
cd "$root"
"$engine" "${args[@]}" ${TT_IMAGE_QUIET:+--quiet} . >&2
echo "$tag built with $engine from $base" >&2
