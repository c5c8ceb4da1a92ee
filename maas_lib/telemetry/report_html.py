"""The report's HTML: escaping, tables, cards, the sections and the document around
them; figures come from `report_figures` as inline SVG."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from maas_lib.classes import StepOutcome
from maas_lib.models import HostTaskState
from maas_lib.telemetry.report_data import (
    MAX_LISTED_FAILURES,
    NA,
    Timeline,
    fmt_s,
    parse_ts,
)
from maas_lib.telemetry.report_figures import (
    Palette,
    figure_svg,
    timeline_figure,
)

if TYPE_CHECKING:
    from maas_lib.models import RequestSummary
    from maas_lib.telemetry.models import Stats


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


def _e(value: object) -> str:
    """Text for HTML, escaped."""
    return html.escape("" if value is None else str(value))


def _when(iso: str | None) -> _Raw:
    """A stored timestamp for a table cell: `2026-05-09 07:35:25` (UTC), kept on one line."""
    return _nowrap(NA if not iso else parse_ts(iso).strftime("%Y-%m-%d %H:%M:%S"))


def _nowrap(text: object) -> _Raw:
    """A table cell's text kept on one line."""
    return _Raw(f'<span class="nowrap">{_e(text)}</span>')


def _pct(rate: float | None) -> str:
    return NA if rate is None else f"{rate * 100:.1f}%"


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
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or NA


class Doc:
    """The report being built: sections of HTML and a figure counter."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: Figure, label: str, caption: str) -> None:
        self.figures += 1
        svg = figure_svg(fig, self.figures, label)
        self.add(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")


def _cards(items: Sequence[tuple[str, object]]) -> str:
    cells = "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in items)
    return f'<div class="cards">{cells}</div>'


def fleet_section(doc: Doc, stats: Stats) -> None:
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


def actions_section(doc: Doc, stats: Stats) -> None:
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
                fmt_s(a.queue_wait.p50_s),
                fmt_s(a.queue_wait.p95_s),
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
        [a.action, s.step, s.count, s.failed, fmt_s(s.p50_s), fmt_s(s.p95_s), fmt_s(s.max_s)]
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


def requests_table(doc: Doc, requests: Sequence[RequestSummary], more: bool) -> None:
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


def timeline_section(doc: Doc, tl: Timeline, palette: Palette) -> None:
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
    doc.figure(timeline_figure(tl, palette), f"Timeline of request {st.id}", caption)


def request_section(doc: Doc, tl: Timeline, steps: Sequence[dict[str, Any]]) -> None:
    st = tl.status
    pol = st.policy
    doc.add(f"<h2>Request {st.id}: {_e(st.action)} — {_e(st.state)}</h2>")
    if st.reason:
        doc.add(f'<p class="note">{_e(st.reason)}</p>')
    ended = st.counts.get(HostTaskState.SUCCEEDED, 0) + st.counts.get(HostTaskState.FAILED, 0)
    rate = None if not ended else st.counts.get(HostTaskState.SUCCEEDED, 0) / ended
    queue_wait = None
    if st.started:
        queue_wait = (parse_ts(st.started) - parse_ts(st.created)).total_seconds()
    doc.add(
        _cards(
            [
                ("hosts", st.host_count),
                *((f"hosts {k}", v) for k, v in sorted(st.counts.items())),
                ("success rate", _pct(rate)),
                ("batches", len(tl.batch_starts)),
                ("queue wait", fmt_s(queue_wait)),
                ("run time", fmt_s(tl.span)),
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
                    st.image or NA,
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
        begin = (tl.t0 + timedelta(seconds=min(starts))).strftime("%H:%M:%S") if starts else NA
        batch_rows.append([b, len(per[b]), _counts(counts), begin, fmt_s(tl.batch_waits.get(b))])
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
                        NA if h.batch is None else h.batch,
                        h.error_class or NA,
                        _nowrap(last_error.get(h.host, {}).get("step", NA)),
                        (h.reason or last_error.get(h.host, {}).get("error") or NA)[:300],
                    ]
                    for h in shown
                ],
                num=(1,),
            )
        )
        if len(failed) > len(shown):
            doc.add(f'<p class="note">Showing {len(shown)} of {len(failed)}.</p>')


def document(title: str, scope: str, generated: str, body: str) -> str:
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
