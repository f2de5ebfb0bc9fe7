#!/usr/bin/env bash
# Headless Chromium for the real-browser tests (tests/browser.py), from Debian's archive and only where
# that is ours to do: as root on Debian. Elsewhere it only says so; the tests then skip, or fail under
# CI=true, and name what to install. Quiet and idempotent: apt-get runs only when something is missing.
set -euo pipefail

have_chromium() {
  [ -n "${EE_CHROMIUM:-}" ] && command -v "$EE_CHROMIUM" >/dev/null 2>&1 && return 0
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$name" >/dev/null 2>&1 && return 0
  done
  return 1
}

# Without a single font Chromium draws no text at all; Debian's chromium pulls one in through
# fontconfig-config, so this only acts on a system that had it removed.
have_fonts() {
  [ -n "$(find /usr/share/fonts /usr/local/share/fonts -name '*.[ot]tf' -print -quit 2>/dev/null)" ]
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

missing=()
have_chromium || missing+=(chromium)
have_fonts || missing+=(fonts-dejavu-core)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ ! -f /etc/debian_version ] || [ "$(id -u)" != 0 ]; then
  echo "note: the browser tests need ${missing[*]}; install it (Debian: apt-get install chromium)" \
    "or set EE_CHROMIUM; without it they skip" >&2
  exit 0
fi
apt_install "${missing[@]}" || {
  echo "warning: apt-get could not install ${missing[*]}: the browser tests will skip (fail under CI=true)" >&2
}
