"""IPMI through pyghmi (RMCP+, or IPMI 1.5 where a BMC offers only that): one reused,
logged-out-when-done session per BMC per process, and the failure classes of its errors."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

from pyghmi import exceptions as pexc
from pyghmi.ipmi.private.session import Session

from maas_lib.bmc import pyghmi_fixes
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
# RMCP+ status codes (IPMI 2.0 table 13-15) in the session-opening messages' replies.
_RMCP_BUSY = {0x01: "no free session slot", 0x0B: "no free session slot at this role"}
_RMCP_AUTH = {0x09, 0x0A, 0x0C, 0x0D, 0x0E, 0x0F}  # role, user name, GUID, RAKP3 check
_RMCP_STALE = {0x02, 0x08}  # invalid/inactive session id: a retried message crossed over
_RMCP_UNSUPPORTED = {0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12}  # no common algorithms
# IPMI 1.5 login completion codes (IPMI 2.0 tables 22-15 and 22-16).
_CHALLENGE_AUTH = {0x81, 0x82}  # invalid user name, null user name not enabled
_ACTIVATE_BUSY = {0x81, 0x82, 0x83}  # no session slot (at all / for this user / this role)
_ACTIVATE_STALE = {0x84, 0x85}  # sequence number out of range, invalid session id
_ACTIVATE_AUTH = {0x86}  # requested privilege above the user's or channel's limit
# Generic completion codes: node busy, timeout, out of space, unspecified — worth a retry.
_TRANSIENT_CODES = {0xC0, 0xC3, 0xC4, 0xFF}
_UNSUPPORTED_CODES = {0xC1, 0xC2, 0xCC}  # invalid command, invalid for LUN, invalid field
_PRIVILEGE_CODE = 0xD4  # insufficient privilege for the command
_NO_ANSWER_CODE = 0xFFFF  # pyghmi's own: the BMC never answered the request

# Last resort, for failures pyghmi reports with text only (e.g. a wrong password is found
# by the client's own RAKP2 check).
_AUTH_MARKERS = (
    "incorrect password",
    "unauthorized name",
    "invalid username",
    "unauthorized role",
    "invalid role",
    "wrong kg",
    "invalid integrity check",
)
_BUSY_MARKERS = ("insufficient resources", "no session slot", "node busy")
_TRANSIENT_MARKERS = ("timeout while processing", "out of space", "unspecified")
_UNREACHABLE_MARKERS = ("timeout", "no longer connected", "failed to initialize")
_UNSUPPORTED_MARKERS = ("invalid command", "unknown bootdevice", "invalid data field")
_DISPATCH_FAILURE = "BMC reply could not be handled"


def _busy(msg: str, via: str) -> BmcError:
    return BmcError(f"BMC busy: {msg}", via=via, transient=True)


def _classify_login(step: str, code: int, msg: str, via: str) -> BmcError | None:
    """A failed login from the step that failed and its status/completion code."""
    what = f"{msg} ({step} status 0x{code:02X})"
    if step in ("rmcp+", "rakp2", "rakp4"):
        if code in _RMCP_BUSY:
            return _busy(f"{_RMCP_BUSY[code]}: {what}", via)
        if code in _RMCP_AUTH:
            return BmcAuthError(f"credentials refused: {what}", via=via)
        if code in _RMCP_STALE:
            return BmcError(what, via=via, transient=True)
        if code in _RMCP_UNSUPPORTED:
            return BmcUnsupported(f"no common RMCP+ algorithms: {what}", via=via)
    elif step == "session_challenge" and code in _CHALLENGE_AUTH:
        return BmcAuthError(f"credentials refused: {what}", via=via)
    elif step == "activate_session":
        if code in _ACTIVATE_BUSY:
            return _busy(f"no free session slot: {what}", via)
        if code in _ACTIVATE_STALE:
            return BmcError(what, via=via, transient=True)
        if code in _ACTIVATE_AUTH:
            return BmcAuthError(f"credentials refused: {what}", via=via)
    if code in _TRANSIENT_CODES:
        return _busy(what, via)
    return None


def classify_ipmi_error(exc: BaseException, via: str) -> BmcError:
    """Map a pyghmi/socket failure onto maas-lib's failure classes: by the RMCP+ status or
    completion code where pyghmi kept one (see pyghmi_fixes, fix 7), by its text only as a
    last resort."""
    if isinstance(exc, BmcError):
        return exc
    msg = str(exc)
    if msg in ("", "None") and isinstance(exc, pexc.IpmiException):
        # pyghmi gives up on a BMC that never answered the login without a message.
        return BmcUnreachable("no answer from BMC", via=via)
    msg = msg or type(exc).__name__
    low = msg.lower()
    status = getattr(exc, "login_status", None)
    if status:
        classified = _classify_login(status[0], status[1], msg, via)
        if classified is not None:
            return classified
    code = getattr(exc, "ipmicode", 0) or 0
    if isinstance(exc, pexc.UnsupportedFunctionality) or code in _UNSUPPORTED_CODES:
        return BmcUnsupported(msg, via=via)
    if code in _TRANSIENT_CODES:
        return _busy(msg, via)
    if code == _PRIVILEGE_CODE:
        return BmcAuthError(f"privilege too low: {msg}", via=via)
    if code == _NO_ANSWER_CODE:
        return BmcUnreachable(f"no answer from BMC ({msg})", via=via)
    if code:
        return BmcError(msg, via=via)
    if msg.startswith(_DISPATCH_FAILURE):
        return BmcError(msg, via=via)
    if any(m in low for m in _UNSUPPORTED_MARKERS):
        return BmcUnsupported(msg, via=via)
    if any(m in low for m in _BUSY_MARKERS):
        return _busy(msg, via)
    if any(m in low for m in _TRANSIENT_MARKERS):
        return BmcError(f"BMC busy or flaky: {msg}", via=via, transient=True)
    if any(m in low for m in _AUTH_MARKERS):
        return BmcAuthError(f"credentials refused: {msg}", via=via)
    if isinstance(exc, socket.gaierror):
        return BmcUnreachable(f"cannot resolve BMC address: {msg}", via=via)
    if isinstance(exc, OSError) or any(m in low for m in _UNREACHABLE_MARKERS):
        return BmcUnreachable(f"no answer from BMC ({msg})", via=via)
    return BmcError(msg, via=via)


def reading_from_chassis_status(data: bytes | bytearray) -> PowerReading:
    """Get Chassis Status (IPMI 2.0 table 28-3): bit 0 of the first of at least three data
    bytes is "power is on". A shorter reply is not a power state: UNKNOWN, with its hex."""
    data = bytes(data)
    if len(data) < 3:
        return PowerReading(PowerState.UNKNOWN, f"chassis status reply {data.hex() or 'empty'}")
    return PowerReading(PowerState.ON if data[0] & 1 else PowerState.OFF)


class IpmiClient:
    """What the session pool keeps for one BMC: a logged-in pyghmi `Session` (raw chassis
    commands go straight to it), a pyghmi `Command` on that same session for what needs
    pyghmi's helpers (boot device, identify), and how to log out (`close`: Close Session,
    so the BMC frees the slot now, not at its idle timeout)."""

    def __init__(self, session: Any, command_factory: Callable[[], Any]):
        self.session = session
        self._command_factory = command_factory
        self._command: Any = None

    @property
    def command(self) -> Any:
        """A pyghmi `Command` sharing `session`. Built on first use only: importing
        pyghmi.ipmi.command (and its vendor-extension lookup) costs more than a status
        call of a whole fleet needs."""
        if self._command is None:
            command = self._command_factory()
            if command.ipmi_session is not self.session:
                # pyghmi hands a second Command for the same BMC and credentials the
                # session it already has; anything else would be a second login.
                command.ipmi_session.logout()
                raise BmcError("pyghmi opened a second session to the BMC")
            self._command = command
        return self._command

    def raw_command(self, netfn: int, command: int, data: tuple[int, ...] = ()) -> Any:
        return self.session.raw_command(netfn=netfn, command=command, data=data)

    def close(self) -> None:
        session = self.session
        if session is None or session.broken:
            return
        session.logout()


class IpmiDriver(BmcDriver):
    def __init__(self, endpoint: BmcEndpoint, credential: Credential, *, timeout: float = 10.0):
        self.endpoint = endpoint
        self._credential = credential
        self.timeout = timeout
        self._key = (endpoint.address, endpoint.port, credential.fingerprint)

    def _session_args(self) -> dict[str, Any]:
        # bytes credentials: see sessions.py for why str hangs on a second Command.
        return {
            "bmc": self.endpoint.address,
            "port": self.endpoint.port,
            "userid": self._credential.username.encode(),
            "password": self._credential.password.encode(),
        }

    def has_session(self) -> bool:
        """Whether this process holds a session to this BMC as this user."""
        return IPMI_SESSIONS.has_client(self._key)

    def _connect(self) -> IpmiClient:
        pyghmi_fixes.apply()
        with pyghmi_fixes.pinned_cipher_suite(self.endpoint.ipmi_cipher_suite):
            session = Session(**self._session_args(), keepalive=True)
        return IpmiClient(session, self._command)

    def _command(self) -> Any:
        # pyghmi's Command (and its OEM lookups) only for boot device and identify.
        from pyghmi.ipmi.command import Command

        return Command(**self._session_args())

    def _call(self, fn: Callable[[IpmiClient], T]) -> T:
        try:
            with IPMI_SESSIONS.hold(self._key, self.timeout, self.via) as entry:
                client: IpmiClient = IPMI_SESSIONS.client(entry, self._connect)
                try:
                    return fn(client)
                except BaseException:
                    # A failed call may leave the session unusable; log out (freeing the
                    # BMC's slot if it still counts one) and let the next call log in anew.
                    IPMI_SESSIONS.drop(entry)
                    raise
        except Exception as exc:
            raise classify_ipmi_error(exc, self.via) from None

    @staticmethod
    def _raw(client: IpmiClient, cmd: int, data: tuple[int, ...] = ()) -> Any:
        """One chassis command. Raw, because pyghmi's set_power/get_power add an OEM probe
        and a state read to every call: a third of the traffic of a power cycle."""
        response = client.raw_command(netfn=0, command=cmd, data=data)
        if "error" in response:
            raise pexc.IpmiException(response["error"], response.get("code", 0))
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
        def request(c: IpmiClient) -> None:
            result = c.command.set_bootdev(_BOOT_DEVICES[device], persist=persistent)
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
        self._call(lambda c: c.command.set_identify(on=on))
