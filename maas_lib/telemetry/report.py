"""`maasctl report --html`: one self-contained HTML file of plots and tables.

The report is viewable offline: no script, no stylesheet or font from the network, every
plot an inline SVG drawn by matplotlib (text kept as SVG text, so it stays small and
searchable). Two scopes:

- a time window (`since`, or all recorded history): fleet summary, a table per action
  (from `Fleet.stats`), success rate per action over time (`Fleet.outcome_series`),
  step-duration distributions (`Fleet.step_histograms`), and the timelines of the latest
  few requests;
- one request (`request_id`): its summary, outcomes per batch, its own step-duration
  distributions, its failures, and its timeline.

A timeline has one row per host (grouped by batch), a bar per step from its start for its
duration coloured by step name (failed steps hatched and outlined red), the batch's start
as a dashed line across its rows, and the time a host spent between its batch's start and
its first step — a disruption-budget wait, mostly — as a light grey "waiting" bar.

This module builds the two scopes from `Fleet` reads; `report_data` shapes the figures
(timelines, distributions), `report_figures` draws them, `report_html` writes the page.

matplotlib is used through `matplotlib.figure.Figure` (no pyplot, no backend switch) and
its settings are applied with `rc_context`, so importing or calling this module changes no
global state of the importer.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

from maas_lib.errors import InputError
from maas_lib.telemetry.report_data import (
    HIST_BUCKETS,
    LATEST_TIMELINES,
    MAX_LISTED_REQUESTS,
    MAX_TIMELINE_HOSTS,
    WINDOW_TIMELINE_HOSTS,
    FleetReads,
    build_timeline,
    dists_from_histograms,
    dists_from_steps,
    parse_ts,
    series_bucket,
)
from maas_lib.telemetry.report_figures import (
    RC_PARAMS,
    Palette,
    batch_outcomes_figure,
    durations_figure,
    success_figure,
)
from maas_lib.telemetry.report_html import (
    Doc,
    actions_section,
    document,
    fleet_section,
    request_section,
    requests_table,
    timeline_section,
)
from maas_lib.timeutil import parse_since, utc_now

__all__ = ["HIST_BUCKETS", "render_report", "write_report"]


def _request_report(
    doc: Doc, fleet: FleetReads, request_id: int, now: datetime, max_hosts: int
) -> str:
    palette = Palette()
    steps = fleet.steps(request_id)
    tl = build_timeline(fleet, request_id, max_hosts, now, steps)
    request_section(doc, tl, steps)
    st = tl.status

    doc.add("<h2>Outcomes per batch</h2>")
    if any(h.batch is not None for h in st.hosts):
        doc.figure(
            batch_outcomes_figure(st),
            f"Outcomes per batch of request {st.id}",
            "Hosts of each batch by outcome; the label is the batch's success rate "
            "(succeeded of succeeded + failed).",
        )
    else:
        doc.add('<p class="note">No batch has started.</p>')

    doc.add("<h2>Step durations</h2>")
    dists = dists_from_steps(str(st.action), steps)
    if dists:
        doc.figure(
            durations_figure(dists, palette),
            f"Step-duration distributions of request {st.id}",
            "Each step's durations in this request as a histogram over log-spaced bins "
            "(bar height: share of the step's runs in the bin); solid line p50, dotted p95.",
        )
    else:
        doc.add('<p class="note">No step has finished.</p>')

    doc.add("<h2>Timeline</h2>")
    timeline_section(doc, tl, palette)
    return f"request {st.id} ({st.action} of {st.host_count} hosts, {st.state})"


def _window_report(
    doc: Doc, fleet: FleetReads, since: str | None, now: datetime, max_hosts: int, latest: int
) -> str:
    try:
        start_iso = None if since is None else parse_since(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    stats = fleet.stats(start_iso)
    palette = Palette()
    fleet_section(doc, stats)
    actions_section(doc, stats)

    # Success rate over time: the bucket follows the window's length.
    if start_iso is not None:
        start = parse_ts(start_iso)
    else:
        coarse = fleet.outcome_series(None, 86400)
        start = min((parse_ts(p.bucket) for p in coarse), default=now - timedelta(days=1))
    bucket_s, bucket_name = series_bucket((now - start).total_seconds())
    points = fleet.outcome_series(start_iso, bucket_s)
    doc.add("<h2>Success rate over time</h2>")
    if points:
        first = min(parse_ts(p.bucket) for p in points)
        doc.figure(
            success_figure(points, bucket_s, bucket_name, min(start, first), now),
            "Success rate per action over time",
            f"Top: share of hosts that succeeded, per action and {bucket_name}. Bottom: hosts "
            "whose task ended (succeeded or failed) in the same bucket.",
        )
    else:
        doc.add('<p class="note">No host task ended in this window.</p>')

    doc.add("<h2>Step durations</h2>")
    dists = dists_from_histograms(fleet.step_histograms(start_iso, HIST_BUCKETS), stats)
    if dists:
        doc.figure(
            durations_figure(dists, palette),
            "Step-duration distributions per action",
            "Each step's durations as a histogram over log-spaced bins (bar height: share of "
            "the step's runs in the bin); solid line p50, dotted p95 (nearest rank).",
        )
    else:
        doc.add('<p class="note">No step ran in this window.</p>')

    doc.add("<h2>Latest requests</h2>")
    listed = fleet.requests(limit=MAX_LISTED_REQUESTS + 1)
    in_window = [r for r in listed if start_iso is None or r.created >= start_iso]
    requests_table(doc, in_window[:MAX_LISTED_REQUESTS], len(in_window) > MAX_LISTED_REQUESTS)
    started = [r for r in in_window if r.state != "accepted"][:latest]
    for r in started:
        timeline_section(doc, build_timeline(fleet, r.id, max_hosts, now), palette)
    if not started:
        doc.add('<p class="note">No request in this window has started.</p>')
    return "all recorded history" if since is None else f"since {since} ({start_iso})"


def render_report(
    fleet: FleetReads,
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
    now = parse_ts(generated)
    doc = Doc()
    with matplotlib.rc_context(RC_PARAMS):
        if request_id is not None:
            cap = max_hosts or MAX_TIMELINE_HOSTS
            scope = _request_report(doc, fleet, request_id, now, cap)
            title = f"maas-lib report: request {request_id}"
        else:
            cap = max_hosts or WINDOW_TIMELINE_HOSTS
            scope = _window_report(doc, fleet, since, now, cap, latest)
            title = "maas-lib fleet report"
    return document(title, scope, now.strftime("%Y-%m-%d %H:%M:%S"), "".join(doc.parts))


def write_report(fleet: FleetReads, path: str | os.PathLike[str], **kw: Any) -> Path:
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
