"""The figures telemetry reports, as typed objects: what `maasctl stats` prints, what the
Python API returns, and what the metrics and the HTML report are built from."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field


class Runtime(BaseModel, defer_build=True):
    """A distribution of durations in seconds (nearest-rank percentiles)."""

    count: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None


class StepStats(Runtime):
    step: str
    failed: int = 0  # outcomes other than succeeded (failed, timeout, interrupted)


class Outcomes(BaseModel, defer_build=True):
    """Hosts whose task ended, and how: the success rate's numerator and denominator."""

    succeeded: int = 0
    failed: int = 0
    failures_by_class: dict[str, int] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hosts(self) -> int:
        return self.succeeded + self.failed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float | None:
        return None if not self.hosts else round(self.succeeded / self.hosts, 4)


class Breakdown(Outcomes):
    value: str


class ActionStats(Outcomes):
    action: str
    requests: int = 0
    requests_by_state: dict[str, int] = Field(default_factory=dict)
    queue_wait: Runtime = Field(default_factory=Runtime)
    steps: list[StepStats] = Field(default_factory=list)
    by_pool: list[Breakdown] = Field(default_factory=list)
    by_hw_model: list[Breakdown] = Field(default_factory=list)
    by_bmc_vendor: list[Breakdown] = Field(default_factory=list)


class WorkerState(BaseModel, defer_build=True):
    id: str
    hostname: str
    pid: int
    heartbeat: str
    heartbeat_age_s: float


class WorkerInfo(WorkerState):
    """A registered scheduler worker (`Store.list_workers`): is it alive, what does it hold."""

    started: str
    alive: bool  # heartbeat_age_s <= the ttl asked about
    requests: list[int] = Field(default_factory=list)  # running requests it has claimed
    hosts_leased: int = 0  # host leases it holds


class FleetNow(BaseModel, defer_build=True):
    """The fleet at this moment (not limited to the stats window)."""

    hosts: int
    hosts_by_status: dict[str, int]
    hosts_in_flight: int
    requests_by_state: dict[str, int]
    workers: list[WorkerState]


class Stats(BaseModel, defer_build=True):
    since: str | None = None
    action: str | None = None
    pool: str | None = None
    actions: list[ActionStats]
    fleet: FleetNow


class StepHistogram(BaseModel, defer_build=True):
    """Step durations of one (action, step) as Prometheus buckets: `counts[i]` steps took
    at most `buckets[i]` seconds (cumulative); `count` and `sum_s` over all of them."""

    action: str
    step: str
    buckets: list[float]
    counts: list[int]
    count: int
    sum_s: float


class OutcomePoint(BaseModel, defer_build=True):
    """Hosts of one action whose task ended in one time bucket, by outcome."""

    action: str
    bucket: str  # ISO UTC start of the bucket
    succeeded: int
    failed: int
