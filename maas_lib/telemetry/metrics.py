"""Prometheus metrics: `maasctl metrics` (text exposition) and `maasctl metrics --serve`.

Every figure comes from the job-queue store at scrape time, through a custom collector:
nothing is counted in this process, so any number of exporters (or none) may run beside
the schedulers, and a restarted exporter reports the same counters as before. Host
outcomes and step durations are all-time aggregates of the step records, so they only
grow (as long as rows are not deleted) and are exposed as a counter and a histogram;
`rate()` and `increase()` over them work as for in-process instruments.

Metrics (all prefixed ``maas_``):

- ``maas_host_outcomes_total{action,result,error_class}`` counter: hosts whose task ended,
  `result` ``succeeded`` or ``failed``; `error_class` is ``""`` for successes (and
  ``unknown`` for a failure that recorded none). Every action with a request has its
  success series, at 0 until a host ends, so `rate()` sees the first one.
- ``maas_step_duration_seconds{action,step}`` histogram (``_bucket{le}``, ``_sum``,
  ``_count``): durations of recorded steps, whatever their outcome.
- ``maas_hosts_in_flight`` gauge: hosts leased by in-flight requests.
- ``maas_hosts{status}`` gauge: registered hosts by standing (every `HostStatus`).
- ``maas_requests{state}`` gauge: requests by state (every `RequestState`, 0 when none).
- ``maas_scheduler_workers`` gauge and ``maas_scheduler_heartbeat_age_seconds{worker}``:
  scheduler workers that have not retired (stopped cleanly) and heartbeated within the
  last day, and seconds since each one's last heartbeat.
- ``maas_scrape_duration_seconds`` gauge: time this collector took (store included).

A scrape that cannot read the store raises: `render` lets the error through to its
caller, and the HTTP server answers 500, which Prometheus records as the target down.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from maas_lib.errors import InputError
from maas_lib.models import HostStatus, RequestState
from maas_lib.store.base import Store
from maas_lib.telemetry.metrics_http import BasicAuth, TlsFiles, start_metrics_server
from maas_lib.telemetry.models import Stats, StepHistogram
from maas_lib.validation import parse_listen

__all__ = [
    "METRIC_NAMES",
    "STEP_BUCKETS",
    "FleetCollector",
    "parse_listen",
    "registry",
    "render",
    "serve",
]

#: Upper bounds (seconds) of the step-duration histogram's buckets; +Inf is added.
STEP_BUCKETS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

#: The metric families the collector emits (sample names add ``_total``, ``_bucket`` …).
METRIC_NAMES: tuple[str, ...] = (
    "maas_host_outcomes",
    "maas_step_duration_seconds",
    "maas_hosts_in_flight",
    "maas_hosts",
    "maas_requests",
    "maas_scheduler_workers",
    "maas_scheduler_heartbeat_age_seconds",
    "maas_scrape_duration_seconds",
)

#: Opens a store; the collector opens one per scrape and closes it afterwards.
StoreOpener = Callable[[], Store]


class FleetCollector(Collector):
    """Collects every ``maas_*`` metric from the store, once per scrape.

    `open_store` is called on each `collect` and the store closed before it returns, so
    the HTTP server's request threads never share a database connection."""

    def __init__(self, open_store: StoreOpener, buckets: tuple[float, ...] = STEP_BUCKETS):
        if not buckets or list(buckets) != sorted(set(buckets)) or math.inf in buckets:
            raise ValueError(f"buckets must be finite and strictly increasing (got {buckets!r})")
        self._open_store = open_store
        self._buckets = tuple(float(b) for b in buckets)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets a registry check names without a scrape."""
        yield from self._families(None, [], 0.0)

    def collect(self) -> Iterator[Metric]:
        """Read the store and yield the metric families (see the module docstring)."""
        started = time.perf_counter()
        store = self._open_store()
        try:
            stats = store.stats(None, None, None)
            histograms = store.step_histograms(None, self._buckets)
        finally:
            store.close()
        yield from self._families(stats, histograms, time.perf_counter() - started)

    def _families(
        self, stats: Stats | None, histograms: list[StepHistogram], elapsed: float
    ) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "maas_host_outcomes",
            "Hosts whose action ended, by action, result (succeeded or failed) and error "
            "class (empty for succeeded), since the database was created.",
            labels=["action", "result", "error_class"],
        )
        steps = HistogramMetricFamily(
            "maas_step_duration_seconds",
            "Durations of recorded host steps (any outcome), by action and step.",
            labels=["action", "step"],
            unit="seconds",
        )
        in_flight = GaugeMetricFamily(
            "maas_hosts_in_flight", "Hosts currently leased by in-flight requests."
        )
        hosts = GaugeMetricFamily("maas_hosts", "Registered hosts by standing.", labels=["status"])
        requests = GaugeMetricFamily("maas_requests", "Requests by state.", labels=["state"])
        workers = GaugeMetricFamily(
            "maas_scheduler_workers",
            "Scheduler workers not retired that heartbeated within the last day.",
        )
        heartbeat = GaugeMetricFamily(
            "maas_scheduler_heartbeat_age_seconds",
            "Seconds since each scheduler worker's last heartbeat.",
            labels=["worker"],
            unit="seconds",
        )
        scrape = GaugeMetricFamily(
            "maas_scrape_duration_seconds",
            "Seconds this scrape took to read the store.",
            unit="seconds",
        )
        if stats is not None:
            for a in stats.actions:
                outcomes.add_metric([a.action, "succeeded", ""], a.succeeded)
                for error_class, n in sorted(a.failures_by_class.items()):
                    outcomes.add_metric([a.action, "failed", error_class], n)
            for h in sorted(histograms, key=lambda h: (h.action, h.step)):
                buckets = [
                    (floatToGoString(le), float(n))
                    for le, n in zip(h.buckets, h.counts, strict=True)
                ]
                buckets.append(("+Inf", float(h.count)))
                steps.add_metric([h.action, h.step], buckets, h.sum_s)
            fleet = stats.fleet
            in_flight.add_metric([], fleet.hosts_in_flight)
            by_status = {str(s): 0 for s in HostStatus} | fleet.hosts_by_status
            for status, n in by_status.items():
                hosts.add_metric([status], n)
            by_state = {str(s): 0 for s in RequestState} | fleet.requests_by_state
            for state, n in by_state.items():
                requests.add_metric([state], n)
            workers.add_metric([], len(fleet.workers))
            for w in sorted(fleet.workers, key=lambda w: w.id):
                heartbeat.add_metric([w.id], max(w.heartbeat_age_s, 0.0))
            scrape.add_metric([], elapsed)
        yield from (outcomes, steps, in_flight, hosts, requests, workers, heartbeat, scrape)


def registry(open_store: StoreOpener) -> CollectorRegistry:
    """A registry holding only a `FleetCollector` (no process or platform metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(open_store))
    return reg


def render(open_store: StoreOpener) -> bytes:
    """One scrape in the Prometheus text exposition format (version 0.0.4)."""
    return generate_latest(registry(open_store))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(
    open_store: StoreOpener,
    host: str,
    port: int,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[str, int], None] | None = None,
    tls: TlsFiles | None = None,
    auth: BasicAuth | None = None,
) -> None:
    """Serve the metrics over HTTP (``GET /metrics``; other paths 404) until stopped; blocks.
    With `tls` over HTTPS, with `auth` only to that user (`metrics_http`).

    Each request is answered by a thread of its own, scraping the store afresh (see
    `FleetCollector`). Returns cleanly when `stop` is set or, when called from the main
    thread, on SIGTERM or SIGINT (the previous handlers are restored on return).
    `on_ready(host, port)` is called once listening, with the address actually bound
    (useful with port 0). A bind failure raises `InputError`."""
    stopping = threading.Event() if stop is None else stop
    try:
        httpd, thread = start_metrics_server(registry(open_store), host, port, tls=tls, auth=auth)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"--serve: cannot listen on {_hostport(host, port)}: {reason}") from None
    with ExitStack() as cleanup:

        @cleanup.callback
        def _shut_down() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)

        if threading.current_thread() is threading.main_thread():

            def on_signal(_signum: int, _frame: FrameType | None) -> None:
                stopping.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous = signal.signal(signum, on_signal)
                # None: a handler not installed from Python; the default is the best guess.
                restore = signal.SIG_DFL if previous is None else previous
                cleanup.callback(signal.signal, signum, restore)
        if on_ready is not None:
            bound = httpd.server_address
            on_ready(str(bound[0]), int(bound[1]))
        # A short timeout keeps the main thread responsive to signals on every platform.
        while not stopping.wait(0.5):
            pass
