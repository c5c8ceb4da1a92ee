"""One request at a glance: progress per batch, counts, slowest hosts, failures by class.

`request_view` computes the figures from a request's status and steps, a pure function
(the Python API returns them as a typed object, `Fleet.summary`); `render` draws them with
rich, both for `maasctl status ID` and, refreshed, for `maasctl status ID --watch` /
`submit … --wait`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from maas_lib.classes import ErrorClass
from maas_lib.models import TERMINAL_REQUEST_STATES, HostTaskState, RequestStatus


class Summaries(Protocol):
    """Where `watch` reads a request's view again (`maas_lib.fleet.Fleet.summary`)."""

    def summary(self, request_id: int) -> RequestView: ...


#: Host states that are over, one way or another.
_ENDED = {
    HostTaskState.SUCCEEDED,
    HostTaskState.FAILED,
    HostTaskState.DROPPED,
    HostTaskState.CANCELLED,
}


class BatchProgress(BaseModel, defer_build=True):
    batch: int
    hosts: int
    counts: dict[str, int]

    @property
    def ended(self) -> int:
        return sum(n for state, n in self.counts.items() if state in _ENDED)


class SlowHost(BaseModel, defer_build=True):
    host: str
    seconds: float
    state: str
    slowest_step: str | None = None


class FailureGroup(BaseModel, defer_build=True):
    error_class: str
    hosts: list[str]
    example: str | None = None


class RequestView(BaseModel, defer_build=True):
    id: int
    action: str
    state: str
    reason: str | None = None
    host_count: int
    counts: dict[str, int]
    waiting: int = 0  # pending hosts waiting for another request
    batches: list[BatchProgress] = Field(default_factory=list)
    slowest: list[SlowHost] = Field(default_factory=list)
    failures: list[FailureGroup] = Field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_REQUEST_STATES

    @property
    def all_succeeded(self) -> bool:
        return self.counts.get(HostTaskState.SUCCEEDED, 0) == self.host_count


def request_view(
    st: RequestStatus, steps: Sequence[dict[str, Any]], *, slowest: int = 5
) -> RequestView:
    """The view of a request from its status and its steps (`Fleet.steps`, every host)."""
    per_batch: dict[int, dict[str, int]] = {}
    for h in st.hosts:
        if h.batch is not None:
            counts = per_batch.setdefault(h.batch, {})
            counts[h.state] = counts.get(h.state, 0) + 1
    groups: dict[str, FailureGroup] = {}
    for h in st.hosts:
        if h.state == HostTaskState.FAILED:
            key = h.error_class or ErrorClass.UNKNOWN
            group = groups.setdefault(key, FailureGroup(error_class=key, hosts=[]))
            group.hosts.append(h.host)
            group.example = group.example or h.reason
    # Time each host spent in steps (all attempts), and its slowest step.
    spent: dict[str, float] = {}
    worst: dict[str, tuple[float, str]] = {}
    for s in steps:
        d = s["duration_s"] or 0.0
        spent[s["host"]] = spent.get(s["host"], 0.0) + d
        if d >= worst.get(s["host"], (-1.0, ""))[0]:
            worst[s["host"]] = (d, s["step"])
    state_of = {h.host: h.state for h in st.hosts}
    top = sorted(spent.items(), key=lambda kv: -kv[1])[:slowest]
    return RequestView(
        id=st.id,
        action=st.action,
        state=st.state,
        reason=st.reason,
        host_count=st.host_count,
        counts=st.counts,
        waiting=sum(
            1
            for h in st.hosts
            if h.state == HostTaskState.PENDING and h.reason and h.reason.startswith("waiting")
        ),
        batches=[
            BatchProgress(batch=b, hosts=sum(c.values()), counts=c)
            for b, c in sorted(per_batch.items())
        ],
        slowest=[
            SlowHost(host=h, seconds=round(sec, 3), state=state_of[h], slowest_step=worst[h][1])
            for h, sec in top
        ],
        failures=sorted(groups.values(), key=lambda g: (-len(g.hosts), g.error_class)),
    )


def render(view: RequestView) -> Any:
    """A rich renderable: headline, a bar per batch, slowest hosts, failures by class.

    Every string drawn is a `Text`, never markup: host names, reasons and error classes come
    from the store, BMCs and installers, and may hold `[/red]` or `:emoji:` codes."""
    # rich when a view is drawn: `status --json` and the Python API do without it.
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def fmt(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no hosts"

    parts: list[Any] = [
        Text(
            f"request {view.id}: {view.action} {view.state} — {fmt(view.counts)}"
            + (f"; {view.waiting} waiting for other requests" if view.waiting else ""),
            style="bold",
        )
    ]
    if view.reason:
        parts.append(Text(f"  {view.reason}"))
    ended = sum(n for s, n in view.counts.items() if s in _ENDED)
    overall = Table.grid(padding=(0, 1))
    overall.add_row(
        Text("  all     "),
        ProgressBar(total=max(view.host_count, 1), completed=ended, width=40),
        Text(f"{ended}/{view.host_count} done"),
    )
    for b in view.batches:
        overall.add_row(
            Text(f"  batch {b.batch:<3}"),
            ProgressBar(total=max(b.hosts, 1), completed=b.ended, width=40),
            Text(f"{b.ended}/{b.hosts}  {fmt(b.counts)}"),
        )
    parts.append(overall)
    if view.slowest:
        slow = Table(title="slowest hosts", show_edge=False, title_justify="left")
        for col in ("host", "seconds in steps", "slowest step", "state"):
            slow.add_column(col)
        for h in view.slowest:
            slow.add_row(
                Text(h.host), Text(f"{h.seconds:.1f}"), Text(h.slowest_step or ""), Text(h.state)
            )
        parts.append(slow)
    if view.failures:
        fail = Table(title="failures by class", show_edge=False, title_justify="left")
        for col in ("error class", "hosts", "e.g."):
            fail.add_column(col)
        for g in view.failures:
            shown = ", ".join(g.hosts[:5]) + (f" (+{len(g.hosts) - 5})" if len(g.hosts) > 5 else "")
            fail.add_row(
                Text(g.error_class), Text(f"{len(g.hosts)}: {shown}"), Text(g.example or "")
            )
        parts.append(fail)
    return Group(*parts)


def watch(
    fleet: Summaries,
    request_id: int,
    *,
    interval: float = 1.0,
    timeout: float | None = None,
    console: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RequestView:
    """Redraw the request's view until it ends (or `timeout`); return the last view."""
    return show_live(polled(fleet, request_id, interval, timeout, sleep), console=console)


def polled(
    fleet: Summaries,
    request_id: int,
    interval: float = 1.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[RequestView]:
    """The request's view every `interval` seconds until it ends (or `timeout`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = fleet.summary(request_id)
    yield view
    while not view.ended and (deadline is None or time.monotonic() < deadline):
        sleep(interval)
        view = fleet.summary(request_id)
        yield view


def show_live(views: Iterable[RequestView], *, console: Any = None) -> RequestView:
    """Draw each view as it comes (polled, or pushed by the API's progress stream),
    redrawing in place; return the last one."""
    # rich when a view is drawn, as in `render`.
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    stream = iter(views)
    view = next(stream)
    with Live(render(view), console=console, refresh_per_second=4, transient=False) as live:
        for view in stream:
            live.update(render(view))
    return view
