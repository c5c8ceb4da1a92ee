"""The report's data shaping: timelines, duration distributions, buckets and limits,
computed from what `Fleet` returns; no drawing, no HTML (`maas_lib.telemetry.report`).

`FleetReads` names the reads the report makes; `maas_lib.fleet.Fleet` is one, passed in by
the layer above (telemetry imports nothing from `maas_lib.fleet`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from maas_lib.classes import StepOutcome
from maas_lib.models import Action, HostTaskState

if TYPE_CHECKING:
    from maas_lib.models import RequestStatus, RequestSummary
    from maas_lib.store import Event
    from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram


class FleetReads(Protocol):
    """What the report reads of a fleet (`maas_lib.fleet.Fleet` has each of these)."""

    def status(self, request_id: int) -> RequestStatus: ...

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]: ...

    def events(self, request_id: int | None = None, limit: int = 100) -> list[Event]: ...

    def requests(self, state: Any = None, limit: int | None = None) -> list[RequestSummary]: ...

    def stats(self, since: str | None = None) -> Stats: ...

    def outcome_series(self, since: str | None, bucket_s: int) -> list[OutcomePoint]: ...

    def step_histograms(
        self, since: str | None, buckets: Sequence[float]
    ) -> list[StepHistogram]: ...


#: Upper bounds (seconds) of the step-duration histogram's bins: five per decade from
#: 10 ms to 10,000 s (an overflow bin above the last is added).
HIST_BUCKETS: tuple[float, ...] = tuple(float(f"{10 ** (k / 5):.3g}") for k in range(-10, 21))


#: Hosts drawn in a `--request` timeline; larger requests show a sample of every batch.
MAX_TIMELINE_HOSTS = 150


#: Hosts drawn in each timeline of a window report, and how many requests get one.
WINDOW_TIMELINE_HOSTS = 60


LATEST_TIMELINES = 3


#: Requests listed in a window report's request table.
MAX_LISTED_REQUESTS = 50


#: Failed hosts listed in a request report's failure table.
MAX_LISTED_FAILURES = 50


#: Shown for a missing value (an en dash).
NA = "\u2013"


#: Window length (seconds) → success-rate bucket (seconds) and its name.
SERIES_BUCKETS: tuple[tuple[float, int, str], ...] = (
    (2 * 3600, 300, "5 minutes"),
    (3 * 86400, 3600, "hour"),
    (90 * 86400, 86400, "day"),
    (math.inf, 7 * 86400, "week"),
)


def parse_ts(value: str) -> datetime:
    """An ISO timestamp from the store as an aware UTC datetime."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def fmt_s(seconds: float | None) -> str:
    """A duration for people: 120 ms, 4.2 s, 3.5 min, 2.1 h."""
    if seconds is None:
        return NA
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _nearest_rank(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (as `Fleet.stats` computes them)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[rank - 1]


#: Known steps in the order they run (pre-hook first, post-hook last) …
STEP_ORDER: tuple[str, ...] = (
    "pre-hook",
    "soft-off",
    "set-install-target",
    "power-off",
    "boot-image",
    "power-on",
    "wait-install",
    "verify-image",
    "eject-media",
    "post-hook",
)


def step_order() -> dict[str, int]:
    """Every step name, in the order steps run (steps unknown here follow, as defined)."""
    from maas_lib.scheduler.steps import steps_for  # the BMC layer: when a report asks

    order = {name: i for i, name in enumerate(STEP_ORDER)}
    for action in Action:
        for step in steps_for(action):
            order.setdefault(step.name, len(order))
    return order


@dataclass
class Bar:
    step: str
    start: float  # seconds since the timeline's t0
    end: float
    outcome: str


@dataclass
class _Row:
    host: str
    batch: int | None
    state: str
    holder: int | None
    first_start: float | None = None
    wait: tuple[float, float] | None = None
    bars: list[Bar] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.state == HostTaskState.FAILED


@dataclass
class Timeline:
    status: RequestStatus
    t0: datetime
    span: float
    rows: list[_Row]
    batch_starts: dict[int, list[float]]
    batch_sizes: dict[int, int]
    batch_waits: dict[int, float]  # each batch's longest wait, over all its hosts
    hosts_in_batches: int
    not_started: dict[str, int]

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.hosts_in_batches


def _batch_events(events: Sequence[Event]) -> dict[int, list[datetime]]:
    """Each batch's start times (a resumed batch starts again), oldest first."""
    starts: dict[int, list[datetime]] = {}
    for ev in events:
        if ev.kind == "batch_started" and isinstance(ev.data.get("batch"), int):
            starts.setdefault(ev.data["batch"], []).append(parse_ts(ev.ts))
    for times in starts.values():
        times.sort()
    return starts


def _spread(items: Sequence[_Row], k: int) -> list[_Row]:
    """`k` of `items`, evenly spaced (first and last included), in their order."""
    n = len(items)
    if k >= n:
        return list(items)
    if k <= 0:
        return []
    if k == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


def _sample_rows(rows: list[_Row], limit: int) -> list[_Row]:
    """At most `limit` rows, every batch represented in proportion: within a batch, its
    failed hosts (up to a third of its share), the rest spread evenly over the order the
    hosts started in, so early, waiting and late hosts all show. Rows keep their order."""
    if len(rows) <= limit:
        return rows
    by_batch: dict[int | None, list[_Row]] = {}
    for row in rows:
        by_batch.setdefault(row.batch, []).append(row)
    # Water-fill the quotas: small batches take all they have, the rest share what's left.
    quota: dict[int | None, int] = {}
    open_batches = sorted(by_batch, key=lambda b: len(by_batch[b]))
    left = limit
    while open_batches:
        share = left // len(open_batches)
        b = open_batches[0]
        if len(by_batch[b]) <= share:
            quota[b] = len(by_batch[b])
            left -= quota[b]
            open_batches.pop(0)
            continue
        for k, b in enumerate(open_batches):
            quota[b] = share + (1 if k < left - share * len(open_batches) else 0)
        break
    chosen: set[int] = set()
    for b, group in by_batch.items():
        failed = [r for r in group if r.failed]
        picked = _spread(failed, min(len(failed), max(1, quota[b] // 3)) if quota[b] else 0)
        taken = {id(r) for r in picked}
        rest = [r for r in group if id(r) not in taken]
        picked += _spread(rest, quota[b] - len(picked))
        chosen.update(id(r) for r in picked)
    return [r for r in rows if id(r) in chosen]


def build_timeline(
    fleet: FleetReads,
    request_id: int,
    max_hosts: int,
    now: datetime,
    steps: Sequence[dict[str, Any]] | None = None,
) -> Timeline:
    """Rows, bars and batch starts of one request, in seconds since its first batch."""
    st = fleet.status(request_id)
    if steps is None:
        steps = fleet.steps(request_id)
    events = fleet.events(request_id, limit=max(1000, 8 * len(st.hosts) + 100))
    starts = _batch_events(events)

    times = [t for ts in starts.values() for t in ts]
    times += [parse_ts(s["started"]) for s in steps if s.get("started")]
    t0 = min(times) if times else parse_ts(st.started or st.created)

    def rel(when: datetime) -> float:
        return (when - t0).total_seconds()

    rows: dict[str, _Row] = {}
    not_started: dict[str, int] = {}
    sizes: dict[int, int] = {}
    for h in st.hosts:
        if h.batch is not None:
            sizes[h.batch] = sizes.get(h.batch, 0) + 1
        if h.batch is None:
            not_started[str(h.state)] = not_started.get(str(h.state), 0) + 1
            continue
        rows[h.host] = _Row(host=h.host, batch=h.batch, state=str(h.state), holder=h.holder)
    for s in steps:
        row = rows.get(s["host"])
        if row is None or not s.get("started"):
            continue
        begin = rel(parse_ts(s["started"]))
        if s.get("duration_s") is not None:
            end = begin + float(s["duration_s"])
        elif s.get("finished"):
            end = rel(parse_ts(s["finished"]))
        else:  # still running
            end = rel(now)
        row.bars.append(Bar(str(s["step"]), begin, max(end, begin), str(s["outcome"] or "")))
        if row.first_start is None or begin < row.first_start:
            row.first_start = begin

    batch_starts = {b: [rel(t) for t in ts] for b, ts in starts.items()}
    for row in rows.values():
        candidates = batch_starts.get(row.batch if row.batch is not None else -1, [])
        if row.first_start is None or not candidates:
            continue
        before = [t for t in candidates if t <= row.first_start]
        began = max(before) if before else min(candidates)
        if row.first_start > began:
            row.wait = (began, row.first_start)

    waits: dict[int, float] = {}
    for row in rows.values():
        if row.wait is not None and row.batch is not None:
            waits[row.batch] = max(waits.get(row.batch, 0.0), row.wait[1] - row.wait[0])
    ordered = sorted(
        rows.values(),
        key=lambda r: (
            r.batch if r.batch is not None else 1 << 30,
            r.first_start if r.first_start is not None else math.inf,
            r.host,
        ),
    )
    ends = [b.end for r in ordered for b in r.bars] + [
        t for ts in batch_starts.values() for t in ts
    ]
    return Timeline(
        status=st,
        t0=t0,
        span=max(ends, default=0.0),
        rows=_sample_rows(ordered, max_hosts),
        batch_starts=batch_starts,
        batch_sizes=sizes,
        batch_waits=waits,
        hosts_in_batches=len(ordered),
        not_started=not_started,
    )


@dataclass
class Dist:
    """One (action, step)'s durations as bins over HIST_BUCKETS, with its percentiles."""

    action: str
    step: str
    counts: list[int]  # per bin (non-cumulative); the last is the overflow bin
    n: int
    failed: int | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


def bin_edges(buckets: Sequence[float]) -> list[float]:
    return [buckets[0] / 2.5, *buckets, buckets[-1] * 2]


def dists_from_histograms(hists: Sequence[StepHistogram], stats: Stats) -> list[Dist]:
    per_step = {(a.action, s.step): s for a in stats.actions for s in a.steps}
    out = []
    for h in hists:
        if not h.count:
            continue
        cum = list(h.counts)
        counts = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
        counts.append(h.count - (cum[-1] if cum else 0))
        s = per_step.get((h.action, h.step))
        out.append(
            Dist(
                action=h.action,
                step=h.step,
                counts=counts,
                n=h.count,
                failed=None if s is None else s.failed,
                p50=None if s is None else s.p50_s,
                p95=None if s is None else s.p95_s,
                max=None if s is None else s.max_s,
            )
        )
    return out


def dists_from_steps(action: str, steps: Sequence[dict[str, Any]]) -> list[Dist]:
    durations: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for s in steps:
        if s.get("duration_s") is None:
            continue
        durations.setdefault(s["step"], []).append(float(s["duration_s"]))
        if s.get("outcome") != StepOutcome.SUCCEEDED:
            failed[s["step"]] = failed.get(s["step"], 0) + 1
    out = []
    for step, values in durations.items():
        values.sort()
        counts = [0] * (len(HIST_BUCKETS) + 1)
        for v in values:
            i = next((k for k, b in enumerate(HIST_BUCKETS) if v <= b), len(HIST_BUCKETS))
            counts[i] += 1
        out.append(
            Dist(
                action=action,
                step=step,
                counts=counts,
                n=len(values),
                failed=failed.get(step, 0),
                p50=_nearest_rank(values, 0.5),
                p95=_nearest_rank(values, 0.95),
                max=values[-1],
            )
        )
    return out


def series_bucket(span_s: float) -> tuple[int, str]:
    for limit, bucket, name in SERIES_BUCKETS:
        if span_s <= limit:
            return bucket, name
    return SERIES_BUCKETS[-1][1], SERIES_BUCKETS[-1][2]
