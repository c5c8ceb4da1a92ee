"""The report's figures: matplotlib `Figure`s (no pyplot, settings applied with
`rc_context` by the caller) drawn from `report_data`, and their inline SVG."""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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
from maas_lib.models import HostTaskState
from maas_lib.telemetry.report_data import (
    HIST_BUCKETS,
    Bar,
    Dist,
    Timeline,
    bin_edges,
    fmt_s,
    parse_ts,
    step_order,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from maas_lib.models import RequestStatus
    from maas_lib.telemetry.models import OutcomePoint


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


#: matplotlib settings for every figure (applied with `rc_context`, never globally).
RC_PARAMS: dict[str, Any] = {
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


def _plain(text: object) -> str:
    """Text for a matplotlib label, shown literally (no mathtext between `$` signs)."""
    return str(text).replace("$", r"\$")


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


class Palette:
    """A stable colour per step name, and the steps' running order."""

    def __init__(self) -> None:
        self.order = step_order()
        self.colors: dict[str, str] = {}
        for name in (*_COLOR_ORDER, *self.order):
            self[name]

    def __getitem__(self, step: str) -> str:
        if step not in self.colors:
            self.colors[step] = STEP_COLORS[len(self.colors) % len(STEP_COLORS)]
        return self.colors[step]

    def sort(self, steps: Iterable[str]) -> list[str]:
        return sorted(set(steps), key=lambda s: (self.order.get(s, len(self.order)), s))


def figure_svg(fig: Figure, n: int, label: str) -> str:
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
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


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


def timeline_figure(tl: Timeline, palette: Palette) -> Figure:
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
    groups_of_bars: dict[tuple[str, str], list[tuple[int, Bar]]] = {}
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


def durations_figure(dists: Sequence[Dist], palette: Palette) -> Figure:
    """Per action, one row per step: a histogram of its durations (log time axis, bars
    scaled to the row's largest bin) with p50 and p95 marked, and n on the right."""
    edges = bin_edges(HIST_BUCKETS)
    by_action: dict[str, list[Dist]] = {}
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
            parts = [f"n={d.n}", f"p50 {fmt_s(d.p50)}", f"p95 {fmt_s(d.p95)}"]
            parts.append(f"max {fmt_s(d.max)}")
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


def success_figure(
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
        xs = [parse_ts(p.bucket) + half for p in pts]
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
    last = max(parse_ts(p.bucket) for p in points) + timedelta(seconds=bucket_s)
    bottom.set_xlim(start, max(end, last))
    bottom.set_xlabel("time (UTC)")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def batch_outcomes_figure(st: RequestStatus) -> Figure:
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
