#!/usr/bin/env bash
# Installs what the browser tests need that pip does not: Debian's Chromium (Playwright drives
# it; no browser is downloaded) and axe-core from the npm registry, pinned in package-lock.json.
# Safe to run again: it does nothing when both are already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${IDP_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ]; then
    bash "$here/../apt-install.sh" tests/browser/setup.sh chromium
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
