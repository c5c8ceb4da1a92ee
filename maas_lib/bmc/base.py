"""The BMC driver protocol: a few verbs every implementation (IPMI, Redfish, fallback) offers.

Drivers only *request* things; waiting for a BMC to reach a state is `maas_lib.bmc.control`'s
job, so the same polling, deadlines and retries apply to every protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from maas_lib.models import BmcProtocol, HostRecord, HostSpec

IPMI_DEFAULT_PORT = 623


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"  # hard
    SOFT = "soft"  # ask the OS to shut down
    CYCLE = "cycle"  # off, confirmed off, on, confirmed on (see control.py)
    RESET = "reset"  # hard reset: the host reboots at once, power stays on


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"


@dataclass(frozen=True)
class BmcEndpoint:
    """One path to a BMC: protocol, where, and how to trust it."""

    protocol: BmcProtocol
    address: str  # IPMI: host or IP; Redfish: base URL (scheme://host[:port])
    port: int | None = None
    system: str | None = None
    tls_ca: str | None = None
    tls_verify: bool = True

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
    ) -> BmcEndpoint:
        protocol = BmcProtocol(protocol)
        if protocol is BmcProtocol.REDFISH:
            address = redfish_base_url(address, port)
            port = urlsplit(address).port
        else:
            port = port or IPMI_DEFAULT_PORT
        return cls(protocol, address, port, system, tls_ca, tls_verify)

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
        primary = BmcEndpoint.build(
            host.bmc_protocol,
            host.bmc_address,
            host.bmc_port,
            system=host.bmc_system,
            tls_ca=host.bmc_tls_ca,
            tls_verify=host.bmc_tls_verify,
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
            )
        return cls(host.name, host.bmc_credential, primary, fallback)


class BmcDriver(ABC):
    """One BMC endpoint. Every method raises a `maas_lib.errors.BmcError` subclass on failure."""

    endpoint: BmcEndpoint

    @abstractmethod
    def power_state(self) -> PowerState: ...

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
