"""Pydantic models and state enums shared by the store, the API and the front ends."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from maas_lib.access.models import check_name

# The enums and limits live in a module without pydantic (`maasctl --help` needs them);
# re-exported here, where most callers look for them.
from maas_lib.enums import (  # noqa: F401
    IMAGE_ACTIONS,
    IN_FLIGHT_REQUEST_STATES,
    MAX_PAUSE_S,
    MAX_POLICY_HOSTS,
    TERMINAL_REQUEST_STATES,
    Action,
    BmcProtocol,
    HostStatus,
    HostTaskState,
    OverlapMode,
    RequestState,
)

_AMOUNT_RE = re.compile(r"^\s*([0-9]+)\s*(%?)\s*$", re.ASCII)  # no other script's digits


class Amount(BaseModel, defer_build=True):
    """A count of hosts given either absolutely (``"5"``) or as a share (``"25%"``)."""

    model_config = ConfigDict(frozen=True)

    value: int = Field(ge=0)
    percent: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("expected N or N%")
        if isinstance(data, int):
            if data < 0:
                raise ValueError(f"must not be negative (got {data})")
            return {"value": data, "percent": False}
        if isinstance(data, str):
            m = _AMOUNT_RE.match(data)
            if not m:
                raise ValueError(f"expected N or N% with N a whole number >= 0 (got {data!r})")
            return {"value": int(m.group(1)), "percent": bool(m.group(2))}
        return data

    @model_serializer
    def _serialize(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    def ceil_of(self, total: int) -> int:
        """Hosts this amount stands for out of `total`, rounding a share up."""
        if not self.percent:
            return self.value
        return math.ceil(total * self.value / 100)

    def floor_of(self, total: int) -> int:
        """Hosts this amount stands for out of `total`, rounding a share down."""
        if not self.percent:
            return self.value
        return (total * self.value) // 100


def _check_share(amount: Amount | None, what: str, *, allow_zero: bool) -> Amount | None:
    if amount is None:
        return None
    if amount.percent and amount.value > 100:
        raise ValueError(f"{what} cannot exceed 100% (got {amount})")
    if not amount.percent and amount.value > MAX_POLICY_HOSTS:
        raise ValueError(f"{what} cannot exceed {MAX_POLICY_HOSTS} hosts (got {amount})")
    if amount.value == 0 and not allow_zero:
        raise ValueError(f"{what} must be at least 1 (got {amount})")
    return amount


class BatchPolicy(BaseModel, defer_build=True):
    """How a request's hosts are rolled out: batches, failure threshold, budgets."""

    model_config = ConfigDict(extra="forbid")

    batch_size: Amount = Field(
        default_factory=lambda: Amount.model_validate("10%"),
        description=f"hosts per batch: N (1-{MAX_POLICY_HOSTS}) or N% (1-100%)",
    )
    max_failures: Amount = Field(
        default_factory=lambda: Amount.model_validate("5%"),
        description=f"failed hosts tolerated before no further batch starts: N "
        f"(0-{MAX_POLICY_HOSTS}) or N% (0-100%)",
    )
    max_unavailable: Amount | None = Field(
        default=None,
        description=f"cap on each pool's hosts down at once, across requests: N "
        f"(1-{MAX_POLICY_HOSTS}) or N% (1-100%)",
    )
    canary: int = Field(
        default=0,
        ge=0,
        le=MAX_POLICY_HOSTS,
        description=f"hosts in a first, canary batch (0-{MAX_POLICY_HOSTS}; at most the "
        "request's hosts)",
    )
    pause: float = Field(
        default=0.0,
        ge=0,
        le=MAX_PAUSE_S,
        allow_inf_nan=False,
        description=f"seconds to wait between batches (0-{MAX_PAUSE_S:.0f})",
    )
    on_overlap: OverlapMode = OverlapMode.DROP
    _stored_problem: str | None = PrivateAttr(default=None)

    @property
    def stored_problem(self) -> str | None:
        """Why a policy read back by `from_stored` fails today's checks; None if it passes."""
        return self._stored_problem

    @classmethod
    def from_stored(cls, text: str | bytes) -> BatchPolicy:
        """A stored request's policy. A row written by an older version, or edited by hand,
        may fail today's checks: it still loads (readers show the request; an unusable field
        reads as its default) and `stored_problem` says why, so the scheduler fails that
        request alone instead of stopping."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "policy"
            problem = f"{where}: {err['msg'].removeprefix('Value error, ')}"
            if "input" in err and err["type"] not in ("value_error", "missing"):
                got = repr(err["input"])
                problem += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        fields: dict[str, Any] = {}
        for name, value in (data if isinstance(data, dict) else {}).items():
            if name not in cls.model_fields:
                continue
            try:
                fields[name] = getattr(cls.model_validate({name: value}), name)
            except ValidationError:
                continue  # unusable: the default stands in (the request fails anyway)
        policy = cls.model_construct(**fields)
        policy._stored_problem = problem
        return policy

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: Amount) -> Amount:
        return _check_share(v, "batch size", allow_zero=False)  # type: ignore[return-value]

    @field_validator("max_failures")
    @classmethod
    def _max_failures(cls, v: Amount) -> Amount:
        return _check_share(v, "max failures", allow_zero=True)  # type: ignore[return-value]

    @field_validator("max_unavailable")
    @classmethod
    def _max_unavailable(cls, v: Amount | None) -> Amount | None:
        return _check_share(v, "max unavailable", allow_zero=False)


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]*$")
#: Host and pool names: at most as long as a DNS name.
MAX_NAME_LEN = 253
_CRED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: A Redfish resource Id as one path segment (no '/', '?', '#', '%' or whitespace).
_SYSTEM_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:~@+=-]*$")
SYSTEMS_PREFIX = "/redfish/v1/Systems/"


def redfish_system_path(value: str) -> str:
    """`/redfish/v1/Systems/<id>` from a Systems member path or a bare id; anything else
    (a Chassis or Manager path, the collection itself, a URL) is refused: acting on a
    chassis would read or switch the wrong resource's power."""
    text = value.strip()
    ident = text[len(SYSTEMS_PREFIX) :].rstrip("/") if text.startswith(SYSTEMS_PREFIX) else text
    if not _SYSTEM_ID_RE.match(ident) or ident in (".", ".."):
        raise ValueError(
            "must be a Redfish Systems member path (/redfish/v1/Systems/<id>) or a bare "
            f"system id (got {value!r})"
        )
    return SYSTEMS_PREFIX + ident


_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def check_bmc_address(value: str) -> str:
    """Accept an IP address, a DNS name, or an http(s) URL (Redfish); reject the rest."""
    value = value.strip()
    if value.startswith(("https://", "http://")):
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"URL has no host (got {value!r})")
        check_bmc_address(parts.hostname)
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"URL has an invalid port (got {value!r})") from exc
        return value
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value) or value.replace(".", "").isdigit():
        raise ValueError(f"not an IP address, DNS name or http(s) URL (got {value!r})")
    return value


class HostSpec(BaseModel, defer_build=True):
    """A host as declared by an inventory: where its BMC is and how to reach it.

    Only the credential *name* is kept; the secret is resolved when a BMC is contacted.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    pool: str
    rack: str | None = None
    bmc_address: str
    bmc_port: int | None = Field(default=None, ge=1, le=65535)
    bmc_protocol: BmcProtocol | None = None
    bmc_system: str | None = None
    bmc_credential: str = "default"
    bmc_tls_ca: str | None = None
    bmc_tls_verify: bool = True
    bmc_fallback_protocol: BmcProtocol | None = None
    bmc_fallback_address: str | None = None
    bmc_fallback_port: int | None = Field(default=None, ge=1, le=65535)
    hw_model: str | None = None
    bmc_vendor: str | None = None
    #: The host's other inventory vars (secret-looking ones are never kept): what hooks see.
    vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("vars", mode="before")
    @classmethod
    def _vars(cls, v: Any) -> Any:
        if v is None:
            return {}
        return json.loads(v) if isinstance(v, str) else v

    @field_validator("name", "pool")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > MAX_NAME_LEN:  # a DNS name's limit
            raise ValueError(f"longer than {MAX_NAME_LEN} characters (got {len(v)})")
        if not _NAME_RE.fullmatch(v):  # fullmatch: `$` would let a trailing newline in
            raise ValueError(f"not a valid name (got {v!r})")
        return v

    @field_validator("bmc_credential")
    @classmethod
    def _credential(cls, v: str) -> str:
        if not _CRED_RE.match(v):
            raise ValueError(f"must be letters, digits, '-' or '_' (got {v!r})")
        return v

    @field_validator("bmc_system")
    @classmethod
    def _system(cls, v: str | None) -> str | None:
        return None if v is None else redfish_system_path(v)

    @field_validator("bmc_address", "bmc_fallback_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else check_bmc_address(v)

    @model_validator(mode="after")
    def _protocols(self) -> HostSpec:
        is_url = self.bmc_address.startswith(("https://", "http://"))
        if self.bmc_protocol is None:
            self.bmc_protocol = BmcProtocol.REDFISH if is_url else BmcProtocol.IPMI
        elif self.bmc_protocol is BmcProtocol.IPMI and is_url:
            raise ValueError("bmc_address: an ipmi BMC takes an IP address or DNS name, not a URL")
        if self.bmc_fallback_protocol is not None and self.bmc_fallback_address is None:
            raise ValueError("bmc_fallback_address: required when bmc_fallback_protocol is set")
        if self.bmc_fallback_address is not None and self.bmc_fallback_protocol is None:
            fb_url = self.bmc_fallback_address.startswith(("https://", "http://"))
            self.bmc_fallback_protocol = BmcProtocol.REDFISH if fb_url else BmcProtocol.IPMI
        return self


class PoolSpec(BaseModel, defer_build=True):
    """A pool of hosts and its standing disruption budget, if the inventory declares one."""

    name: str
    max_unavailable: Amount | None = None
    #: Teams owning the pool (inventory var `pool_owner`; `maasctl pools grant`).
    owners: list[str] = Field(default_factory=list)

    @field_validator("max_unavailable")
    @classmethod
    def _max_unavailable(cls, v: Amount | None) -> Amount | None:
        return _check_share(v, "pool_max_unavailable", allow_zero=False)

    @field_validator("owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        return sorted({check_name(t, "pool_owner") for t in v})


class HostRecord(HostSpec):
    """A registered host, as the store returns it."""

    model_config = ConfigDict(extra="ignore")

    status: HostStatus = HostStatus.ACTIVE
    status_reason: str | None = None
    created: str
    updated: str

    @field_validator("bmc_system")
    @classmethod
    def _system(cls, v: str | None) -> str | None:
        # Rows imported before bmc_system was checked still load (and still fail at the
        # BMC, as they did); a bare id is resolved as an import would now store it.
        try:
            return None if v is None else redfish_system_path(v)
        except ValueError:
            return v

    def public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"name", "vars"})
        return {"host": self.name, **data}


class ImportResult(BaseModel, defer_build=True):
    added: int
    updated: int
    hosts: int
    pools: list[PoolSpec]


class SubmitResult(BaseModel, defer_build=True):
    id: int
    state: RequestState
    hosts: int


class RequestOptions(BaseModel, defer_build=True):
    """Per-request extras beyond the batch policy: playbooks run around each host's action."""

    model_config = ConfigDict(extra="forbid")

    pre_hook: str | None = None
    post_hook: str | None = None


class RequestHost(BaseModel, defer_build=True):
    host: str
    state: HostTaskState
    reason: str | None = None
    error_class: str | None = None
    batch: int | None = None
    holder: int | None = None  # the request that holds (or held) this host, if it overlapped


class RequestSummary(BaseModel, defer_build=True):
    id: int
    action: Action
    state: RequestState
    submitted_by: str
    created: str
    updated: str
    image: str | None = None
    host_count: int
    cancel_requested: bool = False
    counts: dict[str, int] = Field(default_factory=dict)


class RequestStatus(RequestSummary):
    os_user: str
    policy: BatchPolicy
    options: RequestOptions = Field(default_factory=RequestOptions)
    patterns: list[str]
    reason: str | None = None
    started: str | None = None
    finished: str | None = None
    claimed_by: str | None = None
    hosts: list[RequestHost]


class Lease(BaseModel, defer_build=True):
    """A host held by an in-flight request."""

    host: str
    request_id: int
    action: Action
    pool: str
    holder: str
    acquired: str


class InstallReport(BaseModel, defer_build=True):
    """What an installer reported through the install-completion path."""

    id: int
    host: str
    image: str
    outcome: str  # succeeded | failed
    reason: str | None = None
    request_id: int | None = None
    expected_image: str | None = None
    reported: str
