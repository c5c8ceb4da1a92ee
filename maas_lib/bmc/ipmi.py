"""IPMI over RMCP+ (lanplus) through pyghmi, one reused session per BMC per process."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

from maas_lib.bmc.base import (
    BmcDriver,
    BmcEndpoint,
    BootDevice,
    PowerAction,
    PowerReading,
    PowerState,
)
from maas_lib.bmc.sessions import IPMI_SESSIONS
from maas_lib.credentials import Credential
from maas_lib.errors import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    BmcUnsupported,
)

T = TypeVar("T")

_BOOT_DEVICES = {
    BootDevice.PXE: "network",
    BootDevice.DISK: "hd",
    BootDevice.CD: "optical",
    BootDevice.BIOS: "setup",
}
# Chassis Control (netfn 0, command 2) directives: power down, power up, hard reset, soft
# shutdown.
_CHASSIS_CONTROL = {
    PowerAction.OFF: 0,
    PowerAction.ON: 1,
    PowerAction.RESET: 3,
    PowerAction.SOFT: 5,
}
_AUTH_MARKERS = (
    "incorrect password",
    "unauthorized name",
    "invalid username",
    "unauthorized role",
    "invalid role",
    "wrong kg",
    "invalid integrity check",
)
_UNREACHABLE_MARKERS = ("timeout", "no longer connected", "failed to initialize")
_UNSUPPORTED_MARKERS = ("invalid command", "unknown bootdevice", "invalid data field")
# Completion-code texts of a busy or flaky BMC (pyghmi raises most without the code).
_TRANSIENT_MARKERS = ("node busy", "timeout while processing", "out of space", "unspecified")
# IPMI completion codes: node busy, timeout, out of space, unspecified — worth a retry.
_TRANSIENT_CODES = {0xC0, 0xC3, 0xC4, 0xFF}


def classify_ipmi_error(exc: BaseException, via: str) -> BmcError:
    """Map a pyghmi/socket failure onto maas-lib's failure classes."""
    from pyghmi import exceptions as pexc

    if isinstance(exc, BmcError):
        return exc
    msg = str(exc)
    if msg in ("", "None") and isinstance(exc, pexc.IpmiException):
        # pyghmi gives up on a BMC that never answered the login without a message.
        return BmcUnreachable("no answer from BMC", via=via)
    msg = msg or type(exc).__name__
    low = msg.lower()
    if isinstance(exc, pexc.UnsupportedFunctionality) or any(
        m in low for m in _UNSUPPORTED_MARKERS
    ):
        return BmcUnsupported(msg, via=via)
    code = getattr(exc, "ipmicode", 0)
    if code in _TRANSIENT_CODES or any(m in low for m in _TRANSIENT_MARKERS):
        return BmcError(f"BMC busy or flaky: {msg}", via=via, transient=True)
    if any(m in low for m in _AUTH_MARKERS):
        return BmcAuthError(f"credentials refused: {msg}", via=via)
    if isinstance(exc, socket.gaierror):
        return BmcUnreachable(f"cannot resolve BMC address: {msg}", via=via)
    if isinstance(exc, OSError) or any(m in low for m in _UNREACHABLE_MARKERS):
        return BmcUnreachable(f"no answer from BMC ({msg})", via=via)
    return BmcError(msg, via=via)


class IpmiDriver(BmcDriver):
    def __init__(self, endpoint: BmcEndpoint, credential: Credential, *, timeout: float = 10.0):
        self.endpoint = endpoint
        self._credential = credential
        self.timeout = timeout
        self._key = (endpoint.address, endpoint.port, credential.fingerprint)

    def _connect(self) -> Any:
        from pyghmi.ipmi.command import Command

        from maas_lib.bmc import pyghmi_fixes

        pyghmi_fixes.apply()
        # bytes credentials: see sessions.py for why str hangs on a second Command.
        return Command(
            bmc=self.endpoint.address,
            port=self.endpoint.port,
            userid=self._credential.username.encode(),
            password=self._credential.password.encode(),
            keepalive=True,
        )

    def _call(self, fn: Callable[[Any], T]) -> T:
        try:
            with IPMI_SESSIONS.hold(self._key, self.timeout, self.via) as entry:
                command = IPMI_SESSIONS.client(entry, self._connect)
                try:
                    return fn(command)
                except BaseException:
                    # A failed call may leave the session unusable; the next logs in anew.
                    entry.client = None
                    raise
        except Exception as exc:
            raise classify_ipmi_error(exc, self.via) from None

    @staticmethod
    def _raw(command: Any, cmd: int, data: tuple[int, ...] = ()) -> Any:
        """One chassis command. Raw, because pyghmi's set_power/get_power add an OEM probe
        and a state read to every call: a third of the traffic of a power cycle."""
        from pyghmi.exceptions import IpmiException

        response = command.raw_command(netfn=0, command=cmd, data=data)
        if "error" in response:
            raise IpmiException(response["error"], response.get("code", 0))
        return response["data"]

    def power_state(self) -> PowerReading:
        data = self._call(lambda c: self._raw(c, 0x01))
        if not data:
            return PowerReading(PowerState.UNKNOWN, "empty chassis status")
        return PowerReading(PowerState.ON if data[0] & 1 else PowerState.OFF)

    def power(self, action: PowerAction) -> None:
        if action not in _CHASSIS_CONTROL:
            raise BmcUnsupported(f"IPMI driver has no single request for {action}", via=self.via)
        self._call(lambda c: self._raw(c, 0x02, (_CHASSIS_CONTROL[action],)))

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        def request(c: Any) -> None:
            result = c.set_bootdev(_BOOT_DEVICES[device], persist=persistent)
            if isinstance(result, dict) and "error" in result:
                raise BmcUnsupported(str(result["error"]), via=self.via)

        self._call(request)

    def insert_media(self, image_url: str) -> None:
        raise BmcUnsupported(
            "virtual media needs Redfish; IPMI cannot attach an image", via=self.via
        )

    def eject_media(self) -> None:
        raise BmcUnsupported(
            "virtual media needs Redfish; IPMI cannot eject an image", via=self.via
        )

    def identify(self, on: bool = True) -> None:
        self._call(lambda c: c.set_identify(on=on))
