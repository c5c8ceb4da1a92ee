"""The scheduler end to end against the simulator, judged by the simulator's own record.

Every assertion about what happened to hardware reads the simulated machines' power
history (written by the simulator process), not the scheduler's view of itself.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from maas_lib.errors import InputError
from tests.conftest import patience
from tests.simfleet import FAST_RUN, run_args, running_sim

pytestmark = pytest.mark.slow

RUN = dict(FAST_RUN)


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    directory = tmp_path_factory.mktemp("schedsim")
    with running_sim(
        directory,
        ipmi=8,
        redfish=4,
        dead=1,
        bad_install=1,
        power_delay=0.2,
        install_time=0.8,
    ) as s:
        # A standing budget for the IPMI pool, declared the way an inventory does.
        extra = directory / "budgets.yml"
        extra.write_text(
            "all:\n  children:\n    sim_ipmi:\n      vars:\n        pool_max_unavailable: 2\n"
            "      hosts:\n        sim-ipmi-0001: {drain_note: drained-by-hook}\n"
        )
        with s.fleet() as fleet:
            fleet.import_hosts([s.info["inventory"], str(extra)])
        yield s


@pytest.fixture
def env(sched, monkeypatch):
    for key, value in sched.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAAS_DB", str(sched.db))
    return {**os.environ}


@pytest.fixture
def fleet(sched, env):
    with sched.fleet() as f:
        yield f


def good(sched, kind):
    return sched.hosts(kind=kind)


def bad_install(sched, kind):
    return sched.hosts(fault="bad_install", kind=kind)[0]


def dead(sched, kind):
    return sched.hosts(fault="dead", kind=kind)[0]


def powered_on(fleet, hosts):
    """Every host on (confirmed), and the wall-clock time after which to read history."""
    results = fleet.bmc_power("on", hosts)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return time.time()


def offs_since(state, host, since):
    return sum(1 for t, s in state[host]["power_history"] if t >= since and s == "off")


def peak_down(state, hosts, since):
    """Most of `hosts` powered off at one moment, from the simulator's power history."""
    events = []
    for h in hosts:
        for t, s in state[h]["power_history"]:
            if t >= since:
                events.append((t, 1 if s == "off" else -1))
    current = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak


def by_host(status):
    return {h.host: h for h in status.hosts}


# -- budgets and batches ----------------------------------------------------------------


def test_rolling_power_cycle_never_exceeds_pool_budget_or_batch_size(sched, fleet):
    ipmi = good(sched, "ipmi")  # six healthy IPMI hosts: pool sim_ipmi, standing budget 2
    redfish = good(sched, "redfish")
    since = powered_on(fleet, ipmi + redfish)
    # Two requests on one pool at once: the budget holds across them, not per request.
    a = fleet.submit("power-cycle", ipmi[:3], batch_size="3").id
    b = fleet.submit("power-cycle", ipmi[3:], batch_size="3").id
    c = fleet.submit("power-cycle", redfish, batch_size="1").id
    report = fleet.run(**RUN)
    assert report.finished == {a: "succeeded", b: "succeeded", c: "succeeded"}
    state = sched.state()
    assert all(offs_since(state, h, since) == 1 for h in ipmi + redfish)
    assert peak_down(state, ipmi, since) <= 2, "pool budget of 2 exceeded"
    assert peak_down(state, redfish, since) <= 1, "batch size of 1 exceeded"
    assert fleet.inflight() == []


def test_request_budget_is_the_tighter_of_pool_and_request(sched, fleet):
    ipmi = good(sched, "ipmi")
    since = powered_on(fleet, ipmi)
    rid = fleet.submit("power-cycle", ipmi, batch_size="100%", max_unavailable="1").id
    fleet.run(**RUN)
    assert fleet.status(rid).state == "succeeded"
    state = sched.state()
    assert peak_down(state, ipmi, since) == 1
    assert all(offs_since(state, h, since) == 1 for h in ipmi)


# -- overlaps ---------------------------------------------------------------------------


def test_overlapping_requests_drop_the_overlap_naming_the_holder(sched, fleet):
    rf = good(sched, "redfish")
    ipmi = good(sched, "ipmi")
    since = powered_on(fleet, [rf[0], rf[1], ipmi[0]])
    first = fleet.submit("reboot", [rf[0], rf[1]]).id
    second = fleet.submit("reboot", [rf[1], ipmi[0]]).id
    fleet.run(**RUN)
    st = by_host(fleet.status(second))
    assert st[rf[1]].state == "dropped"
    assert st[rf[1]].holder == first
    assert st[rf[1]].reason == f"held by request {first}"
    assert st[ipmi[0]].state == "succeeded"
    assert fleet.status(first).state == "succeeded"
    assert fleet.status(second).state == "partial"
    # The simulator saw the shared host go down once: only the holder acted on it.
    assert offs_since(sched.state(), rf[1], since) == 1


def test_waiting_overlap_runs_after_the_holder_lets_go(sched, fleet):
    host = good(sched, "ipmi")[1]
    since = powered_on(fleet, [host])
    first = fleet.submit("power-cycle", [host]).id
    second = fleet.submit("power-cycle", [host], on_overlap="wait").id
    fleet.run(**RUN)
    assert fleet.status(first).state == "succeeded"
    assert fleet.status(second).state == "succeeded"
    history = [(t, s) for t, s in sched.state()[host]["power_history"] if t >= since]
    # Two whole cycles, one after the other: never both requests on the host at once.
    assert [s for _, s in history] == ["off", "on", "off", "on"]
    kinds = [e.kind for e in fleet.events(second)]
    assert "hosts_waiting" in kinds


# -- actions ----------------------------------------------------------------------------

PLAYBOOK = """
- hosts: all
  gather_facts: false
  connection: local
  vars: {{ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"}}
  tasks:
{tasks}
"""


def test_hooks_run_around_each_host_with_its_inventory_vars(sched, fleet, tmp_path):
    host = good(sched, "ipmi")[0]
    powered_on(fleet, [host])
    out = tmp_path / "out"
    out.mkdir()
    pre, post = tmp_path / "pre.yml", tmp_path / "post.yml"
    line = "{{ maas_hook }} {{ drain_note }} {{ maas_action }} {{ maas_request_id }}"
    for path in (pre, post):
        path.write_text(
            PLAYBOOK.format(
                tasks=f"    - copy: {{content: '{line}', dest: '{out}/{{{{ maas_hook }}}}'}}"
            )
        )
    rid = fleet.submit("power-cycle", [host], pre_hook=str(pre), post_hook=str(post)).id
    fleet.run(**RUN)
    assert fleet.status(rid).state == "succeeded"
    steps = [s["step"] for s in fleet.steps(rid, host)]
    assert steps == ["pre-hook", "power-off", "power-on", "post-hook"]
    assert (out / "pre").read_text() == f"pre drained-by-hook power-cycle {rid}"
    assert (out / "post").read_text() == f"post drained-by-hook power-cycle {rid}"


def test_a_failing_pre_hook_fails_the_host_before_its_bmc_is_touched(sched, fleet, tmp_path):
    host = good(sched, "ipmi")[1]
    since = powered_on(fleet, [host])
    pre = tmp_path / "drain.yml"
    pre.write_text(PLAYBOOK.format(tasks="    - name: drain\n      fail: {msg: node not drained}"))
    rid = fleet.submit("reboot", [host], pre_hook=str(pre)).id
    fleet.run(**RUN)
    h = by_host(fleet.status(rid))[host]
    assert (h.state, h.error_class) == ("failed", "hook_failed")
    assert "drain" in h.reason and "node not drained" in h.reason
    assert offs_since(sched.state(), host, since) == 0
    with pytest.raises(InputError, match=r"--pre-hook: playbook .*nope\.yml not found"):
        fleet.submit("reboot", [host], pre_hook=str(tmp_path / "nope.yml"))


def test_power_off_and_power_on(sched, fleet):
    host = good(sched, "ipmi")[4]
    powered_on(fleet, [host])
    fleet.submit("power-off", [host])
    fleet.run(**RUN)
    assert sched.state()[host]["power"] == "off"
    fleet.submit("power-on", [host])
    fleet.run(**RUN)
    assert sched.state()[host]["power"] == "on"


def test_reboot_falls_back_to_hard_off_after_the_soft_timeout(sched, fleet):
    host = good(sched, "ipmi")[2]
    since = powered_on(fleet, [host])
    rid = fleet.submit("reboot", [host]).id
    # The simulated OS takes 0.2 s to shut down; give it less.
    fleet.run(**{**RUN, "soft_timeout": 0.05})
    assert fleet.status(rid).state == "succeeded"
    steps = [(s["step"], s["outcome"]) for s in fleet.steps(rid, host)]
    assert steps == [("soft-off", "timeout"), ("power-off", "succeeded"), ("power-on", "succeeded")]
    assert sched.state()[host]["power"] == "on"
    assert offs_since(sched.state(), host, since) == 1


def test_reimage_succeeds_for_good_hosts_and_names_failed_installs(sched, fleet):
    ok = [good(sched, "ipmi")[0], good(sched, "redfish")[0]]
    broken = [bad_install(sched, "ipmi"), bad_install(sched, "redfish")]
    powered_on(fleet, ok + broken)
    rid = fleet.submit(
        "reimage", ok + broken, image="ubuntu-24.04", batch_size="100%", max_failures="100%"
    ).id
    fleet.run(**RUN)
    st = fleet.status(rid)
    assert st.state == "partial"
    hosts = by_host(st)
    state = sched.state()
    for h in ok:
        assert hosts[h].state == "succeeded"
        assert state[h]["installed_image"] == "ubuntu-24.04"
        assert state[h]["power"] == "on"
    for h in broken:
        assert hosts[h].state == "failed"
        assert hosts[h].error_class == "install_failed"
        assert "simulated installer failure" in hosts[h].reason
        assert state[h]["installed_image"] != "ubuntu-24.04"
    steps = [s["step"] for s in fleet.steps(rid, ok[0])]
    assert steps == [
        "set-install-target",
        "power-off",
        "boot-image",
        "power-on",
        "wait-install",
        "verify-image",
    ]


def test_reimage_boots_redfish_hosts_from_virtual_media_when_an_image_url_is_set(sched, fleet):
    rf = good(sched, "redfish")[1]
    ipmi = good(sched, "ipmi")[3]
    powered_on(fleet, [rf, ipmi])
    rid = fleet.submit("reimage", [rf, ipmi], image="debian-13", batch_size="100%").id
    fleet.run(**RUN, image_url="https://images.example/{image}.iso")
    assert fleet.status(rid).state == "succeeded"
    state = sched.state()
    # The simulated Redfish BMC booted the ISO it was given; IPMI has no virtual media.
    assert state[rf]["installed_image"] == "debian-13"
    assert state[rf]["media_url"] is None  # ejected afterwards
    assert state[ipmi]["installed_image"] == "debian-13"
    assert [s["step"] for s in fleet.steps(rid, rf)][-1] == "eject-media"
    assert "eject-media" not in [s["step"] for s in fleet.steps(rid, ipmi)]


def test_reimage_without_an_install_report_times_out(sched, fleet):
    host = good(sched, "ipmi")[1]
    powered_on(fleet, [host])
    rid = fleet.submit("reimage", [host], image="rocky-9").id
    fleet.run(**{**RUN, "install_timeout": 0.3})  # the simulated install takes 0.8 s
    h = by_host(fleet.status(rid))[host]
    assert (h.state, h.error_class) == ("failed", "install_timeout")
    assert h.reason.startswith("wait-install: no install report for rocky-9")
    assert fleet.status(rid).state == "failed"


def test_max_failures_cancels_the_remaining_batches(sched, fleet):
    bad = dead(sched, "redfish")  # refused at once (a dead IPMI BMC costs seconds a step)
    rest = good(sched, "ipmi")[4:6]
    since = powered_on(fleet, rest)
    rid = fleet.submit("power-cycle", [bad, *rest], batch_size="1", max_failures="0").id
    started = time.monotonic()
    fleet.run(**{**RUN, "timeout": 1.0, "retries": 0})
    assert time.monotonic() - started < 15
    st = fleet.status(rid)
    hosts = by_host(st)
    assert (hosts[bad].state, hosts[bad].error_class) == ("failed", "unreachable")
    for h in rest:
        assert hosts[h].state == "cancelled"
        assert hosts[h].reason.startswith("max failures exceeded: 1 failed > 0 allowed")
        assert offs_since(sched.state(), h, since) == 0
    assert st.state == "failed"


def test_cancel_stops_a_running_request_after_its_current_batch(sched, fleet):
    hosts = good(sched, "redfish")
    since = powered_on(fleet, hosts)
    rid = fleet.submit("power-cycle", hosts, batch_size="1", pause=3).id
    worker = fleet.worker(**RUN)
    t = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    t.start()
    deadline = time.monotonic() + patience(20)
    while fleet.status(rid).counts.get("succeeded", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fleet.cancel(rid) == "running"
    t.join(30)
    assert not t.is_alive()
    st = fleet.status(rid)
    assert st.state == "cancelled"
    states = [h.state for h in st.hosts]
    assert states[0] == "succeeded" and "cancelled" in states and "failed" not in states
    state = sched.state()
    for h in st.hosts:
        assert offs_since(state, h.host, since) == (1 if h.state == "succeeded" else 0)


# -- telemetry --------------------------------------------------------------------------


def _nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(1, -(-p * len(ordered) // 100)) - 1]


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_rollout_with_failures_is_reported_as_the_simulator_saw_it(sched, fleet, monkeypatch):
    ok = good(sched, "ipmi")[:3] + good(sched, "redfish")[:1]
    broken = [bad_install(sched, "ipmi"), bad_install(sched, "redfish")]
    down = [dead(sched, "redfish")]  # refused at once (a dead IPMI BMC costs seconds a step)
    powered_on(fleet, ok + broken)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    monkeypatch.setenv("MAAS_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    # `since` has whole seconds: start in a second of our own, so steps an earlier test
    # ended a moment ago are not counted.
    time.sleep(1.01 - time.time() % 1)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    rid = fleet.submit(
        "reimage", ok + broken + down, image="ubuntu-24.04", batch_size="3", max_failures="100%"
    ).id
    fleet.run(**{**RUN, "timeout": 1.0, "retries": 0})
    server.shutdown()
    state = sched.state()
    # What the simulator recorded: which machines now run the image.
    installed = {h for h in ok + broken + down if state[h]["installed_image"] == "ubuntu-24.04"}
    assert installed == set(ok)

    (a,) = fleet.stats(since, action="reimage").actions
    assert (a.succeeded, a.failed) == (len(installed), len(broken) + len(down))
    assert a.success_rate == round(len(ok) / 7, 4)
    assert a.failures_by_class == {"install_failed": 2, "unreachable": 1}
    assert a.requests == 1 and a.requests_by_state == {"partial": 1}
    assert a.queue_wait.count == 1 and a.queue_wait.p50_s >= 0
    records = fleet.steps(rid)
    for s in a.steps:
        durations = [r["duration_s"] for r in records if r["step"] == s.step]
        assert s.count == len(durations)
        assert s.p50_s == pytest.approx(_nearest_rank(durations, 50))
        assert s.p95_s == pytest.approx(_nearest_rank(durations, 95))
        assert s.max_s == pytest.approx(max(durations))
    # wait-install took about the simulator's install time (0.8 s) for good hosts.
    wait = next(s for s in a.steps if s.step == "wait-install")
    assert 0.5 < wait.p50_s < 5
    pools = {b.value: (b.succeeded, b.failed) for b in a.by_pool}
    assert pools == {"sim_ipmi": (3, 1), "sim_redfish": (1, 2)}
    # And the alert went out: the request ended partial.
    deadline = time.monotonic() + patience(5)
    while not _Hook.received and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = [e for e in _Hook.received if e["request_id"] == rid]
    assert event["event"] == "request_partial"
    assert event["failures_by_class"] == {"install_failed": 2, "unreachable": 1}
    view = fleet.summary(rid)
    assert {g.error_class: len(g.hosts) for g in view.failures} == event["failures_by_class"]
    assert [b.hosts for b in view.batches] == [3, 3, 1]


# -- crash safety -----------------------------------------------------------------------


def _maasctl(env, *args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "maas_lib", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


RUN_ARGS = run_args()


def _wait_succeeded(fleet, rid, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet.status(rid).counts.get("succeeded", 0) >= n:
            return
        time.sleep(0.05)
    hosts = [(h.host, h.state, h.error_class, h.reason) for h in fleet.status(rid).hosts]
    raise AssertionError(f"fewer than {n} hosts succeeded in {timeout}s: {hosts}")


def test_sigkilled_scheduler_resumes_without_repeating_completed_hosts(sched, fleet, env):
    hosts = good(sched, "ipmi")
    since = powered_on(fleet, hosts)
    rid = fleet.submit("power-cycle", hosts, batch_size="1").id
    proc = _maasctl(env, "run", "--claim-ttl", "2", *RUN_ARGS)
    try:
        _wait_succeeded(fleet, rid, 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done_before = {h.host for h in fleet.status(rid).hosts if h.state == "succeeded"}
    assert fleet.status(rid).state == "running"
    assert len(done_before) < len(hosts)

    resumed = _maasctl(env, "run", "--until-idle", "--claim-ttl", "2", *RUN_ARGS)
    _, err = resumed.communicate(timeout=patience(90))
    assert resumed.returncode == 0, err
    st = fleet.status(rid)
    assert st.state == "succeeded", st.reason
    state = sched.state()
    for h in hosts:
        offs = offs_since(state, h, since)
        if h in done_before:
            assert offs == 1, f"{h} completed before the crash but was cycled again"
        else:
            assert offs >= 1
    # Only steps in flight at the crash were retried, and they are marked so: no step
    # of any host succeeded twice.
    records = fleet.steps(rid)
    interrupted = {s["host"] for s in records if s["outcome"] == "interrupted"}
    assert not interrupted & done_before
    ok = [(s["host"], s["step"]) for s in records if s["outcome"] == "succeeded"]
    assert len(ok) == len(set(ok)) == 2 * len(hosts)
    assert any(e.kind == "request_resumed" for e in fleet.events(rid))
    assert fleet.inflight() == []


def test_sigterm_finishes_steps_in_flight_and_hands_over_at_once(sched, fleet, env):
    hosts = good(sched, "redfish")
    powered_on(fleet, hosts)
    rid = fleet.submit("power-cycle", hosts, batch_size="1").id
    # A long claim TTL: the next worker can only start at once if the claim was released.
    proc = _maasctl(env, "run", "--claim-ttl", "300", *RUN_ARGS)
    _wait_succeeded(fleet, rid, 1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=patience(30))
    assert proc.returncode == 0, err
    assert f"request {rid}: left for another worker" in out
    st = fleet.status(rid)
    assert st.state == "running" and st.claimed_by is None
    assert not any(s["outcome"] == "running" for s in fleet.steps(rid))

    started = time.monotonic()
    resumed = _maasctl(env, "run", "--until-idle", "--claim-ttl", "300", *RUN_ARGS)
    _, err = resumed.communicate(timeout=patience(60))
    assert resumed.returncode == 0, err
    assert time.monotonic() - started < 30
    assert fleet.status(rid).state == "succeeded"


def test_two_schedulers_share_one_queue_each_request_run_by_one(sched, fleet, env):
    ipmi = good(sched, "ipmi")
    rf = good(sched, "redfish")
    since = powered_on(fleet, ipmi + rf)
    groups = [ipmi[:2], ipmi[2:4], ipmi[4:6], rf]
    ids = [fleet.submit("power-cycle", g, batch_size="1").id for g in groups]
    # Two requests at a time each, so both workers get some of the four.
    args = ["run", "--until-idle", "--claim-ttl", "5", "--max-requests", "2", *RUN_ARGS]
    procs = [_maasctl(env, *args) for _ in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=patience(120))
        assert p.returncode == 0, err
    workers = set()
    for rid in ids:
        status = fleet.status(rid)
        assert status.state == "succeeded", [
            (h.host, h.state, h.error_class, h.reason) for h in status.hosts
        ]
        claims = [e for e in fleet.events(rid) if e.kind in ("request_claimed", "request_resumed")]
        assert len(claims) == 1, claims
        workers.add(claims[0].actor)
    state = sched.state()
    assert all(offs_since(state, h, since) == 1 for g in groups for h in g)
    assert len(workers) == 2


# -- wipe and decommission (last: they change hosts' standing) --------------------------


def test_wipe_succeeds_and_a_failed_wipe_quarantines_the_host(sched, fleet):
    ok = good(sched, "ipmi")[2]
    broken = bad_install(sched, "redfish")
    powered_on(fleet, [ok, broken])
    rid = fleet.submit("wipe", [ok, broken], batch_size="100%", max_failures="100%").id
    fleet.run(**RUN)
    hosts = by_host(fleet.status(rid))
    assert hosts[ok].state == "succeeded"
    assert sched.state()[ok]["installed_image"] == "wipe"
    assert fleet.store.get_host(ok).status == "active"
    assert (hosts[broken].state, hosts[broken].error_class) == ("failed", "install_failed")
    record = fleet.store.get_host(broken)
    assert record.status == "quarantined"
    assert f"request {rid}" in record.status_reason
    with pytest.raises(InputError, match="quarantined"):
        fleet.submit("reboot", [broken])
    assert fleet.release_host(broken).status == "active"


def test_decommission_wipes_powers_off_and_retires_the_host(sched, fleet):
    host = good(sched, "ipmi")[5]
    powered_on(fleet, [host])
    rid = fleet.submit("decommission", [host]).id
    fleet.run(**RUN)
    assert fleet.status(rid).state == "succeeded"
    state = sched.state()[host]
    assert state["installed_image"] == "wipe"
    assert state["power"] == "off"
    assert fleet.store.get_host(host).status == "decommissioned"
    with pytest.raises(InputError, match="decommissioned"):
        fleet.submit("power-on", [host])
    steps = [s["step"] for s in fleet.steps(rid)]
    assert steps[0] == "set-install-target" and steps[-1] == "power-off"
