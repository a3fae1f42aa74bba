#!/usr/bin/env bash
# System packages the tests need beyond Python: Debian's Chromium for the browser tests, and
# Debian's redis-server and redis-sentinel for the Sentinel failover test (tests/chaos/test_sentinel.py).
# Idempotent; installs only what is missing. Set TT_SKIP_SYSTEM_DEPS=1 to skip.
set -euo pipefail
[ "${TT_SKIP_SYSTEM_DEPS:-0}" = "1" ] && exit 0
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
[ "${#missing[@]}" -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing Debian's ${missing[*]} for the browser and Sentinel tests" >&2
  apt-get update -qq >/dev/null
  # policy-rc.d exit 101: the packages' own services (redis on 6379, sentinel on 26379) are not
  # started; the tests start their servers on free ports.
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "${added:-0}" = "1" ]; then rm -f "$policy"; fi
else
  echo "${missing[*]} not found and cannot be installed here: the tests that need them are skipped" >&2
fi
