"""Simulator settings and the fleet layout derived from them (names, ports, faults)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from maas_lib.sim.redfish_profiles import PROFILE_NAMES, profile_named

#: select() in pyghmi's IO loop caps one process at ~1,000 sockets.
MAX_IPMI_PER_PROCESS = 900
FAULT_KINDS = ("dead", "wrong_creds", "slow", "flaky", "bad_install")
#: Each profile host's service is a threaded HTTP server of its own.
MAX_PROFILE_HOSTS = 200


class SimConfig(BaseModel, defer_build=True):
    """What `maasctl sim up` starts. Faults apply to that many hosts of each protocol."""

    directory: Path
    db: str | None = None
    ipmi: int = Field(default=10, ge=0, le=MAX_IPMI_PER_PROCESS)
    redfish: int = Field(default=0, ge=0, le=5000)
    dual: int = Field(
        default=0,
        ge=0,
        le=MAX_IPMI_PER_PROCESS,
        description="hosts reachable over IPMI, with Redfish as fallback",
    )
    ipmi_base_port: int = Field(default=16230, ge=1024, le=65000)
    redfish_port: int = Field(default=0, ge=0, le=65535, description="0: any free port")
    https: bool = True
    power_delay: float = Field(default=0.5, ge=0)
    install_time: float = Field(default=5.0, ge=0)
    install_failure_rate: float = Field(default=0.0, ge=0, le=1)
    dead: int = Field(default=0, ge=0)
    wrong_creds: int = Field(default=0, ge=0)
    slow: int = Field(default=0, ge=0)
    slow_latency: float = Field(default=2.0, ge=0)
    flaky: int = Field(default=0, ge=0)
    flaky_rate: float = Field(default=0.3, ge=0, le=1)
    bad_install: int = Field(default=0, ge=0, description="hosts whose installer always fails")
    seed: int = 1
    redfish_profile: dict[str, int] = Field(
        default_factory=dict,
        description="hosts behind Redfish profile services, by profile name (NAME[=COUNT])",
    )

    @field_validator("redfish_profile", mode="before")
    @classmethod
    def _profile_counts(cls, value: object) -> object:
        """`["ilo5", "openbmc=2", "ilo5"]` -> `{"ilo5": 2, "openbmc": 2}`."""
        if not isinstance(value, (list, tuple)):
            return value
        counts: dict[str, int] = {}
        for item in value:
            name, sep, count = str(item).partition("=")
            if name not in PROFILE_NAMES:
                raise ValueError(
                    f"unknown profile {name!r} (choose from {', '.join(PROFILE_NAMES)})"
                )
            if sep and not (count.isdigit() and int(count) >= 1):
                raise ValueError(f"{item!r}: COUNT must be a whole number of at least 1")
            counts[name] = counts.get(name, 0) + (int(count) if sep else 1)
        return counts

    @property
    def profile_hosts(self) -> int:
        return sum(self.redfish_profile.values())

    @model_validator(mode="after")
    def _enough_hosts(self) -> SimConfig:
        if self.ipmi + self.redfish + self.dual + self.profile_hosts == 0:
            raise ValueError(
                "simulate at least one host (--ipmi, --redfish, --dual or --redfish-profile)"
            )
        if self.profile_hosts > MAX_PROFILE_HOSTS:
            raise ValueError(f"at most {MAX_PROFILE_HOSTS} Redfish profile hosts per simulator")
        if self.ipmi + self.dual > MAX_IPMI_PER_PROCESS:
            raise ValueError(f"at most {MAX_IPMI_PER_PROCESS} IPMI BMCs per simulator")
        faults = self.dead + self.wrong_creds + self.slow + self.flaky + self.bad_install
        if faults and not (self.ipmi or self.redfish):
            raise ValueError(
                f"{faults} faulty hosts asked for, but faults apply per protocol to --ipmi "
                "and --redfish hosts, and there are none"
            )
        for kind, count in (("ipmi", self.ipmi), ("redfish", self.redfish)):
            if count and faults > count:
                raise ValueError(f"{faults} faulty hosts asked for, but only {count} {kind} hosts")
        if self.ipmi_base_port + 2 * (self.ipmi + self.dual) > 65535:
            raise ValueError("--ipmi-base-port leaves too few ports")
        return self


@dataclass(frozen=True)
class SimHost:
    name: str
    kind: str  # ipmi | redfish | dual
    rack: str
    fault: str | None = None
    ipmi_port: int | None = None
    system_id: str | None = None
    #: Set on hosts behind a Redfish profile service (kind "profile").
    profile: str | None = None

    @property
    def serves_ipmi(self) -> bool:
        return self.kind in ("ipmi", "dual") and self.fault != "dead"

    @property
    def serves_redfish(self) -> bool:
        return self.kind in ("redfish", "dual") and not (
            self.kind == "redfish" and self.fault == "dead"
        )


def layout(config: SimConfig) -> list[SimHost]:
    """Every simulated host, with its port/system id and fault (faults on the last hosts)."""
    hosts: list[SimHost] = []
    port = config.ipmi_base_port
    for kind, count, prefix in (
        ("ipmi", config.ipmi, "sim-ipmi"),
        ("redfish", config.redfish, "sim-rf"),
        ("dual", config.dual, "sim-dual"),
    ):
        faults: list[str | None] = [None] * count
        if kind != "dual" and count:  # faults go to each protocol that has hosts
            i = count
            for fault in FAULT_KINDS:
                for _ in range(getattr(config, fault)):
                    i -= 1
                    faults[i] = fault
        for i in range(count):
            name = f"{prefix}-{i + 1:04d}"
            ipmi_port = None
            if kind in ("ipmi", "dual"):
                ipmi_port, port = port, port + 1
            system_id = None
            if kind in ("redfish", "dual"):
                system_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.maas-lib.sim"))
            hosts.append(
                SimHost(name, kind, f"{prefix}-r{i // 20 + 1:02d}", faults[i], ipmi_port, system_id)
            )
    for profile, count in config.redfish_profile.items():
        # A service with several systems (a two-node blade) is shared by that many hosts.
        systems = profile_named(profile).systems
        for i in range(count):
            prefix = f"sim-{profile}"
            rack = f"{prefix}-r{i // 20 + 1:02d}"
            system = systems[i % len(systems)]
            hosts.append(
                SimHost(f"{prefix}-{i + 1:04d}", "profile", rack, None, None, system, profile)
            )
    return hosts
