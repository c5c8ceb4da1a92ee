#!/usr/bin/env bash
# Install the IPMI peers the integration tests and bench/fanout.py use, when missing:
# OpenIPMI's ipmi_sim (openipmi), ipmitool, and FreeIPMI's ipmipower (freeipmi-tools).
# Best effort: without them (no root, no apt, no network) the tests that need them skip
# with a reason, so a failure here never fails CI.
missing=()
command -v ipmi_sim >/dev/null || missing+=(openipmi)
command -v ipmitool >/dev/null || missing+=(ipmitool)
command -v ipmipower >/dev/null || missing+=(freeipmi-tools)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
if command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    { "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -qq -y --no-install-recommends \
            "${missing[@]}"; } >/dev/null 2>&1 ||
        echo "warning: could not install ${missing[*]}; the tests that need them skip" >&2
else
    echo "warning: no apt-get; ${missing[*]} missing, the tests that need them skip" >&2
fi
exit 0
