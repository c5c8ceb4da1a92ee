"""BMC timeouts and limits as plain data: each setting's default, range and meaning.

`BmcSettings` (pydantic, `maas_lib.bmc.settings`) declares its fields from `FIELDS`, so
the defaults and ranges live here once. `BmcValues` carries the same settings without
pydantic, for `maasctl bmc status`, whose start-up is most of its run (importing pydantic
alone takes longer than reading the power of a few BMCs): `BmcValues.checked` returns
None for any value outside `FIELDS`, and the caller then builds `BmcSettings`, whose
error names the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limit:
    """One setting: its type, default, range (pydantic's gt/ge/le) and description."""

    kind: type[int] | type[float]
    default: float | int | None
    description: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def allows(self, value: Any) -> bool:
        """Whether `value` is certainly valid: a finite number of this setting's type
        (an int is a valid float) inside the range, or None where that is the default.
        Anything else is left to `BmcSettings` to accept, coerce or refuse."""
        if value is None:
            return self.default is None
        if isinstance(value, bool) or not isinstance(value, self.kind | int):
            return False
        if not math.isfinite(value):
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.le is None or value <= self.le)
        )


FIELDS: dict[str, Limit] = {
    "timeout": Limit(
        float,
        10.0,
        "seconds a BMC may take to answer one request (an HTTP read, an IPMI exchange); a "
        "BMC that answers slower is `timeout`",
        gt=0,
        le=3600,
    ),
    "connect_timeout": Limit(
        float,
        5.0,
        "seconds to open a connection to a Redfish BMC; a BMC that refuses or is not there "
        "is `unreachable` within it",
        gt=0,
        le=3600,
    ),
    "deadline": Limit(
        float,
        None,
        "seconds for one BMC operation, all its requests together (login, service root, the "
        "system, a task monitor, Retry-After waits); default connect_timeout + 4 x timeout",
        gt=0,
        le=86400,
    ),
    "power_timeout": Limit(
        float,
        300.0,
        "seconds (up to 3600) for a BMC to reach a requested power state",
        gt=0,
        le=3600,
    ),
    "poll_interval": Limit(
        float, 1.0, "longest pause (up to 60 s) between power-state polls", gt=0, le=60
    ),
    "retries": Limit(int, 2, "extra attempts (0-10) for transient errors", ge=0, le=10),
    "concurrency": Limit(int, 64, "BMC calls in flight at once, fleet-wide", ge=1, le=4096),
    "endpoint_concurrency": Limit(
        int,
        4,
        "BMC calls in flight at once to one endpoint (address and port)",
        ge=1,
        le=1024,
    ),
}


class OperationDeadline:
    """`operation_deadline`, for `BmcSettings` and `BmcValues` alike (both have the
    fields it reads; declaring them here would add them to pydantic's model)."""

    @property
    def operation_deadline(self: Any) -> float:
        """Seconds one BMC operation may take in all (`deadline`, or its default)."""
        if self.deadline is not None:
            return float(self.deadline)
        return float(self.connect_timeout + 4 * self.timeout)


@dataclass(frozen=True)
class BmcValues(OperationDeadline):
    """`BmcSettings`' fields, checked against `FIELDS`, without pydantic."""

    timeout: float = FIELDS["timeout"].default  # type: ignore[assignment]
    connect_timeout: float = FIELDS["connect_timeout"].default  # type: ignore[assignment]
    deadline: float | None = FIELDS["deadline"].default
    power_timeout: float = FIELDS["power_timeout"].default  # type: ignore[assignment]
    poll_interval: float = FIELDS["poll_interval"].default  # type: ignore[assignment]
    retries: int = FIELDS["retries"].default  # type: ignore[assignment]
    concurrency: int = FIELDS["concurrency"].default  # type: ignore[assignment]
    endpoint_concurrency: int = FIELDS["endpoint_concurrency"].default  # type: ignore[assignment]

    @classmethod
    def checked(cls, **values: Any) -> BmcValues | None:
        """The settings if every given value is one `FIELDS` allows (unknown names and
        anything doubtful: None, for `BmcSettings` to judge and name)."""
        if not all(name in FIELDS and FIELDS[name].allows(v) for name, v in values.items()):
            return None
        # As pydantic stores them: a float setting given as an int is a float.
        return cls(**{n: FIELDS[n].kind(v) if v is not None else v for n, v in values.items()})
