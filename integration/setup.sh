#!/usr/bin/env bash
# Installs what the integration tests' third-party peers need on a Debian machine:
#   - Node.js and npm (Debian packages) when `node`/`npm` are missing,
#   - the npm packages pinned in package-lock.json (`npm ci`, into integration/node_modules),
#   - Chromium (Debian's `chromium`, at /usr/bin/chromium) and a font when missing,
#   - Autobahn|Python (Debian's `python3-autobahn`) for the Autobahn stand-in.
# Safe to run twice and non-interactively (CI). Browsers are never downloaded
# through npm; only Debian's chromium is used. Root is needed for apt-get.
set -euo pipefail

cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup.sh: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install -y --no-install-recommends $*"
  $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

# 1. Node.js and npm.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
else
  say "node $(node --version) and npm $(npm --version 2>/dev/null) already installed"
fi

# 2. The npm dependencies, exactly as locked. Skipped when node_modules already
#    matches the lockfile (npm writes node_modules/.package-lock.json on install).
if [ -f node_modules/.package-lock.json ] && [ -d node_modules/ws ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  say "npm dependencies already installed (node_modules is newer than package-lock.json)"
else
  say "npm ci (integration/node_modules from package-lock.json)"
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

# 3. Chromium for browser_test.go, from Debian, plus a font so pages render text.
pkgs=()
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
dpkg -s fonts-liberation >/dev/null 2>&1 || dpkg -s fonts-dejavu-core >/dev/null 2>&1 || pkgs+=(fonts-liberation)
if [ "${#pkgs[@]}" -gt 0 ]; then
  apt_install "${pkgs[@]}"
else
  say "chromium and fonts already installed"
fi
say "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo 'not runnable')"

# 4. Autobahn|Python on Twisted, from Debian, for the stand-in fuzzing server of
#    integration/autobahn/fakesuite (the permessage-deflate cases 12.* and 13.*).
if /usr/bin/python3 -c 'import autobahn.twisted.websocket' >/dev/null 2>&1; then
  say "python3-autobahn already installed"
else
  apt_install python3-autobahn
fi
say "done"
