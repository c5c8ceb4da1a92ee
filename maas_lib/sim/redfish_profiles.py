"""Redfish services that behave as particular BMCs do: the profiles, and the machines behind.

Written from the Redfish specification (DSP0266) and DMTF's schemas (ServiceRoot,
ComputerSystem, ActionInfo, SessionService, Task, VirtualMedia); the HTTP side is
`redfish_profile_server.py`. A `Profile` picks behaviours one by one (PowerState absent, slow
answers, session-only auth, 400 on wrong-state resets, 202 + task monitors, Retry-After,
If-Match required, …); `PROFILES` names the combinations the BMCs in issue 12 showed, and
`BEHAVIOURS` single behaviours on the plain service, to try one at a time.

Everything that reaches the service is kept in `RedfishService.record` so tests can assert
on what the BMC really received: requests, resets, sessions still open.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

#: The DMTF mockups' boot override targets (public-rackmount1).
DMTF_BOOT_TARGETS = (
    "None",
    "Pxe",
    "Cd",
    "Usb",
    "Hdd",
    "BiosSetup",
    "Utilities",
    "Diags",
    "SDCard",
    "UefiTarget",
)
DMTF_RESET_TYPES = (
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "Nmi",
    "ForceOn",
    "PushPowerButton",
)


@dataclass(frozen=True)
class Profile:
    """How one simulated Redfish service behaves."""

    name: str = "custom"
    systems: tuple[str, ...] = ("1",)
    #: "real" reports the machine's power; anything else is what PowerState always says:
    #: "absent" leaves the property out, "null" sends null, other strings are sent as is.
    power_state: str = "real"
    #: Report PoweringOn/PoweringOff while a power change is under way.
    transitional: bool = False
    power_delay: float = 0.2
    #: Seconds added before every answer; `hang` never answers at all.
    latency: float = 0.0
    hang: bool = False
    basic_auth: bool = True
    sessions: bool = True
    session_limit: int | None = None
    #: Resets that do not fit the current state are refused with 400 (else a no-op 204).
    wrong_state_400: bool = False
    wrong_state_message: str = "Base.1.8.ActionNotSupported"
    reset_types: tuple[str, ...] = DMTF_RESET_TYPES
    #: Reset types listed in a ResetActionInfo resource rather than inline.
    reset_action_info: bool = False
    #: Resets and virtual media answered 202 with a task monitor, done after task_time.
    tasks: bool = False
    task_time: float = 0.5
    task_failure: str | None = None
    #: The first `busy` requests to a system resource or action get busy_status +
    #: Retry-After (None: no header).
    busy: int = 0
    busy_status: int = 503
    retry_after: str | None = "1"
    boot: bool = True
    boot_targets: tuple[str, ...] | None = DMTF_BOOT_TARGETS
    #: PATCH needs If-Match (428 without, 412 when stale); ETag in the header or the body.
    if_match: bool = False
    etag_header: bool = True
    weak_etag: bool = False
    #: The resource changes once between a client's GET and its first PATCH (a sensor
    #: update, a power transition): that PATCH's If-Match is stale.
    etag_stale_once: bool = False
    virtual_media: bool = True
    #: Another service's base URL the Reset action's target points at (a hostile or
    #: misconfigured BMC); a client must not carry its credentials there.
    reset_target_base: str | None = None

    def but(self, **changes: Any) -> Profile:
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    # DMTF's reference system (public-rackmount1 mockup): the plain, by-the-book service.
    "dmtf": Profile(name="dmtf", systems=("437XR1138R2",)),
    # HPE iLO 5: few session slots; a reset that does not fit the state is a 400
    # (iLO.2.x InvalidOperationForSystemState); weak ETags.
    "ilo5": Profile(
        name="ilo5",
        session_limit=4,
        wrong_state_400=True,
        wrong_state_message="iLO.2.14.InvalidOperationForSystemState",
        reset_types=(
            "On",
            "ForceOff",
            "GracefulShutdown",
            "ForceRestart",
            "Nmi",
            "PushPowerButton",
            "GracefulRestart",
        ),
        boot_targets=(
            "None",
            "Cd",
            "Hdd",
            "Usb",
            "SDCard",
            "Utilities",
            "Diags",
            "BiosSetup",
            "Pxe",
            "UefiShell",
            "UefiHttp",
            "UefiTarget",
        ),
        weak_etag=True,
    ),
    # Stock OpenBMC (bmcweb): system "system", reset types in ResetActionInfo, power
    # transitions reported as PoweringOn/PoweringOff, If-Match checked on PATCH.
    "openbmc": Profile(
        name="openbmc",
        systems=("system",),
        transitional=True,
        reset_action_info=True,
        reset_types=(
            "ForceOff",
            "ForceOn",
            "ForceRestart",
            "GracefulRestart",
            "GracefulShutdown",
            "PowerCycle",
            "On",
        ),
        boot_targets=("None", "Pxe", "Hdd", "Cd", "Diags", "BiosSetup", "Usb"),
        if_match=True,
    ),
    # A two-node HPE Cray EX blade controller: two systems behind one BMC, no Boot object,
    # no GracefulShutdown, resets run as tasks, sessions only.
    "cray-ex": Profile(
        name="cray-ex",
        systems=("Node0", "Node1"),
        basic_auth=False,
        reset_action_info=True,
        reset_types=("Off", "On", "ForceOff", "ForceRestart"),
        tasks=True,
        boot=False,
        virtual_media=False,
    ),
}


#: One behaviour each on the plain service (system "1"), for `maasctl sim up --redfish-profile`
#: and the profile server: what a client must survive, one quirk at a time.
BEHAVIOURS: dict[str, Profile] = {
    "power-absent": Profile(name="power-absent", power_state="absent"),
    "power-null": Profile(name="power-null", power_state="null"),
    "power-paused": Profile(name="power-paused", power_state="Paused"),
    "slow": Profile(name="slow", latency=2.2),
    "busy": Profile(name="busy", busy=2),
    "sessions-only": Profile(name="sessions-only", basic_auth=False),
    "tasks": Profile(name="tasks", tasks=True),
    "if-match": Profile(name="if-match", if_match=True),
}


def profile_named(name: str) -> Profile:
    """A vendor profile or a single behaviour by name (KeyError if neither)."""
    return PROFILES[name] if name in PROFILES else BEHAVIOURS[name]


#: Every name `profile_named` knows: vendors first, then behaviours.
PROFILE_NAMES: tuple[str, ...] = (*PROFILES, *BEHAVIOURS)


@dataclass
class SimSystem:
    """One machine: power that changes after a delay, a boot override, a CD drive."""

    ident: str
    delay: float
    power: str = "Off"
    pending: tuple[str, float] | None = None
    restarts: int = 0
    boot_target: str = "None"
    boot_enabled: str = "Disabled"
    generation: int = 1
    media_image: str | None = None

    def settle(self) -> None:
        if self.pending and time.monotonic() >= self.pending[1]:
            self.power, self.pending = self.pending[0], None
            self.generation += 1
            if self.power == "On" and self.boot_enabled == "Once":
                self.boot_target, self.boot_enabled = "None", "Disabled"

    def heading(self) -> str:
        """Where power is going (or is): the state a reset is judged against."""
        return self.pending[0] if self.pending else self.power

    def request(self, target: str) -> None:
        if self.heading() != target:
            self.pending = (target, time.monotonic() + self.delay)
            self.generation += 1


@dataclass
class Record:
    """What reached the service, for tests: every request, every reset applied."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    resets: list[tuple[str, str]] = field(default_factory=list)
    patches: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    sessions_created: int = 0
    #: Every X-Auth-Token handed out, so tests can check none ever shows up in output.
    tokens: list[str] = field(default_factory=list)

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for r in self.requests if r["method"] == method and path_part in r["path"])


class RedfishState:
    """The service's state, shared by its handler threads under one lock."""

    def __init__(self, profile: Profile, username: str, password: str) -> None:
        self.profile = profile
        self.username = username
        self.password = password
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.systems = {s: SimSystem(s, profile.power_delay) for s in profile.systems}
        self.sessions: dict[str, str] = {}  # token -> session id
        self.tasks: dict[str, dict[str, Any]] = {}
        self.busy_left = profile.busy
        self.record = Record()
        self._next = 0

    def next_id(self) -> str:
        with self.lock:
            self._next += 1
            return str(self._next)

    @property
    def open_sessions(self) -> int:
        with self.lock:
            return len(self.sessions)

    def power(self, system: str) -> str:
        with self.lock:
            machine = self.systems[system]
            machine.settle()
            return machine.power

    def set_power(self, system: str, state: str) -> None:
        """Put a machine in a state at once (test setup)."""
        with self.lock:
            machine = self.systems[system]
            machine.power, machine.pending = state, None
            machine.generation += 1
