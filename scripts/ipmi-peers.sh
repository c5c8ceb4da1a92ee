#!/usr/bin/env bash
# Install the IPMI peers the integration tests and bench/fanout.py use, when missing:
# OpenIPMI's ipmi_sim (openipmi), ipmitool, and FreeIPMI's ipmipower (freeipmi-tools).
# Best effort: without them (no root, no apt, no network) the tests that need them skip
# with a reason, so a failure here never fails CI.
missing=()
command -v ipmi_sim >/dev/null || missing+=(openipmi)
command -v ipmitool >/dev/null || missing+=(ipmitool)
command -v ipmipower >/dev/null || missing+=(freeipmi-tools)
exec bash "$(dirname "$0")/apt-install.sh" "the tests that need them skip" "${missing[@]}"
