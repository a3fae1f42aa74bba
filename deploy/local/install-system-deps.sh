#!/usr/bin/env bash
# System packages the tests need beyond Python: Debian's Chromium for the browser tests.
# Idempotent; installs only what is missing. Set TT_SKIP_SYSTEM_DEPS=1 to skip.
set -euo pipefail
[ "${TT_SKIP_SYSTEM_DEPS:-0}" = "1" ] && exit 0
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing Debian's chromium for the browser tests" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium not found and cannot be installed here: browser tests will be skipped" >&2
fi
