"""The job-queue store interface, by role.

`Store` is five small interfaces a backend implements together: `CatalogStore` (hosts,
pools, install targets and reports), `QueueStore` (requests, workers and claims, events),
`LeaseStore` (who holds which host), `StepStore` (host tasks and steps as they happen),
`StatsStore` (telemetry) and `AccessStore` (API tokens, pool owners, the audit log,
idempotent submissions). Every backend (SQLite, PostgreSQL) implements `Store`.
Callers never see SQL: the API layer (`maas_lib.fleet`) speaks in models, and a backend
owns its transactions. Every write is one short transaction so several processes (CLI
invocations, schedulers) can share one database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maas_lib.access.models import AuditEntry, AuditRecord, Outcome, PoolGrant, TokenInfo
from maas_lib.models import (
    Action,
    BatchPolicy,
    HostRecord,
    HostSpec,
    HostStatus,
    HostTaskState,
    InstallReport,
    Lease,
    PoolSpec,
    RequestOptions,
    RequestState,
    RequestStatus,
    RequestSummary,
)
from maas_lib.patterns import PatternMatch
from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram, WorkerInfo


@dataclass(frozen=True)
class NewRequest:
    """A validated submission, ready to be written."""

    action: Action
    policy: BatchPolicy
    patterns: list[str]
    hosts: list[str]
    submitted_by: str
    os_user: str
    image: str | None = None
    options: RequestOptions = field(default_factory=RequestOptions)


@dataclass(frozen=True)
class IdempotencyKey:
    """An API submission's `Idempotency-Key`, scoped to its principal, with the hash of the
    submission it was first used for."""

    principal: str
    key: str
    body_hash: str


#: A submission's authorization, given each of its hosts' pool (a host no longer
#: registered is left out) and those pools' grants, as the store holds them: raises (e.g.
#: `AccessDenied`) to refuse. The policy is the caller's (`maas_lib.access`).
Authorize = Callable[[dict[str, str], list[PoolGrant]], None]


@dataclass(frozen=True)
class BeginResult:
    """Outcome of starting hosts' tasks: which started, and why the others cannot yet."""

    started: dict[str, int]  # host → host task id
    blocked: dict[str, str]  # host → reason (held by another request, or a pool budget)


@dataclass(frozen=True)
class ClaimState:
    """What a worker re-reads between batches: has the request been cancelled or taken?"""

    state: RequestState
    cancel_requested: bool
    claimed_by: str | None


@dataclass(frozen=True)
class Event:
    id: int
    ts: str
    kind: str
    request_id: int | None
    host: str | None
    actor: str | None
    message: str
    data: dict[str, Any]


class CatalogStore(ABC):
    """Hosts, their pools, and what each should install on its next network boot
    (the install-completion path)."""

    @abstractmethod
    def upsert_hosts(
        self, hosts: Sequence[HostSpec], pools: Sequence[PoolSpec], *, actor: str
    ) -> tuple[int, int]:
        """Insert or update hosts and pools in one transaction; return (added, updated).

        A host's standing (`status`) is never changed by a re-import."""

    @abstractmethod
    def list_hosts(self, pool: str | None = None) -> list[HostRecord]: ...

    @abstractmethod
    def get_host(self, name: str) -> HostRecord: ...

    @abstractmethod
    def get_hosts(self, names: Sequence[str]) -> list[HostRecord]:
        """The named hosts in the order given (unknown names are left out)."""

    @abstractmethod
    def set_host_status(
        self, name: str, status: HostStatus, reason: str | None, *, actor: str
    ) -> HostStatus:
        """Change a host's standing; return the previous one."""

    @abstractmethod
    def list_pools(self) -> list[PoolSpec]: ...

    @abstractmethod
    def match_hosts(self, names: Sequence[str], globs: Sequence[str]) -> PatternMatch:
        """Resolve exact names and shell-style globs against registered hosts."""

    @abstractmethod
    def set_install_target(self, host: str, image: str, request_id: int | None) -> None:
        """Record the image `host` should install on its next network boot."""

    @abstractmethod
    def install_target(self, host: str) -> tuple[str, int | None] | None: ...

    @abstractmethod
    def add_install_report(self, host: str, image: str, reason: str | None) -> InstallReport:
        """Record an installer's report and clear the host's install target, atomically."""

    @abstractmethod
    def last_install_report_id(self) -> int:
        """The newest install report's id (0 if none): later reports have larger ids."""

    @abstractmethod
    def install_reports(
        self, host: str | None = None, after_id: int = 0
    ) -> list[InstallReport]: ...


class QueueStore(ABC):
    """Requests from submission to their end, the workers that claim and run them, and the
    events they leave."""

    @abstractmethod
    def create_request(self, request: NewRequest) -> int:
        """Write a request and its hosts (state pending) in one transaction; return its id."""

    @abstractmethod
    def get_request(self, request_id: int) -> RequestStatus: ...

    @abstractmethod
    def list_requests(
        self, states: Sequence[RequestState] | None = None, limit: int | None = None
    ) -> list[RequestSummary]:
        """Requests, newest first."""

    @abstractmethod
    def cancel_request(self, request_id: int, *, actor: str) -> RequestState:
        """Cancel an accepted request at once, or flag a running one; return its state."""

    @abstractmethod
    def heartbeat(self, worker: str, *, ttl: float) -> None:
        """Record that `worker` is alive, and extend its claims by `ttl` seconds."""

    @abstractmethod
    def retire_worker(self, worker: str) -> None:
        """A worker stopped cleanly: it no longer counts as alive (or as a dead one)."""

    @abstractmethod
    def list_workers(self, ttl: float = 30.0) -> list[WorkerInfo]:
        """Every registered worker, by id: its heartbeat's age, `alive` if that is at most
        `ttl` seconds, the running requests it has claimed and how many hosts it leases."""

    @abstractmethod
    def claim_request(self, worker: str, *, ttl: float, resume_only: bool = False) -> int | None:
        """Atomically claim the oldest request no live worker holds, for `ttl` seconds.

        Candidates are accepted requests, and running ones whose claim expired (their
        worker died): those are resumed, and their host leases pass to `worker`. An
        accepted request becomes running and, in the same transaction, its overlaps are
        resolved in acceptance order (see `blockers`): each blocked host is `dropped`
        naming its holder, or left pending as waiting for it (`on_overlap: wait`).
        `resume_only`: only running requests whose worker died. Returns the id, or None."""

    @abstractmethod
    def release_claim(self, request_id: int, worker: str) -> None: ...

    @abstractmethod
    def claim_state(self, request_id: int) -> ClaimState: ...

    @abstractmethod
    def host_counts(self, request_id: int, batch: int | None = None) -> dict[str, int]:
        """Hosts of the request (or of one batch) by state; cheap, for the scheduler loop."""

    @abstractmethod
    def pending_hosts(self, request_id: int) -> list[str]:
        """The request's pending hosts in request order."""

    @abstractmethod
    def set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        """Note, on pending hosts, which request each waits for (`on_overlap: wait`)."""

    @abstractmethod
    def cancel_pending(self, request_id: int, reason: str) -> int:
        """Every host still pending in the request becomes `cancelled` with `reason`."""

    @abstractmethod
    def record_batch(self, request_id: int, idx: int, size: int, state: str) -> None:
        """Write or update one batch's row (state running → done/stopped)."""

    @abstractmethod
    def finish_request(
        self,
        request_id: int,
        worker: str,
        state: RequestState,
        reason: str | None,
        *,
        quarantine_running: bool = False,
    ) -> None:
        """End a request: its final state, no claim, no leases, no host left pending.

        `quarantine_running`: hosts whose task was cut short (still `running`) are
        quarantined — a wipe interrupted and then cancelled may have left data behind."""

    @abstractmethod
    def events(self, request_id: int | None = None, limit: int = 100) -> list[Event]: ...


class LeaseStore(ABC):
    """Which request holds which host: overlaps in acceptance order, disruption budgets,
    leases."""

    @abstractmethod
    def blockers(self, hosts: Sequence[str], request_id: int | None = None) -> dict[str, int]:
        """For each of `hosts` another request stands in the way of: that request's id.

        A host is blocked for request R by a lease of another request, or by an *older*
        in-flight request that still has it pending or running (acceptance order: the
        older request gets it first). `request_id=None` means a request newer than all."""

    @abstractmethod
    def begin_hosts(
        self,
        request_id: int,
        hosts: Sequence[str],
        *,
        batch: int,
        action: str,
        holder: str,
        limits: Mapping[str, int],
    ) -> BeginResult:
        """Start the tasks of those `hosts` that may go down now, atomically.

        In one transaction, for each host in order: skip it if `blockers` names another
        request; lease it unless this request already does — unless its pool already has
        `limits[pool]` hosts leased by *any* request (a disruption budget); then write a
        new host task (attempt n+1) and mark the host running in `batch`."""

    @abstractmethod
    def inflight(self) -> list[Lease]: ...


class StepStore(ABC):
    """Host tasks and their steps, written as they happen: the crash-safety record."""

    @abstractmethod
    def start_step(self, task_id: int, step: str) -> int:
        """Written *before* the BMC is touched; returns the step id."""

    @abstractmethod
    def end_step(
        self,
        step_id: int,
        outcome: str,
        duration_s: float,
        *,
        error_class: str | None = None,
        error: str | None = None,
        via: str | None = None,
    ) -> None: ...

    @abstractmethod
    def discard_step(self, step_id: int) -> None:
        """Take back a step whose start was written but which did not run after all (the
        Ansible executor learns that a task was skipped only after it started)."""

    @abstractmethod
    def end_task(
        self,
        task_id: int,
        state: HostTaskState,
        *,
        error_class: str | None = None,
        reason: str | None = None,
        via: str | None = None,
        host_status: HostStatus | None = None,
        holder: str | None = None,
    ) -> None:
        """A host's action ends: the task row, the host's state in its request, its lease
        released, and (decommission, quarantine) its standing — in one transaction.

        With `holder` (the worker), only the task row is written if that worker no longer
        holds the request's claim: the host and its lease belong to the new holder."""

    @abstractmethod
    def interrupt_task(self, task_id: int) -> None:
        """A worker stopping cleanly leaves a task for the next one: the task is
        `interrupted`, the host stays running in its request and keeps its lease."""

    @abstractmethod
    def interrupt_open_steps(self, request_id: int) -> list[tuple[str, str]]:
        """After a crash: mark steps (and their tasks) still `running` as `interrupted`, so
        only they may be retried, as a new attempt; return (host, step) of each."""

    @abstractmethod
    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]: ...


class StatsStore(ABC):
    """Telemetry computed in the database from the tasks and steps recorded."""

    @abstractmethod
    def stats(self, since: str | None, action: str | None, pool: str | None) -> Stats:
        """Per action: requests, host outcomes and failure classes (also by pool, hardware
        model, BMC vendor), step runtimes and queue waits; and the fleet now. Computed in
        the database. `since` is an ISO UTC timestamp."""

    @abstractmethod
    def step_histograms(self, since: str | None, buckets: Sequence[float]) -> list[StepHistogram]:
        """Step durations per (action, step) in cumulative buckets (Prometheus style)."""

    @abstractmethod
    def outcome_series(
        self, since: str | None, bucket_s: int, action: str | None = None
    ) -> list[OutcomePoint]:
        """Hosts' task outcomes per action per `bucket_s`-second bucket, oldest first."""


class AccessStore(ABC):
    """Access control's tables: API tokens (only their SHA-256), pool owners, the audit
    log and idempotency keys. Every mutating method writes its audit record (principal
    `actor`) in the same transaction as the change."""

    @abstractmethod
    def add_token(self, token: TokenInfo, token_hash: str, *, actor: str) -> None:
        """Store a new token; `InputError` if the name is taken (revoked tokens keep
        theirs)."""

    @abstractmethod
    def token_by_hash(self, token_hash: str) -> TokenInfo | None: ...

    @abstractmethod
    def list_tokens(self) -> list[TokenInfo]:
        """Every token, by name."""

    @abstractmethod
    def revoke_token(self, name: str, *, actor: str) -> TokenInfo:
        """Revoke a token now (`NotFound` if unknown; revoking twice keeps the first time)."""

    @abstractmethod
    def touch_token(self, name: str, at: str) -> None:
        """Record the token's last use (callers throttle this: it is a write)."""

    @abstractmethod
    def grant_pool(self, grant: PoolGrant, *, actor: str) -> None:
        """Give a team ownership of a registered pool (`NotFound` for an unknown pool),
        or change whether it includes destructive actions."""

    @abstractmethod
    def revoke_pool(self, team: str, pool: str, *, actor: str) -> None:
        """Take a team's ownership of a pool away (`NotFound` if it had none)."""

    @abstractmethod
    def pool_grants(self, pools: Sequence[str] | None = None) -> list[PoolGrant]:
        """Ownership grants (of `pools` only, if given), by pool then team."""

    @abstractmethod
    def host_pools(self, hosts: Sequence[str]) -> dict[str, str]:
        """Each registered host's pool (unknown names are left out)."""

    @abstractmethod
    def host_pools_and_grants(self, hosts: Sequence[str]) -> tuple[dict[str, str], list[PoolGrant]]:
        """`host_pools(hosts)` and the grants of those pools (by pool then team), read
        together: PostgreSQL sends both in one round trip inside a batched write."""

    @abstractmethod
    def request_pools(self, request_id: int) -> tuple[str, list[str]]:
        """(submitted_by, the pools of the request's hosts) (`NotFound` for an unknown id)."""

    @abstractmethod
    def add_audit(self, entry: AuditEntry) -> int:
        """Append an audit record (its own transaction); return its id."""

    @abstractmethod
    def audit(
        self,
        *,
        principal: str | None = None,
        decision: Outcome | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditRecord]:
        """Audit records, newest first."""

    @abstractmethod
    def create_request_once(
        self,
        request: NewRequest,
        idempotency: IdempotencyKey | None = None,
        *,
        authorize: Authorize | None = None,
    ) -> tuple[int, bool]:
        """Write the request as `create_request` does, with its audit record (verb
        `submit`, principal `request.submitted_by`) and, given `idempotency`, the key —
        all in one transaction. Returns (id, True). If the principal used the key before:
        with the same body hash, (the first request's id, False) and nothing written;
        with another, `IdempotencyConflict`. `authorize` is given the hosts' pools and
        grants read before the transaction; the request is written only if no host's
        pool and no pool's grants changed in between (else they are read and `authorize`
        is called again). An exception it raises writes nothing. The key is checked when
        the request is written, after `authorize`: a caller that answers a retry whoever
        may submit now reads it first (`idempotent_request`)."""

    @abstractmethod
    def idempotent_request(self, principal: str, key: str) -> tuple[int, str] | None:
        """(request id, body hash) the principal's key stands for, if it was used."""


class Store(CatalogStore, QueueStore, LeaseStore, StepStore, StatsStore, AccessStore):
    """The job-queue tables behind one interface: every role, plus the store's lifecycle.

    Code that needs one role may take that role's type (e.g. `StatsStore`); a backend
    implements them all."""

    url: str

    def child_url(self) -> str:
        """The URL a child process (an executor's Ansible module) opens this store with:
        `url`, with any password left in (never log it)."""
        return self.url

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def schema_version(self) -> int: ...
