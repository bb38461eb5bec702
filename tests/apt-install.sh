#!/usr/bin/env bash
# apt-install.sh WHY PACKAGE...: install Debian packages for the tests with apt-get, as root or
# with sudo when it needs no password; otherwise say what to run and fail. Packaged services
# are not started by the install (the tests run their own servers).
set -euo pipefail

why="$1"
shift
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "$why: $* missing and installing needs root." >&2
    echo "Run 'sudo apt-get install $*' once (or run make test as root), then again." >&2
    exit 1
fi
echo "Installing $* from the Debian archive (apt-get) ..."
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then "${as_root[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
