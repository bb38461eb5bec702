#!/usr/bin/env bash
# Installs the servers the storage tests run against when they are missing: PostgreSQL and
# Redis from the Debian archive (apt-get). The tests start and stop their own instances, as an
# unprivileged user in temporary directories on loopback ports; the packaged services are not
# started. Safe to run again: it does nothing when both are already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then echo "$dir"; return 0; fi
    done
    return 1
}

wanted=()
pg_bin >/dev/null || wanted+=(postgresql)
command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
[ ${#wanted[@]} -eq 0 ] && exit 0

bash "$here/../apt-install.sh" tests/services/setup.sh "${wanted[@]}"
pg_bin >/dev/null || { echo "tests/services/setup.sh: PostgreSQL binaries not found" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "tests/services/setup.sh: no redis-server" >&2; exit 1; }
