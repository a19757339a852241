#!/usr/bin/env bash
# Install what the test suite needs from Debian (PostgreSQL server binaries, chromium), only when absent.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

have_postgresql() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && return 0
    done
    return 1
}

have_chromium() {
    [ -x /usr/bin/chromium ]
}

missing=()
have_postgresql || missing+=(postgresql)
have_chromium || missing+=(chromium)
[ "${#missing[@]}" -eq 0 ] && exit 0

"$here/apt_install.sh" "${missing[@]}"

# Check the result, not apt's exit status alone.
have_postgresql || { echo "error: postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin" >&2; exit 1; }
have_chromium || { echo "error: chromium installed but /usr/bin/chromium is missing" >&2; exit 1; }
