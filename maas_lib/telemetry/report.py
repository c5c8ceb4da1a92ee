"""`maasctl report --html`: one self-contained HTML file of plots and tables.

The report is viewable offline: no script, no stylesheet or font from the network, every
plot an inline SVG drawn by matplotlib (text kept as SVG text, so it stays small and
searchable). Two scopes:

- a time window (`since`, or all recorded history): fleet summary, a table per action
  (from `Fleet.stats`), success rate per action over time (`Store.outcome_series`),
  step-duration distributions (`Store.step_histograms`), and the timelines of the latest
  few requests;
- one request (`request_id`): its summary, outcomes per batch, its own step-duration
  distributions, its failures, and its timeline.

A timeline has one row per host (grouped by batch), a bar per step from its start for its
duration coloured by step name (failed steps hatched and outlined red), the batch's start
as a dashed line across its rows, and the time a host spent between its batch's start and
its first step — a disruption-budget wait, mostly — as a light grey "waiting" bar.

matplotlib is used through `matplotlib.figure.Figure` (no pyplot, no backend switch) and
its settings are applied with `rc_context`, so importing or calling this module changes no
global state of the importer.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)
from matplotlib.transforms import blended_transform_factory

from maas_lib.classes import StepOutcome
from maas_lib.errors import InputError
from maas_lib.models import HostTaskState
from maas_lib.timeutil import parse_since, utc_now

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from maas_lib.fleet import Fleet
    from maas_lib.models import RequestStatus, RequestSummary
    from maas_lib.store import Event
    from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram

__all__ = ["HIST_BUCKETS", "render_report", "write_report"]

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

#: Step colours (no red or grey: those mean a failed step and waiting).
STEP_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#843c39",
    "#7b4173",
)
ACTION_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
FAIL_COLOR = "#d62728"
WAIT_COLOR = "#d4d4d4"
OK_COLOR = "#2ca02c"
OTHER_COLOR = "#b0b0b0"
#: Shown for a missing value (an en dash).
_NA = "\u2013"

#: matplotlib settings for every figure (applied with `rc_context`, never globally).
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small, searchable, no embedded glyphs
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "hatch.linewidth": 1.0,
    "figure.dpi": 72,
    "savefig.dpi": 72,
}

#: Window length (seconds) → success-rate bucket (seconds) and its name.
_SERIES_BUCKETS: tuple[tuple[float, int, str], ...] = (
    (2 * 3600, 300, "5 minutes"),
    (3 * 86400, 3600, "hour"),
    (90 * 86400, 86400, "day"),
    (math.inf, 7 * 86400, "week"),
)

_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif;
       margin: 24px auto; max-width: 1240px; padding: 0 16px; color: #1d1d1f;
       font-size: 14px; line-height: 1.45; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color: #555; margin: 0 0 12px; }
.note { color: #555; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; }
.card span { color: #555; font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.nowrap { white-space: nowrap; }
figure { margin: 8px 0 20px; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
details { margin: 6px 0 14px; }
summary { cursor: pointer; color: #333; }
code { font-size: 12px; }
"""


# -- small helpers --------------------------------------------------------------------------


def _e(value: object) -> str:
    """Text for HTML, escaped."""
    return html.escape("" if value is None else str(value))


def _plain(text: object) -> str:
    """Text for a matplotlib label, shown literally (no mathtext between `$` signs)."""
    return str(text).replace("$", r"\$")


def _ts(value: str) -> datetime:
    """An ISO timestamp from the store as an aware UTC datetime."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _fmt_s(seconds: float | None) -> str:
    """A duration for people: 120 ms, 4.2 s, 3.5 min, 2.1 h."""
    if seconds is None:
        return _NA
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt_axis_s(seconds: float, _pos: object = None) -> str:
    """A compact duration for a log axis tick: 10ms, 1s, 2m, 1h."""
    if seconds <= 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


def _when(iso: str | None) -> _Raw:
    """A stored timestamp for a table cell: `2026-05-09 07:35:25` (UTC), kept on one line."""
    return _nowrap(_NA if not iso else _ts(iso).strftime("%Y-%m-%d %H:%M:%S"))


def _nowrap(text: object) -> _Raw:
    """A table cell's text kept on one line."""
    return _Raw(f'<span class="nowrap">{_e(text)}</span>')


def _pct(rate: float | None) -> str:
    return _NA if rate is None else f"{rate * 100:.1f}%"


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
#: … and the order they get colours in (the commonest get the most distinct ones).
_COLOR_ORDER: tuple[str, ...] = (
    "power-off",
    "power-on",
    "soft-off",
    "set-install-target",
    "boot-image",
    "wait-install",
    "verify-image",
    "eject-media",
    "pre-hook",
    "post-hook",
)


def _step_order() -> dict[str, int]:
    """Every step name, in the order steps run (steps unknown here follow, as defined)."""
    from maas_lib.models import Action
    from maas_lib.scheduler.steps import steps_for

    order = {name: i for i, name in enumerate(STEP_ORDER)}
    for action in Action:
        for step in steps_for(action):
            order.setdefault(step.name, len(order))
    return order


class _Palette:
    """A stable colour per step name, and the steps' running order."""

    def __init__(self) -> None:
        self.order = _step_order()
        self.colors: dict[str, str] = {}
        for name in (*_COLOR_ORDER, *self.order):
            self[name]

    def __getitem__(self, step: str) -> str:
        if step not in self.colors:
            self.colors[step] = STEP_COLORS[len(self.colors) % len(STEP_COLORS)]
        return self.colors[step]

    def sort(self, steps: Iterable[str]) -> list[str]:
        return sorted(set(steps), key=lambda s: (self.order.get(s, len(self.order)), s))


def _svg(fig: Figure, n: int, label: str) -> str:
    """The figure as inline SVG: no XML prolog or DOCTYPE, no metadata, ids made unique
    per figure (several SVGs share one HTML document), and labelled for screen readers."""
    buf = io.StringIO()
    fig.savefig(
        buf,
        format="svg",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"f{n}-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = text.replace("url(#", f"url(#{prefix}").replace('href="#', f'href="#{prefix}')
    return text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)


# -- the timeline of one request ----------------------------------------------------------


@dataclass
class _Bar:
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
    bars: list[_Bar] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.state == HostTaskState.FAILED


@dataclass
class _Timeline:
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
            starts.setdefault(ev.data["batch"], []).append(_ts(ev.ts))
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


def _timeline(
    fleet: Fleet,
    request_id: int,
    max_hosts: int,
    now: datetime,
    steps: Sequence[dict[str, Any]] | None = None,
) -> _Timeline:
    """Rows, bars and batch starts of one request, in seconds since its first batch."""
    st = fleet.status(request_id)
    if steps is None:
        steps = fleet.steps(request_id)
    events = fleet.events(request_id, limit=max(1000, 8 * len(st.hosts) + 100))
    starts = _batch_events(events)

    times = [t for ts in starts.values() for t in ts]
    times += [_ts(s["started"]) for s in steps if s.get("started")]
    t0 = min(times) if times else _ts(st.started or st.created)

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
        begin = rel(_ts(s["started"]))
        if s.get("duration_s") is not None:
            end = begin + float(s["duration_s"])
        elif s.get("finished"):
            end = rel(_ts(s["finished"]))
        else:  # still running
            end = rel(now)
        row.bars.append(_Bar(str(s["step"]), begin, max(end, begin), str(s["outcome"] or "")))
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
    return _Timeline(
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


def _bar_style(outcome: str) -> str:
    """How a step's bar looks: `ok`, `failed` (hatched red), or `open` (pale: still running,
    or interrupted by a stopping worker and retried as a new attempt)."""
    if outcome in (StepOutcome.SUCCEEDED, StepOutcome.SKIPPED, ""):
        return "ok"
    if outcome in (StepOutcome.RUNNING, StepOutcome.INTERRUPTED):
        return "open"
    return "failed"


def _time_unit(span: float) -> tuple[float, str]:
    if span <= 300:
        return 1.0, "seconds"
    if span <= 3 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _timeline_figure(tl: _Timeline, palette: _Palette) -> Figure:
    """One row per host, grouped by batch; step bars, waits and batch starts."""
    rows = tl.rows
    n = max(1, len(rows))
    unit, unit_name = _time_unit(tl.span)
    label_size = 8 if n <= 40 else 7
    fig = Figure(figsize=(12, 1.9 + 0.2 * n), layout="constrained")
    ax = fig.add_subplot()
    trans = blended_transform_factory(ax.transAxes, ax.transData)

    # Batch groups: alternating bands, a label on the right, the batch's start(s).
    groups: list[tuple[int | None, int, int]] = []
    for i, row in enumerate(rows):
        if groups and groups[-1][0] == row.batch:
            groups[-1] = (row.batch, groups[-1][1], i)
        else:
            groups.append((row.batch, i, i))
    for g, (batch, first, last) in enumerate(groups):
        if g % 2 == 0:
            ax.axhspan(first - 0.5, last + 0.5, color="#eef1f7", zorder=0, lw=0)
        if g:
            ax.axhline(first - 0.5, color="#9aa3b5", lw=0.6, zorder=1)
        shown = last - first + 1
        size = tl.batch_sizes.get(batch, shown) if batch is not None else shown
        count = f"{shown} of {size}" if shown < size else f"{size}"
        ax.text(
            1.005,
            (first + last) / 2,
            f"batch {batch}\n({count} hosts)" if shown > 1 else f"batch {batch} ({count})",
            transform=trans,
            fontsize=label_size,
            va="center",
            ha="left",
            color="#333",
        )
        for t in tl.batch_starts.get(batch if batch is not None else -1, []):
            ax.vlines(
                t / unit, first - 0.5, last + 0.5, colors="#333", linestyles="--", lw=1.0, zorder=3
            )

    # Waits: from the batch's start to the host's first step.
    waits = [(i, r.wait) for i, r in enumerate(rows) if r.wait is not None]
    if waits:
        ax.barh(
            [i for i, _ in waits],
            [(w[1] - w[0]) / unit for _, w in waits],
            left=[w[0] / unit for _, w in waits],
            height=0.7,
            color=WAIT_COLOR,
            lw=0,
            zorder=2,
        )
        show_text = n <= 60
        for i, (begin, end) in waits:
            if show_text and (end - begin) >= 0.08 * max(tl.span, 1e-9):
                ax.text(
                    (begin + end) / 2 / unit,
                    i,
                    "waiting",
                    ha="center",
                    va="center",
                    fontsize=label_size,
                    color="#444",
                    zorder=4,
                )

    # Step bars: one call per (step, style) so each step shares one look.
    seen_steps: list[str] = []
    styles_seen: set[str] = set()
    groups_of_bars: dict[tuple[str, str], list[tuple[int, _Bar]]] = {}
    for i, row in enumerate(rows):
        for bar in row.bars:
            style = _bar_style(bar.outcome)
            styles_seen.add(style)
            groups_of_bars.setdefault((bar.step, style), []).append((i, bar))
            if bar.step not in seen_steps:
                seen_steps.append(bar.step)
    # Very short steps (a failure at once) still get a visible sliver.
    least = 0.003 * max(tl.span, 1e-3)
    for (step, style), items in groups_of_bars.items():
        failed = style == "failed"
        ax.barh(
            [i for i, _ in items],
            [max(b.end - b.start, least) / unit for _, b in items],
            left=[b.start / unit for _, b in items],
            height=0.7,
            color=palette[step],
            alpha=0.45 if style == "open" else 1.0,
            edgecolor=FAIL_COLOR if failed else palette[step],
            hatch="////" if failed else None,
            lw=1.4 if failed else 0.3,
            zorder=5,
        )

    ax.set_yticks(range(len(rows)))
    labels = [
        _plain(r.host + (f"  (after #{r.holder})" if r.holder is not None else "")) for r in rows
    ]
    ax.set_yticklabels(labels, fontsize=label_size)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.failed:
            tick.set_color(FAIL_COLOR)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(-0.01 * tl.span / unit, max(tl.span, 1e-3) * 1.02 / unit)
    ax.set_xlabel(
        f"{unit_name} since the request's first batch started "
        f"({tl.t0.strftime('%Y-%m-%d %H:%M:%S')} UTC)"
    )
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#e0e0e0", lw=0.6)
    ax.set_axisbelow(True)
    st = tl.status
    ax.set_title(
        _plain(f"Request {st.id}: {st.action} of {st.host_count} hosts — {st.state}"),
        loc="left",
    )

    handles: list[Any] = [
        Patch(color=palette[s], label=_plain(s)) for s in palette.sort(seen_steps)
    ]
    handles.append(Patch(color=WAIT_COLOR, label="waiting (budget / overlap)"))
    if "failed" in styles_seen:
        handles.append(
            Patch(facecolor="white", edgecolor=FAIL_COLOR, hatch="////", label="failed step")
        )
    if "open" in styles_seen:
        handles.append(Patch(color="#1f77b4", alpha=0.45, label="running / interrupted"))
    handles.append(Line2D([], [], color="#333", ls="--", lw=1.0, label="batch start"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 7))
    return fig


# -- step-duration distributions ----------------------------------------------------------


@dataclass
class _Dist:
    """One (action, step)'s durations as bins over HIST_BUCKETS, with its percentiles."""

    action: str
    step: str
    counts: list[int]  # per bin (non-cumulative); the last is the overflow bin
    n: int
    failed: int | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


def _edges(buckets: Sequence[float]) -> list[float]:
    return [buckets[0] / 2.5, *buckets, buckets[-1] * 2]


def _dists_from_histograms(hists: Sequence[StepHistogram], stats: Stats) -> list[_Dist]:
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
            _Dist(
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


def _dists_from_steps(action: str, steps: Sequence[dict[str, Any]]) -> list[_Dist]:
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
            _Dist(
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


def _durations_figure(dists: Sequence[_Dist], palette: _Palette) -> Figure:
    """Per action, one row per step: a histogram of its durations (log time axis, bars
    scaled to the row's largest bin) with p50 and p95 marked, and n on the right."""
    edges = _edges(HIST_BUCKETS)
    by_action: dict[str, list[_Dist]] = {}
    for d in dists:
        by_action.setdefault(d.action, []).append(d)
    actions = sorted(by_action)
    for a in actions:
        order = palette.sort(d.step for d in by_action[a])
        by_action[a].sort(key=lambda d: order.index(d.step))
    used = [i for d in dists for i, c in enumerate(d.counts) if c]
    lo = edges[max(0, min(used, default=0) - 1)]
    hi = edges[min(len(edges) - 1, max(used, default=len(edges) - 2) + 2)]

    heights = [len(by_action[a]) + 0.6 for a in actions]
    fig = Figure(
        figsize=(12, 0.9 + 0.38 * sum(heights) + 0.35 * len(actions)), layout="constrained"
    )
    axes = fig.subplots(len(actions), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    axes_list: list[Axes] = list(axes) if len(actions) > 1 else [axes]
    for ax, action in zip(axes_list, actions, strict=True):
        rows = by_action[action]
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        for r, d in enumerate(rows):
            y = len(rows) - 1 - r
            top = max(d.counts) or 1
            for i, c in enumerate(d.counts):
                if not c:
                    continue
                ax.bar(
                    edges[i],
                    0.8 * c / top,
                    width=edges[i + 1] - edges[i],
                    bottom=y - 0.4,
                    align="edge",
                    color=palette[d.step],
                    edgecolor="white",
                    lw=0.5,
                )
            for value, style in ((d.p50, "-"), (d.p95, ":")):
                if value is not None and value > 0:
                    ax.vlines(value, y - 0.45, y + 0.45, colors="black", linestyles=style, lw=1.4)
            parts = [f"n={d.n}", f"p50 {_fmt_s(d.p50)}", f"p95 {_fmt_s(d.p95)}"]
            parts.append(f"max {_fmt_s(d.max)}")
            if d.failed:
                parts.append(f"{d.failed} failed")
            summary = " \u00b7 ".join(parts)
            ax.text(1.005, y, summary, transform=trans, fontsize=8, va="center", ha="left")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([_plain(d.step) for d in reversed(rows)])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.tick_params(axis="y", length=0)
        ax.set_title(_plain(action), loc="left")
        ax.set_xscale("log")
        ax.grid(axis="x", color="#e0e0e0", lw=0.6, which="major")
        ax.set_axisbelow(True)
    last = axes_list[-1]
    last.set_xlim(lo, hi)
    last.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    last.xaxis.set_major_formatter(FuncFormatter(_fmt_axis_s))
    last.xaxis.set_minor_formatter(NullFormatter())
    last.set_xlabel("step duration (log scale); bars: share of the step's runs per bin")
    fig.legend(
        handles=[
            Line2D([], [], color="black", lw=1.4, label="p50"),
            Line2D([], [], color="black", lw=1.4, ls=":", label="p95"),
        ],
        loc="outside upper right",
        ncols=2,
    )
    return fig


# -- outcomes over time -------------------------------------------------------------------


def _series_bucket(span_s: float) -> tuple[int, str]:
    for limit, bucket, name in _SERIES_BUCKETS:
        if span_s <= limit:
            return bucket, name
    return _SERIES_BUCKETS[-1][1], _SERIES_BUCKETS[-1][2]


def _success_figure(
    points: Sequence[OutcomePoint], bucket_s: int, bucket_name: str, start: datetime, end: datetime
) -> Figure:
    """Success rate per action per bucket (top) and hosts ended per bucket (bottom)."""
    by_action: dict[str, list[OutcomePoint]] = {}
    for p in points:
        by_action.setdefault(p.action, []).append(p)
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    half = timedelta(seconds=bucket_s / 2)
    for k, action in enumerate(sorted(by_action)):
        pts = sorted(by_action[action], key=lambda p: p.bucket)
        xs = [_ts(p.bucket) + half for p in pts]
        totals = [p.succeeded + p.failed for p in pts]
        rates = [p.succeeded / t if t else math.nan for p, t in zip(pts, totals, strict=True)]
        color = ACTION_COLORS[k % len(ACTION_COLORS)]
        top.plot(xs, rates, marker="o", ms=5, lw=1.6, color=color, label=_plain(action))
        bottom.plot(xs, totals, marker="o", ms=4, lw=1.2, color=color, label=_plain(action))
    top.set_ylim(-0.05, 1.05)
    top.yaxis.set_major_formatter(PercentFormatter(1.0))
    top.set_ylabel("hosts succeeded")
    top.grid(axis="y", color="#e0e0e0", lw=0.6)
    top.set_title(f"Success rate per action, per {bucket_name} (by when the host's task started)")
    bottom.set_ylabel("hosts ended")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    bottom.grid(axis="y", color="#e0e0e0", lw=0.6)
    locator = AutoDateLocator(tz=UTC)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    last = max(_ts(p.bucket) for p in points) + timedelta(seconds=bucket_s)
    bottom.set_xlim(start, max(end, last))
    bottom.set_xlabel("time (UTC)")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _batch_outcomes_figure(st: RequestStatus) -> Figure:
    """Hosts per batch by outcome, with each batch's success rate above its bar."""
    per: dict[int, dict[str, int]] = {}
    for h in st.hosts:
        if h.batch is not None:
            counts = per.setdefault(h.batch, {})
            counts[str(h.state)] = counts.get(str(h.state), 0) + 1
    batches = sorted(per)
    ok = [per[b].get(HostTaskState.SUCCEEDED, 0) for b in batches]
    bad = [per[b].get(HostTaskState.FAILED, 0) for b in batches]
    other = [sum(per[b].values()) - o - f for b, o, f in zip(batches, ok, bad, strict=True)]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(batches, ok, color=OK_COLOR, label="succeeded")
    ax.bar(batches, bad, bottom=ok, color=FAIL_COLOR, label="failed")
    ax.bar(
        batches,
        other,
        bottom=[o + f for o, f in zip(ok, bad, strict=True)],
        color=OTHER_COLOR,
        label="other (running, cancelled)",
    )
    if len(batches) <= 40:
        for b, o, f, x in zip(batches, ok, bad, other, strict=True):
            if o + f:
                ax.text(b, o + f + x, f"{o / (o + f):.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("batch")
    ax.set_ylabel("hosts")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([o + f + x for o, f, x in zip(ok, bad, other, strict=True)] or [1]) * 1.18)
    ax.set_title(
        f"Request {st.id}: outcome per batch (label: the batch's success rate)", loc="left"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# -- HTML ---------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], num: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless given as `_Raw`."""
    out = ["<table><thead><tr>"]
    out += [f"<th{' class=num' if i in num else ''}>{_e(h)}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = " class=num" if i in num else ""
            text = cell.html if isinstance(cell, _Raw) else _e(cell)
            out.append(f"<td{cls}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass
class _Raw:
    """Already-escaped HTML for a table cell."""

    html: str


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or _NA


class _Doc:
    """The report being built: sections of HTML and a figure counter."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: Figure, label: str, caption: str) -> None:
        self.figures += 1
        svg = _svg(fig, self.figures, label)
        self.add(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")


def _cards(items: Sequence[tuple[str, object]]) -> str:
    cells = "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in items)
    return f'<div class="cards">{cells}</div>'


def _fleet_section(doc: _Doc, stats: Stats) -> None:
    f = stats.fleet
    doc.add("<h2>Fleet now</h2>")
    doc.add(
        _cards(
            [
                ("hosts", f.hosts),
                ("in flight", f.hosts_in_flight),
                *((f"hosts {k}", v) for k, v in sorted(f.hosts_by_status.items())),
                ("live workers", len(f.workers)),
            ]
        )
    )
    doc.add(
        f'<p class="note">Requests by state (all time): {_e(_counts(f.requests_by_state))}.</p>'
    )


def _actions_section(doc: _Doc, stats: Stats) -> None:
    doc.add("<h2>Per action</h2>")
    if not stats.actions:
        doc.add('<p class="note">No request in this window.</p>')
        return
    rows = []
    for a in stats.actions:
        rows.append(
            [
                a.action,
                a.requests,
                _counts(a.requests_by_state),
                a.hosts,
                a.succeeded,
                a.failed,
                _pct(a.success_rate),
                _counts(a.failures_by_class),
                _fmt_s(a.queue_wait.p50_s),
                _fmt_s(a.queue_wait.p95_s),
            ]
        )
    doc.add(
        _table(
            [
                "action",
                "requests",
                "by state",
                "hosts ended",
                "succeeded",
                "failed",
                "success rate",
                "failures by class",
                "queue wait p50",
                "queue wait p95",
            ],
            rows,
            num=(1, 3, 4, 5, 6, 8, 9),
        )
    )
    step_rows = [
        [a.action, s.step, s.count, s.failed, _fmt_s(s.p50_s), _fmt_s(s.p95_s), _fmt_s(s.max_s)]
        for a in stats.actions
        for s in a.steps
    ]
    if step_rows:
        doc.add("<details><summary>Step runtimes (table)</summary>")
        doc.add(
            _table(
                ["action", "step", "runs", "failed", "p50", "p95", "max"],
                step_rows,
                num=(2, 3, 4, 5, 6),
            )
        )
        doc.add("</details>")
    doc.add(
        '<p class="note">Hosts ended: host tasks that succeeded or failed (dropped and '
        "cancelled hosts are not counted). Queue wait: from a request's acceptance to its "
        "first step.</p>"
    )


def _requests_table(doc: _Doc, requests: Sequence[RequestSummary], more: bool) -> None:
    doc.add("<h3>Requests in this window</h3>")
    if not requests:
        doc.add('<p class="note">None.</p>')
        return
    doc.add(
        _table(
            ["id", "action", "state", "hosts", "hosts by state", "submitted by", "accepted (UTC)"],
            [
                [
                    r.id,
                    r.action,
                    r.state,
                    r.host_count,
                    _counts(r.counts),
                    r.submitted_by,
                    _when(r.created),
                ]
                for r in requests
            ],
            num=(0, 3),
        )
    )
    if more:
        doc.add(f'<p class="note">Showing the {len(requests)} newest.</p>')


def _timeline_section(doc: _Doc, tl: _Timeline, palette: _Palette) -> None:
    st = tl.status
    notes = []
    if tl.sampled:
        notes.append(
            f"showing {len(tl.rows)} of {tl.hosts_in_batches} hosts that ran: a sample of "
            "every batch, spread over the order its hosts started in, failed hosts included"
        )
    if tl.not_started:
        notes.append("not started: " + _counts(tl.not_started))
    if not tl.rows:
        doc.add(f'<p class="note">Request {st.id}: no host has started yet.</p>')
        return
    caption = (
        "One row per host, grouped by batch. Bars: each step from its start for its "
        "duration, coloured by step; hatched red: the step failed. Dashed line: the "
        "batch started; grey: the host waited for the disruption budget (or another "
        "request) between its batch's start and its first step. Red host names failed."
    )
    if notes:
        caption += " " + "; ".join(notes).capitalize() + "."
    doc.figure(_timeline_figure(tl, palette), f"Timeline of request {st.id}", caption)


def _request_section(doc: _Doc, tl: _Timeline, steps: Sequence[dict[str, Any]]) -> None:
    st = tl.status
    pol = st.policy
    doc.add(f"<h2>Request {st.id}: {_e(st.action)} — {_e(st.state)}</h2>")
    if st.reason:
        doc.add(f'<p class="note">{_e(st.reason)}</p>')
    ended = st.counts.get(HostTaskState.SUCCEEDED, 0) + st.counts.get(HostTaskState.FAILED, 0)
    rate = None if not ended else st.counts.get(HostTaskState.SUCCEEDED, 0) / ended
    queue_wait = None
    if st.started:
        queue_wait = (_ts(st.started) - _ts(st.created)).total_seconds()
    doc.add(
        _cards(
            [
                ("hosts", st.host_count),
                *((f"hosts {k}", v) for k, v in sorted(st.counts.items())),
                ("success rate", _pct(rate)),
                ("batches", len(tl.batch_starts)),
                ("queue wait", _fmt_s(queue_wait)),
                ("run time", _fmt_s(tl.span)),
            ]
        )
    )
    doc.add(
        _table(
            ["submitted by", "accepted (UTC)", "started", "finished", "image", "policy"],
            [
                [
                    st.submitted_by,
                    _when(st.created),
                    _when(st.started),
                    _when(st.finished),
                    st.image or _NA,
                    f"batch size {pol.batch_size}, max failures {pol.max_failures}, "
                    f"max unavailable {pol.max_unavailable or 'pool default'}, "
                    f"canary {pol.canary}, pause {pol.pause:g} s, on overlap {pol.on_overlap}",
                ]
            ],
        )
    )
    # Per batch: size, outcome, start, and the longest budget wait.
    per: dict[int, list[str]] = {}
    for h in st.hosts:
        if h.batch is not None:
            per.setdefault(h.batch, []).append(str(h.state))
    batch_rows = []
    for b in sorted(per):
        counts: dict[str, int] = {}
        for state in per[b]:
            counts[state] = counts.get(state, 0) + 1
        starts = tl.batch_starts.get(b, [])
        begin = (tl.t0 + timedelta(seconds=min(starts))).strftime("%H:%M:%S") if starts else _NA
        batch_rows.append([b, len(per[b]), _counts(counts), begin, _fmt_s(tl.batch_waits.get(b))])
    if batch_rows:
        doc.add("<h3>Batches</h3>")
        doc.add(
            _table(
                ["batch", "hosts", "by state", "started (UTC)", "longest wait"],
                batch_rows,
                num=(0, 1, 4),
            )
        )
    failed = [h for h in st.hosts if h.state == HostTaskState.FAILED]
    if failed:
        last_error: dict[str, dict[str, Any]] = {}
        for s in steps:
            if s.get("outcome") not in (StepOutcome.SUCCEEDED, None):
                last_error[s["host"]] = s
        doc.add(f"<h3>Failed hosts ({len(failed)})</h3>")
        shown = failed[:MAX_LISTED_FAILURES]
        doc.add(
            _table(
                ["host", "batch", "class", "step", "error"],
                [
                    [
                        h.host,
                        _NA if h.batch is None else h.batch,
                        h.error_class or _NA,
                        _nowrap(last_error.get(h.host, {}).get("step", _NA)),
                        (h.reason or last_error.get(h.host, {}).get("error") or _NA)[:300],
                    ]
                    for h in shown
                ],
                num=(1,),
            )
        )
        if len(failed) > len(shown):
            doc.add(f'<p class="note">Showing {len(shown)} of {len(failed)}.</p>')


def _document(title: str, scope: str, generated: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="maas-lib">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">Scope: {_e(scope)} · generated {_e(generated)} UTC</p>'
        f"{body}</body></html>\n"
    )


# -- the two scopes -----------------------------------------------------------------------


def _request_report(doc: _Doc, fleet: Fleet, request_id: int, now: datetime, max_hosts: int) -> str:
    palette = _Palette()
    steps = fleet.steps(request_id)
    tl = _timeline(fleet, request_id, max_hosts, now, steps)
    _request_section(doc, tl, steps)
    st = tl.status

    doc.add("<h2>Outcomes per batch</h2>")
    if any(h.batch is not None for h in st.hosts):
        doc.figure(
            _batch_outcomes_figure(st),
            f"Outcomes per batch of request {st.id}",
            "Hosts of each batch by outcome; the label is the batch's success rate "
            "(succeeded of succeeded + failed).",
        )
    else:
        doc.add('<p class="note">No batch has started.</p>')

    doc.add("<h2>Step durations</h2>")
    dists = _dists_from_steps(str(st.action), steps)
    if dists:
        doc.figure(
            _durations_figure(dists, palette),
            f"Step-duration distributions of request {st.id}",
            "Each step's durations in this request as a histogram over log-spaced bins "
            "(bar height: share of the step's runs in the bin); solid line p50, dotted p95.",
        )
    else:
        doc.add('<p class="note">No step has finished.</p>')

    doc.add("<h2>Timeline</h2>")
    _timeline_section(doc, tl, palette)
    return f"request {st.id} ({st.action} of {st.host_count} hosts, {st.state})"


def _window_report(
    doc: _Doc, fleet: Fleet, since: str | None, now: datetime, max_hosts: int, latest: int
) -> str:
    try:
        start_iso = None if since is None else parse_since(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    stats = fleet.stats(start_iso)
    palette = _Palette()
    _fleet_section(doc, stats)
    _actions_section(doc, stats)

    # Success rate over time: the bucket follows the window's length.
    if start_iso is not None:
        start = _ts(start_iso)
    else:
        coarse = fleet.store.outcome_series(None, 86400)
        start = min((_ts(p.bucket) for p in coarse), default=now - timedelta(days=1))
    bucket_s, bucket_name = _series_bucket((now - start).total_seconds())
    points = fleet.store.outcome_series(start_iso, bucket_s)
    doc.add("<h2>Success rate over time</h2>")
    if points:
        first = min(_ts(p.bucket) for p in points)
        doc.figure(
            _success_figure(points, bucket_s, bucket_name, min(start, first), now),
            "Success rate per action over time",
            f"Top: share of hosts that succeeded, per action and {bucket_name}. Bottom: hosts "
            "whose task ended (succeeded or failed) in the same bucket.",
        )
    else:
        doc.add('<p class="note">No host task ended in this window.</p>')

    doc.add("<h2>Step durations</h2>")
    dists = _dists_from_histograms(fleet.store.step_histograms(start_iso, HIST_BUCKETS), stats)
    if dists:
        doc.figure(
            _durations_figure(dists, palette),
            "Step-duration distributions per action",
            "Each step's durations as a histogram over log-spaced bins (bar height: share of "
            "the step's runs in the bin); solid line p50, dotted p95 (nearest rank).",
        )
    else:
        doc.add('<p class="note">No step ran in this window.</p>')

    doc.add("<h2>Latest requests</h2>")
    listed = fleet.requests(limit=MAX_LISTED_REQUESTS + 1)
    in_window = [r for r in listed if start_iso is None or r.created >= start_iso]
    _requests_table(doc, in_window[:MAX_LISTED_REQUESTS], len(in_window) > MAX_LISTED_REQUESTS)
    started = [r for r in in_window if r.state != "accepted"][:latest]
    for r in started:
        _timeline_section(doc, _timeline(fleet, r.id, max_hosts, now), palette)
    if not started:
        doc.add('<p class="note">No request in this window has started.</p>')
    return "all recorded history" if since is None else f"since {since} ({start_iso})"


def render_report(
    fleet: Fleet,
    *,
    request_id: int | None = None,
    since: str | None = None,
    max_hosts: int | None = None,
    latest: int = LATEST_TIMELINES,
) -> str:
    """The whole report as one self-contained HTML document.

    `request_id`: one request (its batches, step durations, failures and timeline);
    otherwise the window `since` a duration ago (`24h`) or an ISO time, or all history.
    `max_hosts` caps the rows of a timeline (default 150 for a request, 60 per timeline
    of a window report); `latest` is how many of the window's newest requests get one.
    Raises `NotFound` for an unknown request and `InputError` for a bad `since`."""
    if request_id is not None and since is not None:
        raise InputError("--request and --since cannot be combined")
    generated = utc_now()
    now = _ts(generated)
    doc = _Doc()
    with matplotlib.rc_context(_RC):
        if request_id is not None:
            cap = max_hosts or MAX_TIMELINE_HOSTS
            scope = _request_report(doc, fleet, request_id, now, cap)
            title = f"maas-lib report: request {request_id}"
        else:
            cap = max_hosts or WINDOW_TIMELINE_HOSTS
            scope = _window_report(doc, fleet, since, now, cap, latest)
            title = "maas-lib fleet report"
    return _document(title, scope, now.strftime("%Y-%m-%d %H:%M:%S"), "".join(doc.parts))


def write_report(fleet: Fleet, path: str | os.PathLike[str], **kw: Any) -> Path:
    """Render the report (`render_report` keywords) and write it to `path` atomically."""
    target = Path(path)
    text = render_report(fleet, **kw)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise InputError(f"--html {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
