"""`BmcSettings`: BMC timeouts and limits, validated (pydantic); fields from `limits.FIELDS`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from maas_lib.bmc.limits import FIELDS, OperationDeadline


def _field(name: str) -> Any:
    limit = FIELDS[name]
    return Field(
        default=limit.default,
        gt=limit.gt,
        ge=limit.ge,
        le=limit.le,
        description=limit.description,
    )


class BmcSettings(OperationDeadline, BaseModel, defer_build=True):
    """Timeouts and limits for BMC work."""

    timeout: float = _field("timeout")
    connect_timeout: float = _field("connect_timeout")
    deadline: float | None = _field("deadline")
    power_timeout: float = _field("power_timeout")
    poll_interval: float = _field("poll_interval")
    retries: int = _field("retries")
    concurrency: int = _field("concurrency")
    endpoint_concurrency: int = _field("endpoint_concurrency")
