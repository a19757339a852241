#!/usr/bin/env bash
# Install what the test suite needs from Debian (PostgreSQL server binaries, chromium, Java for
# PySpark), only when absent.
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

# PySpark starts a JVM: Spark 4 needs Java 17 or later, from JAVA_HOME or on PATH.
have_java() {
    if [ -n "${JAVA_HOME:-}" ]; then
        [ -x "$JAVA_HOME/bin/java" ]
    else
        command -v java >/dev/null 2>&1
    fi
}

missing=()
have_postgresql || missing+=(postgresql)
have_chromium || missing+=(chromium)
have_java || missing+=(openjdk-17-jre-headless)
[ "${#missing[@]}" -eq 0 ] && exit 0

# Slim Debian images lack the man folder that the JRE's post-install step links into.
if ! have_java && [ ! -d /usr/share/man/man1 ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /usr/share/man/man1
fi

"$here/apt_install.sh" "${missing[@]}"

# Check the result, not apt's exit status alone.
have_postgresql || { echo "error: postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin" >&2; exit 1; }
have_chromium || { echo "error: chromium installed but /usr/bin/chromium is missing" >&2; exit 1; }
have_java || { echo "error: openjdk-17-jre-headless installed but no java on PATH (or in JAVA_HOME)" >&2; exit 1; }
