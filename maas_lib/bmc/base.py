"""The BMC driver protocol: a few verbs every implementation (IPMI, Redfish, fallback) offers.

Drivers only *request* things; waiting for a BMC to reach a state is `maas_lib.bmc.control`'s
job, so the same polling, deadlines and retries apply to every protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from maas_lib.enums import BmcProtocol, BootDevice, PowerAction
from maas_lib.errors import BmcError, BmcUnreachable

if TYPE_CHECKING:
    from maas_lib.models import HostRecord, HostSpec

IPMI_DEFAULT_PORT = 623
#: The inventory var pinning a host's RMCP+ cipher suite (IPMI 2.0 table 22-20).
IPMI_CIPHER_SUITE_VAR = "bmc_ipmi_cipher_suite"
#: The suites the IPMI client (pyghmi) can speak: 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96,
#: AES-CBC-128) and 17 (the same with SHA-256). Unpinned, it proposes 17, then 3.
IPMI_CIPHER_SUITES = (3, 17)


def ipmi_cipher_suite(value: Any) -> int | None:
    """The cipher suite an inventory var pins (None: not pinned), or ValueError."""
    if value is None:
        return None
    suite: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        suite = value
    elif isinstance(value, str) and value.strip().isdigit():
        suite = int(value.strip())
    if suite not in IPMI_CIPHER_SUITES:
        choices = ", ".join(map(str, IPMI_CIPHER_SUITES))
        raise ValueError(
            f"an RMCP+ cipher suite the IPMI client supports: {choices} (got {value!r})"
        )
    return suite


class PowerState(StrEnum):
    """What a BMC says about power. Only ON and OFF are known states; a transition is
    polled until it ends, and UNKNOWN is never taken for either (see `PowerReading`)."""

    ON = "on"
    OFF = "off"
    POWERING_ON = "powering_on"
    POWERING_OFF = "powering_off"
    UNKNOWN = "unknown"

    @property
    def transitional(self) -> bool:
        return self in (PowerState.POWERING_ON, PowerState.POWERING_OFF)


@dataclass(frozen=True)
class PowerReading:
    """One power-state answer from a BMC: the state, and the BMC's own words for it when
    they were not a plain on/off (`PowerState: "Paused"`, a missing property, a short IPMI
    reply as hex), so an unknown state can be reported as what the BMC really said."""

    state: PowerState
    raw: str | None = None

    def __str__(self) -> str:
        if self.raw is None or self.state in (PowerState.ON, PowerState.OFF):
            return str(self.state)
        return f"{self.state} ({self.raw})"


@dataclass(frozen=True)
class BmcEndpoint:
    """One path to a BMC: protocol, where, and how to trust it."""

    protocol: BmcProtocol
    address: str  # IPMI: host or IP; Redfish: base URL (scheme://host[:port])
    port: int | None = None
    system: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = True
    #: IPMI: the one RMCP+ cipher suite to propose (None: 17, then 3 if refused).
    ipmi_cipher_suite: int | None = None

    @classmethod
    def build(
        cls,
        protocol: BmcProtocol,
        address: str,
        port: int | None,
        *,
        system: str | None = None,
        tls_ca: str | None = None,
        tls_verify: bool = True,
        ipmi_cipher_suite: int | None = None,
    ) -> BmcEndpoint:
        protocol = BmcProtocol(protocol)
        if protocol is BmcProtocol.REDFISH:
            address = redfish_base_url(address, port)
            port = urlsplit(address).port
            ipmi_cipher_suite = None
        else:
            port = port or IPMI_DEFAULT_PORT
        return cls(protocol, address, port, system, tls_ca, tls_verify, ipmi_cipher_suite)

    @property
    def label(self) -> str:
        """How results name the path that acted: `ipmi://10.0.0.1:623`, `https://…`."""
        if self.protocol is BmcProtocol.IPMI:
            return f"ipmi://{self.address}:{self.port}"
        return self.address + (self.system or "")


def redfish_base_url(address: str, port: int | None) -> str:
    """`https://host[:port]` from a bare host or a URL; a path in the URL is dropped."""
    if "://" not in address:
        address = f"https://[{address}]" if ":" in address else f"https://{address}"
    parts = urlsplit(address)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or port
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class BmcTarget:
    """A host's BMC paths and the *name* of its credential."""

    host: str
    credential: str
    primary: BmcEndpoint
    fallback: BmcEndpoint | None = None

    @classmethod
    def from_host(cls, host: HostSpec | HostRecord) -> BmcTarget:
        assert host.bmc_protocol is not None
        suite = ipmi_cipher_suite(host.vars.get(IPMI_CIPHER_SUITE_VAR))
        primary = BmcEndpoint.build(
            host.bmc_protocol,
            host.bmc_address,
            host.bmc_port,
            system=host.bmc_system,
            tls_ca=host.bmc_tls_ca,
            tls_verify=host.bmc_tls_verify,
            ipmi_cipher_suite=suite,
        )
        fallback = None
        if host.bmc_fallback_protocol and host.bmc_fallback_address:
            fallback = BmcEndpoint.build(
                host.bmc_fallback_protocol,
                host.bmc_fallback_address,
                host.bmc_fallback_port,
                system=host.bmc_system,
                tls_ca=host.bmc_tls_ca,
                tls_verify=host.bmc_tls_verify,
                ipmi_cipher_suite=suite,
            )
        return cls(host.name, host.bmc_credential, primary, fallback)


class BmcDriver(ABC):
    """One BMC endpoint. Every method raises a `maas_lib.errors.BmcError` subclass on failure."""

    endpoint: BmcEndpoint
    #: Seconds one request may take (see `BmcSettings.timeout`).
    timeout: float = 10.0

    @property
    def call_deadline(self) -> float:
        """Seconds one operation of this driver may take in all before the controller stops
        waiting for it. One IPMI operation is one exchange (plus a login); a Redfish driver
        makes several requests per operation and says so by overriding this."""
        return self.timeout + 1.0

    def deadline_error(self, what: str, seconds: float) -> BmcError:
        """What an operation that outlived `call_deadline` failed with. Over UDP an
        unanswered request cannot be told from an absent BMC: unreachable."""
        return BmcUnreachable(f"{what}: no answer within {seconds:g}s", via=self.via)

    @abstractmethod
    def power_state(self) -> PowerReading:
        """The BMC's answer as it is: never ON or OFF unless the BMC said exactly that."""

    @abstractmethod
    def power(self, action: PowerAction) -> None:
        """Request ON, OFF (hard) or SOFT; CYCLE is composed by the controller."""

    @abstractmethod
    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None: ...

    @abstractmethod
    def insert_media(self, image_url: str) -> None: ...

    @abstractmethod
    def eject_media(self) -> None: ...

    @abstractmethod
    def identify(self, on: bool = True) -> None: ...

    @property
    def via(self) -> str:
        """The endpoint that handled the last call."""
        return self.endpoint.label
