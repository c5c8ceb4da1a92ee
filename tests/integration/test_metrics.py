"""Prometheus metrics over a real SQLite store filled by a real scheduler run.

The scheduler runs in-process against zero-latency simulated machines; some hosts fail
on purpose (a credential with no secret, an endpoint with no machine), so every metric
has something to count. Every scrape is parsed with prometheus_client's own parsers.
"""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import maas_lib
from maas_lib.errors import InputError, StoreError
from maas_lib.fleet import Fleet
from maas_lib.models import HostSpec, HostStatus, RequestState
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.store import Store, open_store
from maas_lib.telemetry.metrics import (
    METRIC_NAMES,
    STEP_BUCKETS,
    FleetCollector,
    parse_listen,
    render,
    serve,
)
from tests.conftest import patience

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "maas_lib" / "telemetry" / "grafana" / "maas-lib.json"


def host(name: str, port: int, credential: str = "lab") -> HostSpec:
    return HostSpec(
        name=name,
        pool="rack",
        bmc_address="127.0.0.1",
        bmc_port=port,
        bmc_credential=credential,
    )


#: Hosts with a machine and a credential: they succeed.
GOOD = [host(f"ok{i}", 7000 + i) for i in range(6)]
#: A credential with no secret anywhere: error class "credential".
NO_SECRET = [host(f"nocred{i}", 7100 + i, credential="ghost") for i in range(3)]
#: No simulated machine behind the endpoint: error class "unreachable".
NO_MACHINE = [host("dead0", 7200)]


def scrape(text: str) -> dict[str, list[Sample]]:
    """Samples by family name, parsed with prometheus_client's text-format parser."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    hits = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels, samples)
    return hits[0]


@dataclass
class Recorded:
    """A fleet after real scheduler runs, and what the store recorded of them."""

    db: Path
    fleet: Fleet
    requests: dict[int, str]  # request id → action
    worker_id: str
    text_while_running: str

    def opener(self) -> Callable[[], Store]:
        return lambda: open_store(self.db)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """Three requests of three actions (no host in two of them) run by one in-process
    worker (module-scoped: the scheduler runs once for the tests that read its record)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    mp.setenv("MAAS_CRED_LAB_PASSWORD", "secret")
    for var in ("MAAS_CRED_GHOST_USERNAME", "MAAS_CRED_GHOST_PASSWORD"):
        mp.delenv(var, raising=False)
    mp.delenv("MAAS_CREDENTIALS_FILE", raising=False)
    mp.delenv("MAAS_ALERT_WEBHOOK", raising=False)
    db = tmp_path_factory.mktemp("metrics") / "fleet.db"
    sim = InProcessFleet()
    for h in GOOD + NO_SECRET:
        sim.add_host(h, power="on")
    fleet = maas_lib.open_fleet(db)
    try:
        fleet.store.upsert_hosts(GOOD + NO_SECRET + NO_MACHINE, [], actor="test")
        worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.02, poll_interval=0.01)
        runner = threading.Thread(target=worker.run, name="scheduler")
        runner.start()
        try:
            batches = [
                ("power-cycle", [*GOOD[:3], *NO_SECRET[:2], *NO_MACHINE]),
                ("power-on", GOOD[3:5]),
                ("reboot", [GOOD[5], NO_SECRET[2]]),
            ]
            requests = {}
            for action, hosts in batches:
                rid = fleet.submit(
                    action, [h.name for h in hosts], batch_size="100%", max_failures="100%"
                ).id
                requests[rid] = action
            deadline = time.monotonic() + patience(30)
            while fleet.requests(["accepted", "running"]):
                assert time.monotonic() < deadline, "scheduler did not finish the requests"
                time.sleep(0.02)
            # Scraped while the worker is alive: its heartbeat is in the store.
            text = render(lambda: open_store(db)).decode()
        finally:
            worker.stop()
            runner.join(timeout=patience(30))
        assert not runner.is_alive()
        yield Recorded(db, fleet, requests, worker.id, text)
    finally:
        fleet.close()
        mp.undo()


# -- the exposition: values equal what the store recorded -----------------------------------


def test_host_outcomes_equal_the_recorded_host_tasks(recorded: Recorded) -> None:
    expected: Counter[tuple[str, str, str]] = Counter()
    for rid, action in recorded.requests.items():
        for h in recorded.fleet.status(rid).hosts:
            assert h.state in ("succeeded", "failed"), h
            error_class = "" if h.state == "succeeded" else (h.error_class or "unknown")
            expected[(action, h.state, error_class)] += 1
    # The fleet failed as designed: both failure classes are there.
    assert expected[("power-cycle", "failed", "credential")] == 2
    assert expected[("power-cycle", "failed", "unreachable")] == 1
    assert expected[("reboot", "failed", "credential")] == 1

    families = scrape(recorded.text_while_running)
    got = {
        (s.labels["action"], s.labels["result"], s.labels["error_class"]): s.value
        for s in families["maas_host_outcomes"]
        if s.name == "maas_host_outcomes_total"
    }
    assert got == {k: float(n) for k, n in expected.items()}


def test_step_histograms_count_every_recorded_step(recorded: Recorded) -> None:
    steps: dict[tuple[str, str], list[float]] = {}
    for rid, action in recorded.requests.items():
        for rec in recorded.fleet.steps(rid):
            if rec["duration_s"] is not None:
                steps.setdefault((action, rec["step"]), []).append(rec["duration_s"])
    assert ("power-cycle", "power-off") in steps

    samples = scrape(recorded.text_while_running)["maas_step_duration_seconds"]
    counts = {
        (s.labels["action"], s.labels["step"]): s.value
        for s in samples
        if s.name == "maas_step_duration_seconds_count"
    }
    assert counts == {k: float(len(v)) for k, v in steps.items()}
    for (action, step), durations in steps.items():
        labels = {"action": action, "step": step}
        total = value(samples, "maas_step_duration_seconds_sum", **labels)
        assert math.isclose(total, sum(durations), rel_tol=1e-9, abs_tol=1e-9)
        buckets = {
            float(s.labels["le"]): s.value
            for s in samples
            if s.name == "maas_step_duration_seconds_bucket"
            and (s.labels["action"], s.labels["step"]) == (action, step)
        }
        assert sorted(buckets) == [*STEP_BUCKETS, math.inf]
        for le, n in buckets.items():
            assert n == sum(d <= le for d in durations), (action, step, le)


def test_fleet_gauges_after_the_run(recorded: Recorded) -> None:
    during = scrape(recorded.text_while_running)
    assert value(during["maas_hosts_in_flight"], "maas_hosts_in_flight") == 0
    states = Counter(r.state for r in recorded.fleet.requests())
    for state in RequestState:
        assert value(during["maas_requests"], "maas_requests", state=str(state)) == states[state]
    assert states[RequestState.PARTIAL] == 2 and states[RequestState.FAILED] == 0
    n_hosts = len(GOOD + NO_SECRET + NO_MACHINE)
    assert value(during["maas_hosts"], "maas_hosts", status="active") == n_hosts
    assert value(during["maas_hosts"], "maas_hosts", status="quarantined") == 0
    # The worker was alive: one heartbeat, seconds old at most.
    assert value(during["maas_scheduler_workers"], "maas_scheduler_workers") == 1
    age = value(
        during["maas_scheduler_heartbeat_age_seconds"],
        "maas_scheduler_heartbeat_age_seconds",
        worker=recorded.worker_id,
    )
    assert 0 <= age < 15
    assert during["maas_scrape_duration_seconds"][0].value > 0

    # It has stopped cleanly since: retired, so no heartbeat is reported.
    after = scrape(render(recorded.opener()).decode())
    assert value(after["maas_scheduler_workers"], "maas_scheduler_workers") == 0
    assert after["maas_scheduler_heartbeat_age_seconds"] == []
    # Counters do not move without new outcomes.
    assert after["maas_host_outcomes"] == during["maas_host_outcomes"]


def test_gauges_follow_leases_standing_and_queue(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    with maas_lib.open_fleet(db) as fleet:
        store = fleet.store
        store.upsert_hosts(GOOD, [], actor="test")
        rid = fleet.submit("power-on", [h.name for h in GOOD[:3]]).id
        fleet.submit("power-on", [GOOD[3].name])  # stays accepted
        assert store.claim_request("test", ttl=30) == rid
        started = store.begin_hosts(
            rid, ["ok0", "ok1", "ok2"], batch=0, action="power-on", holder="test", limits={}
        ).started
        assert len(started) == 3
        store.set_host_status("ok5", HostStatus.QUARANTINED, "test", actor="test")
        store.heartbeat("worker-a", ttl=30)

        families = scrape(render(lambda: open_store(db)).decode())
    assert value(families["maas_hosts_in_flight"], "maas_hosts_in_flight") == 3
    assert value(families["maas_requests"], "maas_requests", state="accepted") == 1
    assert value(families["maas_requests"], "maas_requests", state="running") == 1
    assert value(families["maas_hosts"], "maas_hosts", status="active") == 5
    assert value(families["maas_hosts"], "maas_hosts", status="quarantined") == 1
    assert value(families["maas_hosts"], "maas_hosts", status="decommissioned") == 0
    assert value(families["maas_scheduler_workers"], "maas_scheduler_workers") == 1
    heartbeat = families["maas_scheduler_heartbeat_age_seconds"]
    assert [s.labels for s in heartbeat] == [{"worker": "worker-a"}]
    # No host has ended yet: an action with requests starts at 0, and no step is recorded.
    outcomes = families["maas_host_outcomes"]
    assert [(s.labels, s.value) for s in outcomes] == [
        ({"action": "power-on", "result": "succeeded", "error_class": ""}, 0.0)
    ]
    assert families["maas_step_duration_seconds"] == []


def test_every_family_is_described_and_named_by_convention(recorded: Recorded) -> None:
    families = list(text_string_to_metric_families(recorded.text_while_running))
    assert [f.name for f in families] == list(METRIC_NAMES)
    described = [f.name for f in FleetCollector(recorded.opener()).describe()]
    assert described == list(METRIC_NAMES)
    types = {f.name: f.type for f in families}
    assert types["maas_host_outcomes"] == "counter"
    assert types["maas_step_duration_seconds"] == "histogram"
    assert {types[n] for n in METRIC_NAMES[2:]} == {"gauge"}
    for f in families:
        assert re.fullmatch(r"maas_[a-z_]+", f.name) and f.documentation
        for s in f.samples:
            assert all(re.fullmatch(r"[a-z_]+", k) for k in s.labels)


def test_each_scrape_opens_and_closes_its_own_store(recorded: Recorded) -> None:
    opened: list[Store] = []

    def opener() -> Store:
        opened.append(open_store(recorded.db))
        return opened[-1]

    render(opener)
    render(opener)
    assert len(opened) == 2 and opened[0] is not opened[1]
    for store in opened:
        with pytest.raises(Exception, match="closed"):
            store.schema_version()


# -- the HTTP server ------------------------------------------------------------------------


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


#: What Prometheus 2.x sends when it scrapes a target.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def test_serve_answers_metrics_over_http_then_stops(recorded: Recorded) -> None:
    stop = threading.Event()
    bound: list[tuple[str, int]] = []
    ready = threading.Event()

    def on_ready(h: str, p: int) -> None:
        bound.append((h, p))
        ready.set()

    server = threading.Thread(
        target=serve,
        args=(recorded.opener(), "127.0.0.1", 0),
        kwargs={"stop": stop, "on_ready": on_ready},
        name="metrics-server",
    )
    server.start()
    try:
        assert ready.wait(10)
        host_, port = bound[0]
        assert host_ == "127.0.0.1" and port > 0
        url = f"http://127.0.0.1:{port}/metrics"

        status, content_type, body = get(url)
        assert status == 200
        assert content_type == CONTENT_TYPE_PLAIN_0_0_4
        served = scrape(body)
        expected = scrape(render(recorded.opener()).decode())
        assert list(served) == list(expected)
        assert served["maas_host_outcomes"] == expected["maas_host_outcomes"]
        assert served["maas_step_duration_seconds"] == expected["maas_step_duration_seconds"]

        # Prometheus itself asks for OpenMetrics, which must parse with the strict parser.
        status, content_type, body = get(url, PROMETHEUS_ACCEPT)
        assert status == 200 and content_type.startswith("application/openmetrics-text")
        names = [f.name for f in openmetrics_families(body)]
        assert names == list(METRIC_NAMES)

        # Scrapes in parallel, each on its own connection.
        with_threads: list[int] = []
        pool = [threading.Thread(target=lambda: with_threads.append(get(url)[0])) for _ in range(8)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=patience(10))
        assert with_threads == [200] * 8
    finally:
        stop.set()
        server.join(timeout=patience(10))
    assert not server.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_scrape_that_cannot_read_the_store_is_a_server_error(tmp_path: Path) -> None:
    """Prometheus records a 500 as the target down; the server goes on serving."""
    broken = tmp_path / "not-a-db"
    broken.write_text("this is not SQLite\n" * 100)
    good = tmp_path / "fleet.db"
    target = [broken]
    stop, ready, bound = threading.Event(), threading.Event(), []

    def on_ready(h: str, p: int) -> None:
        bound.append(p)
        ready.set()

    server = threading.Thread(
        target=serve,
        args=(lambda: open_store(target[0]), "127.0.0.1", 0),
        kwargs={"stop": stop, "on_ready": on_ready},
    )
    server.start()
    try:
        assert ready.wait(10)
        url = f"http://127.0.0.1:{bound[0]}/metrics"
        with pytest.raises(urllib.error.HTTPError) as err:
            get(url)
        assert err.value.code == 500
        target[0] = good
        assert get(url)[0] == 200
    finally:
        stop.set()
        server.join(timeout=patience(10))
    with pytest.raises(StoreError):
        render(lambda: open_store(broken))


def test_serve_reports_an_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=rf"--serve: cannot listen on 127.0.0.1:{port}"):
            serve(lambda: open_store(tmp_path / "fleet.db"), "127.0.0.1", port)


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys
    from maas_lib.store import open_store
    from maas_lib.telemetry.metrics import serve

    def ready(host, port):
        print(port, flush=True)

    serve(lambda: open_store(sys.argv[1]), "127.0.0.1", 0, on_ready=ready)
    print("returned", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_returns_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(tmp_path / "fleet.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=patience(10))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "returned"
    assert "Traceback" not in err


# -- --serve HOST:PORT ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("localhost:9100", ("localhost", 9100)),
        ("metrics.example.com:65535", ("metrics.example.com", 65535)),
        ("[::1]:9100", ("::1", 9100)),
        ("[::]:1", ("::", 1)),
        ("[fe80::1%eth0]:9100", ("fe80::1%eth0", 9100)),
        (":9100", ("127.0.0.1", 9100)),  # loopback unless an address is named
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9100",
        "localhost",
        "localhost:",
        "localhost:http",
        "localhost:0",
        "localhost:65536",
        "localhost:-1",
        "localhost:+9100",
        "localhost: 9100",
        "::1:9100",
        "[::1]",
        "[]:9100",
        "[::1:9100",
        "[nope]:9100",
        "a b:9100",
        "http://localhost:9100",
        "localhost:9100/metrics",
    ],
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_listen(text)
    assert str(err.value) == f"--serve: expected HOST:PORT (got {text!r})"


# -- the Grafana dashboard ------------------------------------------------------------------

#: PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum",
    "by",
    "without",
    "rate",
    "increase",
    "histogram_quantile",
    "max",
    "min",
    "avg",
    "count",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "label_values",
    "clamp_min",
    "time",
    "topk",
    "bool",
}


def metric_names_in(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that name series: not functions, keywords, label
    names in `by (…)` or matchers, strings, numbers or Grafana `$variables`."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"label_values\(([^,()]*),[^()]*\)", r"\1", expr)  # variable queries
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\w+|\$\{[^}]*\}", "", expr)  # Grafana variables
    idents = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", expr))
    return idents - PROMQL_WORDS


def emitted_sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_grafana_dashboard_queries_only_metrics_we_emit(recorded: Recorded) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"

    emitted = emitted_sample_names(recorded.text_while_running)
    # Everything a panel may query exists in a scrape with data (buckets included).
    assert "maas_step_duration_seconds_bucket" in emitted
    assert "maas_scheduler_heartbeat_age_seconds" in emitted

    exprs: list[str] = []
    titles = []
    ids = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        ids.append(panel["id"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
            exprs.append(t["expr"])
    assert len(set(ids)) == len(ids)
    instance = variables["instance"]
    exprs.append(instance["definition"])

    used: set[str] = set()
    for expr in exprs:
        names = metric_names_in(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= emitted, f"{expr!r} queries {sorted(names - emitted)}"
        used |= names
    # Each panel the issue asks for has its query.
    joined = "\n".join(exprs)
    assert re.search(r"rate\(maas_host_outcomes_total\{[^}]*result=\"succeeded\"", joined)
    assert "sum by (error_class)" in joined
    assert re.search(r"histogram_quantile\(0\.5, .*maas_step_duration_seconds_bucket", joined)
    assert re.search(r"histogram_quantile\(0\.95, .*maas_step_duration_seconds_bucket", joined)
    assert {
        "maas_host_outcomes_total",
        "maas_step_duration_seconds_bucket",
        "maas_hosts_in_flight",
        "maas_requests",
        "maas_scheduler_heartbeat_age_seconds",
    } <= used


def test_metric_name_extraction_from_promql() -> None:
    assert metric_names_in(
        'histogram_quantile(0.95, sum by (action, step, le) (rate(foo_bucket{a=~"$x"}[$w])))'
    ) == {"foo_bucket"}
    assert metric_names_in('sum(up{job="x"}) / sum(bar)') == {"up", "bar"}
    assert metric_names_in("label_values(baz, instance)") == {"baz"}
