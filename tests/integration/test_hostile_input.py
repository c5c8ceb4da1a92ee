"""Hostile input: markup in data from BMCs and the store never reaches rich as markup, and
no number a submitter (or a hand-edited row) can give stops the scheduler.

Real peers: a real SQLite file, the real CLI in a subprocess, the in-process simulated
machines (`maas_lib.sim.inproc`) as BMCs."""

from __future__ import annotations

import io
import json
import math
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import maas_lib
from maas_lib.errors import InputError
from maas_lib.models import TERMINAL_REQUEST_STATES
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.telemetry.progress import (
    BatchProgress,
    FailureGroup,
    RequestView,
    SlowHost,
    render,
    watch,
)
from tests.simfleet import blades

# -- markup -----------------------------------------------------------------------------

#: Text a BMC, an installer or a hand-edited row may hold: rich markup, emoji codes,
#: escapes, brackets — anything printable.
HOSTILE = st.text(
    alphabet=st.sampled_from(list("[]/\\:=#@ abcdefghijklmnopqrstuvwxyz0123456789-_.'\"")),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s)
MARKUP = "[/red] [bold]boom[/] :smile: \\[x] [link=file:///etc/passwd]x[/link]"


def rendered(renderable) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=4000, color_system=None, emoji=True).print(renderable)
    return out.getvalue()


@settings(max_examples=150, deadline=None)
@given(host=HOSTILE, reason=HOSTILE, error_class=HOSTILE, step=HOSTILE, state=HOSTILE)
@example(host="a", reason=MARKUP, error_class="[/]", step="[red]", state=":smile:")
def test_request_view_renders_any_text_literally(host, reason, error_class, step, state):
    view = RequestView(
        id=1,
        action="reboot",
        state="failed",
        reason=reason,
        host_count=1,
        counts={state: 1},
        batches=[BatchProgress(batch=0, hosts=1, counts={state: 1})],
        slowest=[SlowHost(host=host, seconds=1.0, state=state, slowest_step=step)],
        failures=[FailureGroup(error_class=error_class, hosts=[host], example=reason)],
    )
    text = rendered(render(view))
    for s in (host, reason, error_class, step, state):
        assert s in text


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")


def poison_request(db: Path, request_id: int, text: str) -> None:
    """What a hostile BMC's message would leave behind, written to the store directly."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE step_results SET outcome = 'failed', error_class = ?, error = ? "
            "WHERE request_id = ?",
            ("bmc[/red]", text, request_id),
        )
        conn.execute(
            "UPDATE request_hosts SET state = 'failed', error_class = ?, reason = ? "
            "WHERE request_id = ?",
            ("bmc[/red]", text, request_id),
        )
        conn.execute(
            "UPDATE requests SET state = 'failed', reason = ?, submitted_by = ? WHERE id = ?",
            (text, "[bold]eve[/bold]", request_id),
        )
    conn.close()


def test_status_steps_shows_markup_from_the_store_literally(cli, db_path, creds):
    hosts = blades(2)
    sim = InProcessFleet()
    for h in hosts:
        sim.add_host(h)
    with maas_lib.open_fleet(db_path) as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="t")
        rid = fleet.submit("power-on", ["blade*"]).id
        report = fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        assert report.finished == {rid: "succeeded"}
    poison_request(db_path, rid, MARKUP)

    r = cli("status", str(rid), "--steps", env={"COLUMNS": "400"})
    assert r.code == 0, r
    assert "Traceback" not in r.err and "MarkupError" not in r.err
    assert MARKUP in r.out  # the reason, the failures-by-class example, every step's error
    assert r.out.count(f"bmc[/red]: {MARKUP}") >= 2  # the steps table, one per host
    assert "[bold]eve[/bold]" in r.out

    # The live view draws the same data (`status --watch`, `submit --wait`).
    w = cli("status", str(rid), "--watch", env={"COLUMNS": "400"})
    assert w.code == 1, w  # the request failed; the view did not crash
    assert "MarkupError" not in w.err and MARKUP in w.err


def test_watch_view_renders_markup_from_the_store(db_path, creds):
    from rich.console import Console

    hosts = blades(1)
    sim = InProcessFleet()
    sim.add_host(hosts[0])
    with maas_lib.open_fleet(db_path) as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="t")
        rid = fleet.submit("power-on", ["blade0"]).id
        fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        poison_request(db_path, rid, MARKUP)
        out = io.StringIO()
        view = watch(fleet, rid, console=Console(file=out, width=400, color_system=None))
    assert view.state == "failed"
    assert MARKUP in out.getvalue() and "bmc[/red]" in out.getvalue()


# -- numbers ----------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
#: Out of every documented range, or not a number at all.
BAD_NUMBERS = [NAN, INF, -INF, 1e20, 1e308, -1, -0.5, 99999999999999999999]


def seconds(low: float, high: float) -> st.SearchStrategy:
    """Durations a test can afford to run with, or hostile ones."""
    return st.one_of(st.none(), st.sampled_from(BAD_NUMBERS), st.floats(low, high))


def amount() -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        st.sampled_from(BAD_NUMBERS).map(lambda v: str(v) if isinstance(v, float) else v),
        st.sampled_from(["99999999999999999999", "100001", "150%", "0", "1", "2", "50%", "9"]),
        st.integers(-2, 4),
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    policy=st.fixed_dictionaries(
        {
            "batch_size": amount(),
            "max_failures": amount(),
            "max_unavailable": amount(),
            "canary": st.one_of(st.none(), st.sampled_from(BAD_NUMBERS), st.integers(-1, 3)),
            "pause": seconds(0, 0.05),
        }
    ),
    run=st.fixed_dictionaries(
        {
            "claim_ttl": seconds(2, 30),
            "poll": seconds(0.01, 0.05),
            "timeout": seconds(1, 30),
            "power_timeout": seconds(5, 60),
            "poll_interval": seconds(0.01, 0.1),
            "soft_timeout": seconds(5, 60),
            "install_timeout": seconds(5, 60),
            "retries": st.one_of(st.none(), st.sampled_from(BAD_NUMBERS), st.integers(0, 2)),
        }
    ),
)
@example(policy={"pause": 1e20, "batch_size": "1"}, run={})
@example(policy={}, run={"poll": 1e20, "claim_ttl": INF, "power_timeout": 1e20})
def test_any_submitted_numbers_either_are_refused_or_the_request_ends(creds, policy, run):
    hosts = blades(3)
    sim = InProcessFleet()
    for h in hosts:
        sim.add_host(h)
    with tempfile.TemporaryDirectory() as tmp, maas_lib.open_fleet(Path(tmp) / "f.db") as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="t")
        try:
            rid = fleet.submit("power-cycle", ["blade*"], **policy).id
        except InputError as exc:
            rid = None
            assert str(exc).startswith("--"), exc  # names the option
            assert fleet.store.list_requests() == []
        try:
            worker = fleet.worker(driver_factory=sim.driver_factory, **run)
        except InputError as exc:
            assert str(exc).startswith("--"), exc
            worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.02)
        # A scheduler that never ends is a failure too, not a hung test.
        guard = threading.Timer(120, worker.stop)
        guard.start()
        try:
            report = worker.run(until_idle=True)
        finally:
            guard.cancel()
        assert report.errors == []
        if rid is not None:
            assert fleet.status(rid).state in TERMINAL_REQUEST_STATES
            assert report.finished == {rid: fleet.status(rid).state}


def edit_policy(store_url: str, request_id: int, **fields: object) -> None:
    """A row written by an older version, or edited by hand (SQLite or PostgreSQL)."""
    if not store_url.startswith("postgresql://"):
        conn = sqlite3.connect(store_url)
        with conn:
            (text,) = conn.execute(
                "SELECT policy FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
            policy = {**json.loads(text), **fields}
            conn.execute(
                "UPDATE requests SET policy = ? WHERE id = ?", (json.dumps(policy), request_id)
            )
        conn.close()
        return
    import psycopg
    from psycopg import sql

    from maas_lib.store.pg_url import parse_pg_url

    target = parse_pg_url(store_url)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
        (text,) = conn.execute(
            "SELECT policy FROM requests WHERE id = %s", (request_id,)
        ).fetchone()
        policy = {**json.loads(text), **fields}
        conn.execute(
            "UPDATE requests SET policy = %s WHERE id = %s", (json.dumps(policy), request_id)
        )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"pause": 1e20}, "pause"),
        ({"pause": "NaN"}, "pause"),
        ({"batch_size": "99999999999999999999"}, "batch_size"),
        ({"canary": -4}, "canary"),
        ({"on_overlap": "queue"}, "on_overlap"),
    ],
)
def test_a_stored_request_out_of_range_fails_alone_with_a_reason(store_url, creds, fields, words):
    hosts = blades(4)
    sim = InProcessFleet()
    for h in hosts:
        sim.add_host(h)
    with maas_lib.open_fleet(store_url) as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="t")
        bad = fleet.submit("power-on", ["blade0", "blade1"], batch_size="1").id
        good = fleet.submit("power-on", ["blade2", "blade3"], batch_size="1").id
        edit_policy(store_url, bad, **fields)
        # Readers still show it.
        assert fleet.status(bad).state == "accepted"
        report = fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        assert report.errors == []
        assert report.finished == {bad: "failed", good: "succeeded"}
        st = fleet.status(bad)
        assert st.reason is not None and "stored policy is invalid" in st.reason, st.reason
        assert words in st.reason
        assert {h.state for h in st.hosts} == {"cancelled"}
        machines = sim.by_name()
        assert not any(machines[f"blade{i}"].history for i in (0, 1))  # never touched
        assert all(machines[f"blade{i}"].power == "on" for i in (2, 3))


OUT_OF_RANGE = [
    (["submit", "reboot", "web*", "--pause", "1e20"], "--pause:"),
    (["submit", "reboot", "web*", "--pause", "nan"], "--pause:"),
    (["submit", "reboot", "web*", "--pause", "inf"], "--pause:"),
    (["submit", "reboot", "web*", "--batch-size", "99999999999999999999"], "--batch-size:"),
    (["submit", "reboot", "web*", "--max-failures", "99999999999999999999"], "--max-failures:"),
    (
        ["submit", "reboot", "web*", "--max-unavailable", "99999999999999999999"],
        "--max-unavailable:",
    ),
    (["submit", "reboot", "web*", "--canary", "99999999999999999999"], "--canary:"),
    (["run", "--until-idle", "--claim-ttl", "inf"], "--claim-ttl:"),
    (["run", "--until-idle", "--claim-ttl", "nan"], "--claim-ttl:"),
    (["run", "--until-idle", "--timeout", "inf"], "--timeout:"),
    (["run", "--until-idle", "--power-timeout", "1e20"], "--power-timeout:"),
    (["run", "--until-idle", "--poll", "1e20"], "--poll:"),
    (["run", "--until-idle", "--soft-timeout", "inf"], "--soft-timeout:"),
    (["run", "--until-idle", "--install-timeout", "1e20"], "--install-timeout:"),
]


@pytest.mark.parametrize(
    ("args", "words"),
    OUT_OF_RANGE,
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_cli_refuses_numbers_out_of_range_with_exit_2(
    cli, cli_in_process, inventory, db_path, args, words
):
    assert cli_in_process("hosts", "import", str(inventory)).code == 0
    conn = sqlite3.connect(db_path)
    before = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    conn.close()
    # In-process (the entry point's own main); the first case of each command through the
    # installed entry point, as a user meets it.
    run = cli if args in (OUT_OF_RANGE[0], OUT_OF_RANGE[7]) else cli_in_process
    r = run(*args)
    assert r.code == 2, r
    assert r.err.count("\n") == 1 and r.err.startswith("maasctl: error: "), r.err
    assert words in r.err and "Traceback" not in r.err
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == before
    conn.close()
