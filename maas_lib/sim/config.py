"""Simulator settings and the fleet layout derived from them (names, ports, faults)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

#: select() in pyghmi's IO loop caps one process at ~1,000 sockets.
MAX_IPMI_PER_PROCESS = 900
FAULT_KINDS = ("dead", "wrong_creds", "slow", "flaky", "bad_install")


class SimConfig(BaseModel):
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

    @model_validator(mode="after")
    def _enough_hosts(self) -> SimConfig:
        if self.ipmi + self.redfish + self.dual == 0:
            raise ValueError("simulate at least one host (--ipmi, --redfish or --dual)")
        if self.ipmi + self.dual > MAX_IPMI_PER_PROCESS:
            raise ValueError(f"at most {MAX_IPMI_PER_PROCESS} IPMI BMCs per simulator")
        faults = self.dead + self.wrong_creds + self.slow + self.flaky + self.bad_install
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
        if kind != "dual":
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
    return hosts
