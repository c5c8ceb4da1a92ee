#!/usr/bin/env bash
# Usage: apt-install.sh "WHAT SKIPS WITHOUT THEM" [PACKAGE...]
# Install the named Debian packages (those a caller found missing) with apt-get, as root
# or through passwordless sudo. Best effort: without root, apt or network it warns that
# WHAT SKIPS WITHOUT THEM and exits 0, so a failure here never fails CI.
skips=$1
shift
[ $# -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
if command -v apt-get >/dev/null; then
    echo "installing $*" >&2
    { "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -qq -y --no-install-recommends \
            "$@"; } >/dev/null 2>&1 ||
        echo "warning: could not install $*; $skips" >&2
else
    echo "warning: no apt-get; $* missing, $skips" >&2
fi
exit 0
