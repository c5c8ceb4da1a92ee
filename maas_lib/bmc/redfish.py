"""Redfish over HTTPS through sushy, one reused, logged-in client per BMC system per process.

Certificate verification is on by default: `bmc_tls_ca` names a CA bundle, and only
`bmc_tls_verify: false` in the inventory turns verification off (with a warning).

What the BMC says is evidence, not assumption: only `PowerState: "On"`/`"Off"` are on/off,
and capabilities the BMC advertises (reset types, boot override targets, a Boot object at
all) are checked before anything is sent. Timeouts: `timeout` per HTTP read,
`connect_timeout` per connection, `deadline` for the whole operation (see redfish_http.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import sushy
import urllib3
from sushy import exceptions as sexc

from maas_lib.bmc.base import (
    BmcDriver,
    BmcEndpoint,
    BootDevice,
    PowerAction,
    PowerReading,
    PowerState,
)
from maas_lib.bmc.redfish_client import RedfishClient
from maas_lib.bmc.sessions import REDFISH_SESSIONS
from maas_lib.classes import ErrorClass
from maas_lib.credentials import Credential
from maas_lib.errors import (
    BmcAuthError,
    BmcError,
    BmcTimeout,
    BmcTlsError,
    BmcUnreachable,
    BmcUnsupported,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_warned_insecure: set[str] = set()
#: After these the session is not reused: the next call connects afresh.
_SESSION_LOST = frozenset(
    {ErrorClass.UNREACHABLE, ErrorClass.TLS, ErrorClass.AUTH, ErrorClass.TIMEOUT}
)


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _socket_reason(exc: BaseException) -> str:
    """'Connection refused' rather than urllib3's three nested reprs."""
    text = str(exc)
    m = _ERRNO_RE.search(text)
    return m.group(1).strip() if m else text


def classify_redfish_error(exc: BaseException, via: str) -> BmcError:
    """Map a sushy/requests failure onto maas-lib's failure classes."""
    if isinstance(exc, BmcError):
        return exc
    msg = str(exc) or type(exc).__name__
    # sushy re-raises inside `except`, so the requests error is the implicit context.
    cause = exc.__cause__ or exc.__context__ if isinstance(exc, sexc.ConnectionError) else exc
    if isinstance(cause, requests.exceptions.SSLError):
        return BmcTlsError(f"TLS verification failed: {cause}", via=via)
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return BmcUnreachable(f"cannot reach BMC: connection timed out ({cause})", via=via)
    if isinstance(cause, requests.exceptions.Timeout):
        # The BMC took the connection, then did not answer within the read timeout.
        return BmcTimeout(f"BMC accepted the connection but did not answer: {cause}", via=via)
    if isinstance(exc, sexc.ConnectionError | requests.exceptions.ConnectionError):
        return BmcUnreachable(f"cannot reach BMC: {_socket_reason(cause or exc)}", via=via)
    if isinstance(exc, sexc.AccessError):
        return BmcAuthError(f"credentials refused (HTTP {exc.status_code})", via=via)
    if isinstance(exc, sexc.InvalidParameterValueError | sexc.MissingActionError):
        return BmcUnsupported(msg, via=via)
    if isinstance(exc, sexc.HTTPError):
        status = exc.status_code
        if status in (405, 501):
            return BmcUnsupported(f"HTTP {status}: {msg}", via=via)
        return BmcError(
            f"HTTP {status}: {msg}", via=via, transient=status in (409, 429, 500, 502, 503, 504)
        )
    return BmcError(msg, via=via)


_POWER_STATES = {
    "On": PowerState.ON,
    "Off": PowerState.OFF,
    "PoweringOn": PowerState.POWERING_ON,
    "PoweringOff": PowerState.POWERING_OFF,
}
_RESET_TYPES = {
    PowerAction.ON: "On",
    PowerAction.OFF: "ForceOff",
    PowerAction.SOFT: "GracefulShutdown",
    PowerAction.RESET: "ForceRestart",
}
#: Power states in which a reset type refused as "wrong state" has nothing left to do.
_ALREADY_DONE = {
    "On": (PowerState.ON, PowerState.POWERING_ON),
    "ForceOff": (PowerState.OFF, PowerState.POWERING_OFF),
    "GracefulShutdown": (PowerState.OFF, PowerState.POWERING_OFF),
}
_BOOT_TARGETS = {
    BootDevice.PXE: "Pxe",
    BootDevice.DISK: "Hdd",
    BootDevice.CD: "Cd",
    BootDevice.BIOS: "BiosSetup",
}


def _shown(value: Any, limit: int = 40) -> str:
    """A BMC-supplied value fit for a message: printable, short."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def power_reading(system: dict[str, Any]) -> PowerReading:
    """A ComputerSystem's PowerState as it is: absent, null, Paused or anything else is
    UNKNOWN with the BMC's words, never a guess."""
    if "PowerState" not in system:
        return PowerReading(PowerState.UNKNOWN, "absent")
    value = system["PowerState"]
    if value is None:
        return PowerReading(PowerState.UNKNOWN, "null")
    if isinstance(value, str) and value in _POWER_STATES:
        return PowerReading(_POWER_STATES[value])
    return PowerReading(PowerState.UNKNOWN, _shown(value))


def _listed(values: list[Any]) -> str:
    return ", ".join(_shown(v) for v in values) or "none"


class RedfishDriver(BmcDriver):
    def __init__(
        self,
        endpoint: BmcEndpoint,
        credential: Credential,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        deadline: float | None = None,
    ):
        self.endpoint = endpoint
        self._credential = credential
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = deadline if deadline is not None else connect_timeout + 4 * timeout
        verify: bool | str = endpoint.tls_ca or endpoint.tls_verify
        self._verify = verify
        self._key = (endpoint.address, endpoint.system, credential.fingerprint, verify)

    @property
    def call_deadline(self) -> float:
        # The driver keeps to `deadline` itself; the slack lets its own, more precise
        # error (which request, which timeout) arrive before the controller gives up.
        return self.deadline + 1.0

    def deadline_error(self, what: str, seconds: float) -> BmcError:
        # Over TCP the connection was made: a BMC that never finishes is slow, not absent.
        return BmcTimeout(f"{what}: no answer within {seconds:g}s", via=self.via)

    def _open(self) -> RedfishClient:
        if self._verify is False and self.endpoint.address.startswith("https"):
            if self.endpoint.address not in _warned_insecure:
                _warned_insecure.add(self.endpoint.address)
                log.warning(
                    "TLS verification is off for %s (bmc_tls_verify: false in the inventory)",
                    self.endpoint.address,
                )

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return RedfishClient(
            self.endpoint.address,
            self._credential,
            verify=self._verify,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            deadline=self.deadline,
        )

    def _system_path(self, client: RedfishClient) -> str:
        if self.endpoint.system:
            return self.endpoint.system
        members = list(client.root.get_system_collection().members_identities)
        if len(members) != 1:
            raise BmcError(
                f"{len(members)} systems at {self.endpoint.address}; set bmc_system",
                via=self.via,
            )
        return str(members[0])

    def _call(self, fn: Callable[[RedfishClient, str], T]) -> T:
        try:
            with REDFISH_SESSIONS.hold(self._key, self.deadline, self.via) as entry:
                fresh = entry.client is None
                client: RedfishClient = REDFISH_SESSIONS.client(entry, self._open)
                if not fresh:
                    client.begin(self.deadline)
                try:
                    return fn(client, self._system_path(client))
                except Exception as exc:
                    error = classify_redfish_error(exc, self.via)
                    if error.error_class in _SESSION_LOST:
                        entry.client = None  # connect afresh next time
                        client.abandon()
                    raise error from None
        except BmcError as exc:
            exc.via = exc.via or self.via
            raise
        except Exception as exc:
            raise classify_redfish_error(exc, self.via) from None

    def power_state(self) -> PowerReading:
        return self._call(lambda c, path: power_reading(c.get_json(path)[0]))

    # -- power ------------------------------------------------------------------------------

    def _allowed_resets(self, client: RedfishClient, action: dict[str, Any]) -> list[Any] | None:
        """The ResetType values the BMC advertises (inline or in its ResetActionInfo)."""
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if isinstance(allowed, list):
            return allowed
        info_uri = action.get("@Redfish.ActionInfo")
        if not isinstance(info_uri, str):
            return None
        info, _ = client.get_json(info_uri)
        for param in info.get("Parameters") or []:
            if isinstance(param, dict) and param.get("Name") == "ResetType":
                values = param.get("AllowableValues")
                return values if isinstance(values, list) else None
        return None

    def power(self, action: PowerAction) -> None:
        reset = _RESET_TYPES.get(action)
        if reset is None:
            raise BmcUnsupported(f"Redfish driver has no single request for {action}", via=self.via)

        def act(client: RedfishClient, path: str) -> None:
            system, _ = client.get_json(path)
            actions = system.get("Actions") if isinstance(system.get("Actions"), dict) else {}
            element = actions.get("#ComputerSystem.Reset")
            if not isinstance(element, dict) or not isinstance(element.get("target"), str):
                raise BmcUnsupported(f"{path} offers no #ComputerSystem.Reset action")
            allowed = self._allowed_resets(client, element)
            if allowed is not None and reset not in allowed:
                raise BmcUnsupported(
                    f"BMC does not offer ResetType {reset} (it offers: {_listed(allowed)})"
                )
            try:
                client.conn.post(element["target"], data={"ResetType": reset})
            except sexc.HTTPError as exc:
                if exc.status_code not in (400, 409):
                    raise
                # BMCs refuse a reset that does not fit the current state (On when on,
                # ForceOff when off): done if the machine already is where we asked.
                now = power_reading(client.get_json(path)[0])
                if now.state in _ALREADY_DONE.get(reset, ()):
                    log.info("%s: %s refused as already done; power is %s", self.via, reset, now)
                    return
                detail = _shown(exc.detail or exc.code or "", 200)
                raise BmcError(
                    f"BMC refused ResetType {reset} with power {now} "
                    f"(HTTP {exc.status_code}: {detail})"
                ) from None

        self._call(act)

    # -- boot -------------------------------------------------------------------------------

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        target = _BOOT_TARGETS[device]
        enabled = "Continuous" if persistent else "Once"

        def act(client: RedfishClient, path: str) -> None:
            system, response = client.get_json(path)
            boot = system.get("Boot")
            if not isinstance(boot, dict):
                raise BmcUnsupported(f"{path} has no Boot object: the BMC offers no boot override")
            targets = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
            if isinstance(targets, list) and target not in targets:
                raise BmcUnsupported(
                    f"BMC does not offer boot override target {target} "
                    f"(it offers: {_listed(targets)})"
                )
            modes = boot.get("BootSourceOverrideEnabled@Redfish.AllowableValues")
            if isinstance(modes, list) and enabled not in modes:
                raise BmcUnsupported(
                    f"BMC does not offer BootSourceOverrideEnabled {enabled} "
                    f"(it offers: {_listed(modes)})"
                )
            if "@Redfish.Settings" in system:
                # Boot settings applied through a Settings resource: sushy knows that dance.
                sushy_system = client.root.get_system(path)
                sushy_system.set_system_boot_options(
                    target=sushy.BootSource(target),
                    enabled=sushy.BootSourceOverrideEnabled(enabled),
                )
                return
            data = {
                "Boot": {"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled}
            }
            self._patch(client, path, data, system, response)

        self._call(act)

    @staticmethod
    def _patch(
        client: RedfishClient, path: str, data: dict[str, Any], doc: dict[str, Any], response: Any
    ) -> None:
        """PATCH with If-Match when the BMC gave an ETag (header, or `@odata.etag` in the
        body); a 412/428 means the resource changed or the BMC wants one: read, try again."""
        for attempt in (1, 2):
            etag = response.headers.get("ETag") or doc.get("@odata.etag")
            headers = {"If-Match": etag} if isinstance(etag, str) and etag else None
            try:
                client.conn.patch(path, data=data, headers=headers)
                return
            except sexc.HTTPError as exc:
                if exc.status_code not in (412, 428) or attempt == 2:
                    raise
            doc, response = client.get_json(path)

    # -- virtual media, identify ------------------------------------------------------------

    @staticmethod
    def _cd(system: Any) -> Any:
        try:
            media = system.virtual_media
        except sexc.MissingAttributeError:
            raise BmcUnsupported("BMC offers no virtual media for this system") from None
        for ident in media.members_identities:
            member = media.get_member(ident)
            if {sushy.VIRTUAL_MEDIA_CD, sushy.VIRTUAL_MEDIA_DVD} & set(member.media_types or []):
                return member
        raise BmcUnsupported("BMC offers no CD/DVD virtual media")

    def insert_media(self, image_url: str) -> None:
        def insert(client: RedfishClient, path: str) -> None:
            cd = self._cd(client.root.get_system(path))
            if cd.inserted:
                cd.eject_media()
            # A BMC answering 202 has its task monitor followed: returns once inserted.
            cd.insert_media(image_url, inserted=True, write_protected=True)

        self._call(insert)

    def eject_media(self) -> None:
        def eject(client: RedfishClient, path: str) -> None:
            cd = self._cd(client.root.get_system(path))
            if cd.inserted:
                cd.eject_media()

        self._call(eject)

    def identify(self, on: bool = True) -> None:
        led = sushy.INDICATOR_LED_BLINKING if on else sushy.INDICATOR_LED_OFF
        self._call(lambda c, path: c.root.get_system(path).set_indicator_led(led))
