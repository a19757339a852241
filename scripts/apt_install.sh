#!/usr/bin/env bash
# Install Debian packages non-interactively; refresh the package lists only if the first try fails.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    echo "error: installing Debian packages ($*) needs root or sudo" >&2
    exit 1
fi

install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "installing Debian packages: $*" >&2
if install "$@" >"$log" 2>&1; then
    exit 0
fi
echo "apt-get install $* failed; running apt-get update and retrying" >&2
if ! "${as_root[@]}" apt-get update -qq >"$log" 2>&1 || ! install "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: could not install Debian packages: $*" >&2
    exit 1
fi
