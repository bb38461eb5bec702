#!/usr/bin/env bash
# Installs what the browser tests need that pip does not: Debian's Chromium (Playwright drives
# it; no browser is downloaded) and axe-core from the npm registry, pinned in package-lock.json.
# Safe to run again: it does nothing when both are already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${IDP_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "tests/browser/setup.sh: $chromium is missing and installing it needs root." >&2
        echo "Run 'sudo apt-get install chromium' once (or run make test as root), then again." >&2
        exit 1
    fi
    echo "Installing Chromium from the Debian archive (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq chromium >/dev/null
    if [ ! -x "$chromium" ]; then
        echo "tests/browser/setup.sh: apt-get installed chromium, but $chromium is missing." >&2
        exit 1
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "tests/browser/setup.sh: npm is needed to install axe-core (Node.js 18 or later)." >&2
    exit 1
fi
axe="$here/node_modules/axe-core/axe.min.js"
if [ ! -f "$axe" ] || [ "$here/package-lock.json" -nt "$axe" ]; then
    echo "Installing axe-core from the npm registry ..."
    npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
    touch "$axe"
fi
