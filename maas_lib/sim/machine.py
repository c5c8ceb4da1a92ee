"""The simulated hardware behind every simulated BMC: power, boot device, and an installer.

A `Machine` is what IPMI and Redfish BMCs of the simulator both act on, so a host reached
through either path (or both, for fallback) is one consistent piece of hardware. Power
changes take `power_delay` seconds; a machine powered on with a one-time network or
virtual-media boot runs the installer for `install_time` seconds and then reports the
outcome through the project's install-completion path.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BootTarget(StrEnum):
    NONE = "none"
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"


class OsState(StrEnum):
    OFF = "off"
    RUNNING = "running"  # booted from disk
    INSTALLING = "installing"
    FIRMWARE = "firmware"  # BIOS setup, or a network boot with nothing to install


#: (host, image, failure reason or None) → None. The simulator wires this to the
#: install-completion path (`maas_lib.fleet.Fleet.report_install`).
InstallReporter = Callable[[str, str, str | None], None]
#: host → image the provisioning side expects it to install from the network, or None.
InstallTargetLookup = Callable[[str], str | None]


@dataclass
class MachineConfig:
    power_delay: float = 0.5
    install_time: float = 5.0
    install_failure_rate: float = 0.0
    seed: int | None = None


@dataclass
class Machine:
    name: str
    config: MachineConfig = field(default_factory=MachineConfig)
    reporter: InstallReporter | None = None
    lookup: InstallTargetLookup | None = None
    power: str = "off"
    boot_target: BootTarget = BootTarget.NONE
    boot_persistent: bool = False
    media_url: str | None = None
    os_state: OsState = OsState.OFF
    installed_image: str | None = None
    identify: bool = False
    installs: int = 0
    power_ons: int = 0
    power_offs: int = 0
    #: (wall-clock time, "on"/"off") of every power change: the simulator's own record,
    #: against which tests check that budgets and batch sizes held.
    history: list[tuple[float, str]] = field(default_factory=list)
    _pending: tuple[float, str] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.config.seed is not None:
            self._rng.seed(f"{self.config.seed}:{self.name}")

    # -- power ----------------------------------------------------------------------------

    def power_state(self) -> str:
        with self._lock:
            self._settle()
            return self.power

    def request_power(self, state: str) -> None:
        """Start a transition to `state` ('on' or 'off'); it completes after power_delay."""
        with self._lock:
            self._settle()
            if self.config.power_delay <= 0:
                self._apply(state)
            else:
                self._pending = (time.monotonic() + self.config.power_delay, state)
                # Settle on time even if nobody asks (the installer starts at power-on).
                timer = threading.Timer(self.config.power_delay + 0.01, self.power_state)
                timer.daemon = True
                timer.start()

    def reset(self) -> None:
        """Warm reset: a powered-on machine boots again at once."""
        with self._lock:
            self._settle()
            if self.power == "on":
                self._boot()

    def _settle(self) -> None:
        if self._pending and time.monotonic() >= self._pending[0]:
            _, state = self._pending
            self._pending = None
            self._apply(state)

    def _apply(self, state: str) -> None:
        if state == self.power:
            return
        self.power = state
        self.history.append((time.time(), state))
        del self.history[:-500]
        if state == "off":
            self.power_offs += 1
            self.os_state = OsState.OFF
        else:
            self.power_ons += 1
            self._boot()

    # -- boot -----------------------------------------------------------------------------

    def set_boot(self, target: BootTarget, persistent: bool = False) -> None:
        with self._lock:
            self.boot_target = target
            self.boot_persistent = persistent

    def insert_media(self, url: str) -> None:
        with self._lock:
            self.media_url = url

    def eject_media(self) -> None:
        with self._lock:
            self.media_url = None

    def set_identify(self, on: bool) -> None:
        with self._lock:
            self.identify = on

    def _boot(self) -> None:
        target = self.boot_target
        if not self.boot_persistent:
            self.boot_target = BootTarget.NONE
        image: str | None = None
        if target is BootTarget.CD and self.media_url:
            image = self.media_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".iso")
        elif target is BootTarget.PXE and self.lookup is not None:
            image = self.lookup(self.name)
        if image:
            self._start_install(image)
        elif target in (BootTarget.PXE, BootTarget.BIOS):
            self.os_state = OsState.FIRMWARE
        else:
            self.os_state = OsState.RUNNING

    def _start_install(self, image: str) -> None:
        self.os_state = OsState.INSTALLING
        self.installs += 1
        generation = self.installs
        timer = threading.Timer(
            self.config.install_time, self._finish_install, args=(image, generation)
        )
        timer.daemon = True
        timer.start()

    def _finish_install(self, image: str, generation: int) -> None:
        with self._lock:
            self._settle()
            # A power-off or a newer boot during the install aborts it: no report.
            if generation != self.installs or self.os_state is not OsState.INSTALLING:
                return
            failed = self._rng.random() < self.config.install_failure_rate
            reason = "simulated installer failure" if failed else None
            if not failed:
                self.installed_image = image
                self.os_state = OsState.RUNNING
            else:
                self.os_state = OsState.FIRMWARE
        if self.reporter is not None:
            self.reporter(self.name, image, reason)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            self._settle()
            return {
                "host": self.name,
                "power": self.power,
                "boot_target": str(self.boot_target),
                "boot_persistent": self.boot_persistent,
                "media_url": self.media_url,
                "os": str(self.os_state),
                "installed_image": self.installed_image,
                "installs": self.installs,
                "power_ons": self.power_ons,
                "power_offs": self.power_offs,
                "power_history": list(self.history),
                "identify": self.identify,
            }
