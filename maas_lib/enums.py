"""The state enums and limits every layer and front end shares, free of pydantic: the
values `maasctl` offers as choices (its `--help` imports this, not `maas_lib.models`).

`maas_lib.models` and `maas_lib.bmc.base` re-export them, so either name still works.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    POWER_ON = "power-on"
    POWER_OFF = "power-off"
    POWER_CYCLE = "power-cycle"
    REBOOT = "reboot"
    REIMAGE = "reimage"
    WIPE = "wipe"
    DECOMMISSION = "decommission"


#: Actions that boot an image and therefore may name one.
IMAGE_ACTIONS = frozenset({Action.REIMAGE, Action.WIPE})


class RequestState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"
    CANCELLED = "cancelled"


#: A request in one of these states holds (or may take) host leases.
IN_FLIGHT_REQUEST_STATES = frozenset({RequestState.ACCEPTED, RequestState.RUNNING})
TERMINAL_REQUEST_STATES = frozenset(set(RequestState) - IN_FLIGHT_REQUEST_STATES)


class HostTaskState(StrEnum):
    """The state of one host inside one request."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DROPPED = "dropped"
    CANCELLED = "cancelled"


class HostStatus(StrEnum):
    """The standing of a host in the fleet, independent of any request."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"
    DECOMMISSIONED = "decommissioned"


class BmcProtocol(StrEnum):
    IPMI = "ipmi"
    REDFISH = "redfish"


class OverlapMode(StrEnum):
    DROP = "drop"
    WAIT = "wait"


#: The largest host count a policy may give (batch size, thresholds, canary).
MAX_POLICY_HOSTS = 100_000
#: The longest pause between batches: a day.
MAX_PAUSE_S = 86_400.0


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"  # hard
    SOFT = "soft"  # ask the OS to shut down
    CYCLE = "cycle"  # off, confirmed off, on, confirmed on (see bmc/control.py)
    RESET = "reset"  # hard reset: the host reboots at once, power stays on


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"
