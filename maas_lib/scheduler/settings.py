"""How a scheduler worker behaves: claims, heartbeats, step timeouts, images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from maas_lib.bmc import BmcSettings


class SchedulerSettings(BaseModel, defer_build=True):
    """Everything `maasctl run` can tune; the defaults suit a real fleet."""

    bmc: BmcSettings = Field(default_factory=BmcSettings)
    claim_ttl: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="seconds (up to 3600) a claim outlives its worker's last heartbeat before "
        "another worker may resume the request",
    )
    poll: float = Field(
        default=0.5, gt=0, le=60, description="seconds (up to 60) between queue and state polls"
    )
    max_requests: int = Field(
        default=8, ge=1, le=256, description="requests one worker runs side by side"
    )
    max_hosts: int = Field(
        default=1024, ge=1, le=8192, description="host tasks one worker runs side by side"
    )
    soft_timeout: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="seconds (up to 3600) a reboot waits for a soft shutdown",
    )
    install_timeout: float = Field(
        default=1800.0,
        gt=0,
        le=86400,
        description="seconds (up to 86400) to wait for an install-completion report",
    )
    hook_timeout: float = Field(
        default=600.0, gt=0, le=86400, description="seconds (up to 86400) for one hook run"
    )
    hook_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="hook playbooks run at once (each ansible-playbook costs ~1.5 s of CPU "
        "to start)",
    )
    session_idle_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="seconds (5-3600) a BMC session may sit unused before the worker logs "
        "out of it; BMCs have few session slots, and pyghmi's keepalives would otherwise "
        "hold an IPMI session for as long as the worker runs",
    )
    store_retry_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="seconds (1-3600) the worker retries a failing store (disk full, I/O "
        "error, lock timeout, lost database connection), starting no new host meanwhile, "
        "before it stops and exits 1, leaving its requests to be resumed",
    )
    wipe_image: str = Field(default="wipe", description="image a wipe boots, unless named")
    image_url: str | None = Field(
        default=None,
        description="URL template for Redfish virtual media, e.g. "
        "https://images.example/{image}.iso; unset: network boot (PXE) for every host",
    )

    executor: Literal["native", "ansible"] = Field(
        default="native",
        description="how a batch's hosts are acted on: native (in-process, host by host) "
        "or ansible (the action's playbook, --limit to the batch, in one ansible process "
        "per request)",
    )
    forks: int = Field(
        default=50, ge=1, le=500, description="ansible forks per batch (--executor ansible)"
    )
    action_playbooks: Path | None = Field(
        default=None,
        description="directory of <action>.yml playbooks to use instead of the "
        "collection's maas_lib.fleet.<action> (--executor ansible)",
    )
    allow_ansible_vars: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="ansible_* host vars from the database that hooks and action "
        "playbooks honour (e.g. ansible_host, ansible_user); by default none, so whoever "
        "can write the database cannot choose a connection or an interpreter that runs on "
        "the scheduler host",
    )

    @field_validator("allow_ansible_vars")
    @classmethod
    def _ansible_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"ansible_\w{1,100}", name, flags=re.ASCII):
                raise ValueError(f"{name!r} is not an ansible_* variable name")
        return v

    @field_validator("action_playbooks")
    @classmethod
    def _directory(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_dir():
            raise ValueError(f"not a directory: {v}")
        return v

    @field_validator("image_url")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "{image}" not in v or not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL containing {{image}} (got {v!r})")
        return v

    @property
    def heartbeat_interval(self) -> float:
        return self.claim_ttl / 3
