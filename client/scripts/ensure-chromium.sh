#!/bin/sh
# Makes sure Debian's Chromium is installed for the browser tests (never a
# downloaded browser build). CHROMIUM_PATH overrides the location.
set -eu
path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$path" ]; then
  exit 0
fi
echo "installing Debian's chromium package for the browser tests …" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
[ -x "$path" ] || { echo "chromium is still missing at $path" >&2; exit 1; }
