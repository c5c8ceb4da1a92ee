"""Redfish over HTTPS through sushy, one reused client per BMC system per process.

Certificate verification is on by default: `bmc_tls_ca` names a CA bundle, and only
`bmc_tls_verify: false` in the inventory turns verification off (with a warning).
"""

from __future__ import annotations

import logging
import re
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
from maas_lib.bmc.sessions import REDFISH_SESSIONS
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


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _socket_reason(exc: BaseException) -> str:
    """'Connection refused' rather than urllib3's three nested reprs."""
    text = str(exc)
    m = _ERRNO_RE.search(text)
    return m.group(1).strip() if m else text


def classify_redfish_error(exc: BaseException, via: str) -> BmcError:
    """Map a sushy/requests failure onto maas-lib's failure classes."""
    import requests
    from sushy import exceptions as sexc

    if isinstance(exc, BmcError):
        return exc
    msg = str(exc) or type(exc).__name__
    # sushy re-raises inside `except`, so the requests error is the implicit context.
    cause = exc.__cause__ or exc.__context__ if isinstance(exc, sexc.ConnectionError) else exc
    if isinstance(cause, requests.exceptions.SSLError):
        return BmcTlsError(f"TLS verification failed: {cause}", via=via)
    if isinstance(cause, requests.exceptions.ReadTimeout):
        return BmcUnreachable(f"BMC accepted the connection but did not answer: {cause}", via=via)
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
            f"HTTP {status}: {msg}", via=via, transient=status in (409, 500, 502, 503, 504)
        )
    return BmcError(msg, via=via)


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
        self.deadline = connect_timeout + 4 * timeout if deadline is None else deadline
        verify: bool | str = endpoint.tls_ca or endpoint.tls_verify
        self._verify = verify
        self._key = (endpoint.address, endpoint.system, credential.fingerprint, verify)

    @property
    def call_deadline(self) -> float:
        return self.deadline

    def deadline_error(self, what: str, seconds: float) -> BmcError:
        return BmcTimeout(f"{what}: not done within {seconds:g}s", via=self.via)

    def _connect(self) -> tuple[Any, str]:
        import sushy
        from sushy import auth

        if self._verify is False and self.endpoint.address.startswith("https"):
            if self.endpoint.address not in _warned_insecure:
                _warned_insecure.add(self.endpoint.address)
                log.warning(
                    "TLS verification is off for %s (bmc_tls_verify: false in the inventory)",
                    self.endpoint.address,
                )
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        conn = sushy.Sushy(
            self.endpoint.address + "/redfish/v1/",
            auth=auth.BasicAuth(self._credential.username, self._credential.password),
            verify=self._verify,
            read_timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            # sushy's defaults retry a dead BMC for ~27 s; the controller retries instead.
            server_side_retries=1,
            server_side_retries_delay=0.5,
        )
        system = self.endpoint.system
        if not system:
            members = list(conn.get_system_collection().members_identities)
            if len(members) != 1:
                raise BmcError(
                    f"{len(members)} systems at {self.endpoint.address}; set bmc_system",
                    via=self.via,
                )
            system = members[0]
        return conn, system

    def _call(self, fn: Callable[[Any], T]) -> T:
        try:
            with REDFISH_SESSIONS.hold(self._key, self.timeout, self.via) as entry:
                conn, path = REDFISH_SESSIONS.client(entry, self._connect)
                try:
                    return fn(conn.get_system(path))
                except Exception as exc:
                    error = classify_redfish_error(exc, self.via)
                    if error.error_class in ("unreachable", "tls", "auth"):
                        entry.client = None  # connect afresh next time
                    raise error from None
        except BmcError:
            raise
        except Exception as exc:
            raise classify_redfish_error(exc, self.via) from None

    def power_state(self) -> PowerReading:
        import sushy

        state = self._call(lambda s: s.power_state)
        known = {
            sushy.PowerState.ON: PowerState.ON,
            sushy.PowerState.OFF: PowerState.OFF,
            sushy.PowerState.POWERING_ON: PowerState.POWERING_ON,
            sushy.PowerState.POWERING_OFF: PowerState.POWERING_OFF,
        }
        if state in known:
            return PowerReading(known[state])
        return PowerReading(PowerState.UNKNOWN, "absent" if state is None else str(state))

    def power(self, action: PowerAction) -> None:
        import sushy

        reset = {
            PowerAction.ON: sushy.RESET_ON,
            PowerAction.OFF: sushy.RESET_FORCE_OFF,
            PowerAction.SOFT: sushy.RESET_GRACEFUL_SHUTDOWN,
            PowerAction.RESET: sushy.RESET_FORCE_RESTART,
        }.get(action)
        if reset is None:
            raise BmcUnsupported(f"Redfish driver has no single request for {action}", via=self.via)
        self._call(lambda s: s.reset_system(reset))

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        import sushy

        target = {
            BootDevice.PXE: sushy.BOOT_SOURCE_TARGET_PXE,
            BootDevice.DISK: sushy.BOOT_SOURCE_TARGET_HDD,
            BootDevice.CD: sushy.BOOT_SOURCE_TARGET_CD,
            BootDevice.BIOS: sushy.BOOT_SOURCE_TARGET_BIOS_SETUP,
        }[device]
        enabled = (
            sushy.BOOT_SOURCE_ENABLED_CONTINUOUS if persistent else sushy.BOOT_SOURCE_ENABLED_ONCE
        )
        self._call(lambda s: s.set_system_boot_options(target=target, enabled=enabled))

    @staticmethod
    def _cd(system: Any) -> Any:
        import sushy

        media = system.virtual_media
        for ident in media.members_identities:
            member = media.get_member(ident)
            if {sushy.VIRTUAL_MEDIA_CD, sushy.VIRTUAL_MEDIA_DVD} & set(member.media_types or []):
                return member
        raise BmcUnsupported("BMC offers no CD/DVD virtual media")

    def insert_media(self, image_url: str) -> None:
        def insert(system: Any) -> None:
            cd = self._cd(system)
            if cd.inserted:
                cd.eject_media()
            cd.insert_media(image_url, inserted=True, write_protected=True)

        self._call(insert)

    def eject_media(self) -> None:
        def eject(system: Any) -> None:
            cd = self._cd(system)
            if cd.inserted:
                cd.eject_media()

        self._call(eject)

    def identify(self, on: bool = True) -> None:
        import sushy

        led = sushy.INDICATOR_LED_BLINKING if on else sushy.INDICATOR_LED_OFF
        self._call(lambda s: s.set_indicator_led(led))
