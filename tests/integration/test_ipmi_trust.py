"""The IPMI client under concurrency, against real peers: OpenIPMI's `ipmi_sim` BMCs
(IPMI 2.0 with a real session table, IPMI-1.5-only ones, a wrong-password one; launched by
maas_lib.sim.ipmisim) and `ipmitool` as the reference client. Issue 12, items 6 to 9."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from maas_lib.bmc import BmcController, BmcSettings
from maas_lib.bmc.base import BmcEndpoint, BmcTarget
from maas_lib.bmc.control import make_driver
from maas_lib.bmc.sessions import IPMI_SESSIONS, close_all_sessions
from maas_lib.credentials import Credential
from maas_lib.sim.ipmisim import (
    IpmiSim,
    IpmiSimFleet,
    IpmiSimOptions,
    ipmi_sim_path,
    running_ipmi_sims,
)
from tests.conftest import patience

pytestmark = pytest.mark.skipif(
    not (ipmi_sim_path() and shutil.which("ipmitool")),
    reason="needs ipmi_sim (Debian openipmi) and ipmitool",
)

OPTIONS = IpmiSimOptions()
GOOD = Credential("ipmisim", OPTIONS.username, OPTIONS.password, "test")
SETTINGS = BmcSettings(timeout=5, retries=3, poll_interval=0.1, power_timeout=20)
#: The shared BMCs: healthy ones, one whose password is not the one we are given, and
#: IPMI-1.5-only ones (no RMCP+).
NAMES = ["a", "b", "c", "d", "wrong", "v15-1", "v15-2", "v15-3"]


@pytest.fixture(scope="module")
def bmcs() -> Iterator[IpmiSimFleet]:
    specs = [OPTIONS] * 4 + [IpmiSimOptions(wrong_password=True)]
    specs += [IpmiSimOptions(ipmi15_only=True)] * 3
    with running_ipmi_sims(specs, names=NAMES) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _fresh_sessions() -> Iterator[None]:
    close_all_sessions()
    yield
    close_all_sessions()


def _target(sim: IpmiSim) -> BmcTarget:
    return BmcTarget(sim.name, "ipmisim", BmcEndpoint.build("ipmi", sim.host, sim.port))


def _controller(settings: BmcSettings = SETTINGS) -> BmcController:
    return BmcController(settings, resolve=lambda _name: GOOD)


def _active_sessions(sim: IpmiSim) -> int:
    """Sessions the BMC counts as active, as ipmitool reads them (its own not counted)."""
    proc = sim.ipmitool("session", "info", "active", lanplus=False)
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "active sessions":
            return int(value) - 1
    raise AssertionError(f"no session count from ipmitool: {proc.stdout!r} {proc.stderr!r}")


# -- item 6: IPMI 1.5 BMCs work, and one BMC's fault reaches its own caller only ---------


def test_ipmi15_only_bmcs_work_beside_ipmi2_bmcs_in_one_fan_out(bmcs):
    v15 = [s for s in bmcs if s.options.ipmi15_only]
    # The peers are genuine: the reference client speaks IPMI 1.5 to them, not RMCP+.
    for sim in v15:
        assert sim.ipmitool("chassis", "power", "status", lanplus=False).returncode == 0
        assert "RMCP+" in sim.ipmitool("chassis", "power", "status").stderr
    targets = [_target(s) for s in bmcs if not s.options.wrong_password]
    for _round in range(3):
        close_all_sessions()
        controller = _controller()
        results = controller.fan_out(targets, controller.status)
        assert [(r.host, r.ok, r.error_class) for r in results] == [
            (t.host, True, None) for t in targets
        ], results
        assert all(r.power in ("on", "off") for r in results), results


def test_a_fault_while_handling_one_bmcs_reply_fails_that_bmc_only(bmcs, monkeypatch):
    """A reply that pyghmi cannot handle (injected: a real peer would need a pyghmi bug)
    fails the call to that BMC, whichever thread handled the reply; the other BMC's
    calls all succeed."""
    from pyghmi.ipmi.private import session

    from maas_lib.bmc import pyghmi_fixes

    pyghmi_fixes.apply()
    a, b = bmcs["a"], bmcs["b"]
    real = session.Session._parse_payload

    def faulty(self, payload):
        if getattr(self, "port", None) == b.port and not self.servermode:
            raise RuntimeError("injected fault in BMC b's reply")
        return real(self, payload)

    monkeypatch.setattr(session.Session, "_parse_payload", faulty)
    for _round in range(15):
        close_all_sessions()
        controller = _controller(BmcSettings(timeout=3, retries=0))
        ra, rb = controller.fan_out([_target(a), _target(b)], controller.status)
        assert ra.ok, ra
        assert (rb.ok, rb.error_class) == (False, "bmc_error"), rb
        assert "injected fault in BMC b's reply" in rb.error, rb


# -- item 7: a healthy login beside a wrong-password login ---------------------------------


def test_healthy_login_beside_a_wrong_password_login_is_never_held_up(bmcs):
    """Before the fix, this left the healthy login asleep for ~24-28 s in some rounds."""

    def driver(sim: IpmiSim):
        return make_driver(BmcEndpoint.build("ipmi", sim.host, sim.port), GOOD, SETTINGS)

    good, wrong = driver(bmcs["a"]), driver(bmcs["wrong"])
    # Other BMCs' established sessions, as in any fan-out: their keepalive timers (~25 s)
    # are what a waiter that missed its login's completion used to sleep on.
    for name in ("b", "c", "d"):
        driver(bmcs[name]).power_state()

    def timed(driver):
        started = time.monotonic()
        try:
            driver.power_state()
            return time.monotonic() - started, None
        except Exception as exc:
            return time.monotonic() - started, getattr(exc, "error_class", repr(exc))

    slowest = 0.0
    with ThreadPoolExecutor(2) as pool:
        for _round in range(30):
            for key in (good._key, wrong._key):  # fresh logins, the idle sessions stay
                IPMI_SESSIONS.drop(IPMI_SESSIONS.entry(key))
            healthy = pool.submit(timed, good)
            refused = pool.submit(timed, wrong)
            (elapsed, error), (_, wrong_error) = healthy.result(), refused.result()
            assert error is None and wrong_error == "auth", (error, wrong_error)
            slowest = max(slowest, elapsed)
    # Healthy logins take ~0.01-0.1 s here (0.09 s with both cores busy); the bug: ~24 s.
    assert slowest < patience(1.0), f"a healthy login took {slowest:.2f}s"


# -- item 8: sessions are logged out when a call ends ----------------------------------------


def test_bmc_status_leaves_no_session_open_on_the_bmc(bmcs, cli, tmp_path):
    a = bmcs["a"]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        f"all:\n  hosts:\n    h1: {{bmc_address: {a.host}, bmc_port: {a.port}, "
        "bmc_credential: ipmisim}\n"
    )
    assert cli("hosts", "import", str(inventory)).code == 0
    before = _active_sessions(a)
    for _ in range(4):
        r = cli("bmc", "status", "h1", "--json", env=bmcs.env())
        assert r.code == 0 and r.json()[0]["power"] in ("on", "off"), r
    # Before: one more active session per call (4 calls: 5 with ipmitool's own).
    assert _active_sessions(a) == before


def test_scheduler_closes_sessions_idle_longer_than_its_setting(bmcs):
    from maas_lib.bmc.sessions import IdleSessionCloser
    from maas_lib.scheduler.settings import SchedulerSettings

    assert SchedulerSettings().session_idle_s == 60
    with pytest.raises(ValueError):
        SchedulerSettings(session_idle_s=1)
    a = bmcs["a"]
    before = _active_sessions(a)
    assert _controller().status(_target(a)).ok
    assert _active_sessions(a) == before + 1 and len(IPMI_SESSIONS) == 1
    closer = IdleSessionCloser(5)
    closer._next = 0  # due now; but the session was used just now: not idle yet
    assert closer.tick() == 0 and _active_sessions(a) == before + 1
    for entry in IPMI_SESSIONS._entries.values():
        entry.last_used -= 10  # as if unused for 10 s
    closer._next = 0
    assert closer.tick() == 1
    assert _active_sessions(a) == before and len(IPMI_SESSIONS) == 0


# -- item 9: a BMC out of session slots is busy, not unreachable -----------------------------


def test_bmc_out_of_session_slots_is_busy_and_retried_until_a_slot_frees():
    # 62 of ipmi_sim's 63 slots held by the launcher; the last one by an ipmitool shell
    # that logs out when told to exit.
    with running_ipmi_sims(1, options=IpmiSimOptions(session_limit=1)) as sims:
        sim = sims[0]
        last = subprocess.Popen(
            sim.ipmitool_argv("shell"),
            env=os.environ | {"IPMI_PASSWORD": sim.options.password},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            last.stdin.write("chassis power status\n")  # ipmitool logs in at its first command
            last.stdin.flush()
            while "Chassis Power is" not in (line := last.stdout.readline()):
                assert line, "ipmitool shell exited"

            # Full: not unreachable, but busy, and retried within the deadline.
            r = _controller(BmcSettings(timeout=2, retries=2)).status(_target(sim))
            assert (r.ok, r.error_class) == (False, "bmc_error"), r
            assert "busy" in r.error and "session slot" in r.error, r
            assert r.elapsed_s > 0.4, r  # retried with backoff, not given up at once
            # The same through a fleet-wide status: the batch hands it to the per-host path.
            (r,) = _controller(BmcSettings(timeout=2, retries=1)).status_many([_target(sim)])
            assert (r.ok, r.error_class) == (False, "bmc_error") and "busy" in r.error, r

            # A slot frees while the call is retrying: the call succeeds.
            results = []
            caller = threading.Thread(
                target=lambda: results.append(
                    _controller(BmcSettings(timeout=3, retries=4)).status(_target(sim))
                )
            )
            caller.start()
            time.sleep(0.3)
            last.stdin.write("exit\n")  # ipmitool closes its session
            last.stdin.flush()
            last.wait(30)
            caller.join(60)
            (r,) = results
            assert r.ok and r.power in ("on", "off"), r
        finally:
            close_all_sessions()
            if last.poll() is None:
                last.kill()
            last.wait()
            for stream in (last.stdin, last.stdout):
                stream.close()


# -- a status of many BMCs, read from one thread (bmc/ipmi_batch.py) -------------------------


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_host_calls(controller: BmcController, monkeypatch) -> list[str]:
    """The hosts `status_many` hands to the per-host path (thread per host)."""
    handed: list[str] = []
    fan_out = controller.fan_out

    def spy(targets, op):
        handed.extend(t.host for t in targets)
        return fan_out(targets, op)

    monkeypatch.setattr(controller, "fan_out", spy)
    return handed


def test_status_of_many_bmcs_is_read_in_one_batch_and_classifies_each(bmcs, monkeypatch):
    """Healthy IPMI 2.0 and IPMI-1.5-only BMCs, a wrong password and a port where no BMC
    answers, in one status: each host gets its own answer, ipmitool agrees on power, no
    session stays open, and none of them needed a thread of its own."""
    dead = BmcTarget("dead", "ipmisim", BmcEndpoint.build("ipmi", "127.0.0.1", _free_udp_port()))
    targets = [_target(bmcs[name]) for name in NAMES] + [dead]
    before = _active_sessions(bmcs["a"])
    controller = _controller(BmcSettings(timeout=2, retries=0))
    handed = _per_host_calls(controller, monkeypatch)
    results = {r.host: r for r in controller.status_many(targets)}
    assert [r.host for r in results.values()] == [t.host for t in targets]
    assert handed == []
    for name in ("a", "b", "c", "d", "v15-1", "v15-2", "v15-3"):
        r = results[name]
        said = bmcs[name].ipmitool("chassis", "power", "status", lanplus=name[0] != "v")
        assert r.ok and f"Chassis Power is {r.power}" in said.stdout, (r, said.stdout)
    assert (results["wrong"].ok, results["wrong"].error_class) == (False, "auth")
    assert (results["dead"].ok, results["dead"].error_class) == (False, "unreachable")
    # Its deadline (timeout + 1 s), give or take a turn of the loop.
    assert results["dead"].elapsed_s <= 3.0 + patience(0.5), results["dead"]
    assert _active_sessions(bmcs["a"]) == before


def test_a_bmc_quiet_after_its_login_does_not_hold_up_the_batch(bmcs, monkeypatch):
    """BMC b answers the login (up to RAKP4) and nothing after it: every command to it
    is dropped on the way (a BMC that goes quiet mid-login, which ipmi_sim cannot be made
    to do). Before fix 12 the one thread running the batch waited on b's Set Session
    Privilege Level retries inside b's login, so every other BMC's answer waited too; now
    a read sends no such request, the others are read in well under a second and b alone
    fails, at its deadline."""
    from pyghmi.ipmi.private import session

    from maas_lib.bmc import pyghmi_fixes

    pyghmi_fixes.apply()
    quiet = bmcs["b"].port
    real = session.Session._send_ipmi_net_payload

    def drop_b_commands(self, *args, **kwargs):
        if self.port == quiet and self.logged and not self.servermode:
            self.lastpayload = None  # never sent: nothing to retransmit either
            return None
        return real(self, *args, **kwargs)

    monkeypatch.setattr(session.Session, "_send_ipmi_net_payload", drop_b_commands)
    controller = _controller(BmcSettings(timeout=1, retries=0))
    names = ["a", "b", "c", "d"]
    results = {r.host: r for r in controller.status_many([_target(bmcs[n]) for n in names])}
    b = results["b"]
    assert (b.ok, b.error_class) == (False, "unreachable") and "within 2s" in b.error, b
    assert b.elapsed_s < 2.0 + patience(1.0), b  # its deadline, not pyghmi's retries (~16 s)
    for name in ("a", "c", "d"):
        assert results[name].ok and results[name].elapsed_s < patience(1.0), results[name]


def test_a_bmc_out_of_slots_or_with_a_session_held_here_goes_the_per_host_way(bmcs, monkeypatch):
    """What the batch cannot finish for certain is handed to the per-host path: a session
    this process already holds (it is its holder's: it stays usable), and two hosts
    behind one BMC (pyghmi would share one session between them)."""
    a, c = bmcs["a"], bmcs["c"]
    held = _controller()
    assert held.status(_target(a)).ok  # the pool keeps a's session
    controller = _controller()
    handed = _per_host_calls(controller, monkeypatch)
    twin = BmcTarget("c-twin", "ipmisim", BmcEndpoint.build("ipmi", c.host, c.port))
    results = controller.status_many([_target(a), _target(c), twin, _target(bmcs["d"])])
    assert all(r.ok for r in results), results
    assert [r.host for r in results] == ["a", "c", "c-twin", "d"]
    assert sorted(handed) == ["a", "c-twin"]
    assert held.status(_target(a)).ok  # the held session was not logged out under it


def test_other_threads_bmc_calls_go_on_while_a_batch_runs_the_packet_loop(bmcs):
    """While a batch owns pyghmi's packet loop (its IO thread parked; fix 13), per-host
    calls from another thread still get their answers at once; and after it, too."""
    dead = BmcTarget("dead", "ipmisim", BmcEndpoint.build("ipmi", "127.0.0.1", _free_udp_port()))
    batch = [_target(bmcs[n]) for n in ("b", "c", "d")] + [dead]  # ~2 s: dead's deadline
    a = _target(bmcs["a"])
    controller = _controller(BmcSettings(timeout=1, retries=0))
    slowest: list[float] = []
    batch_done = threading.Event()

    def per_host_calls() -> None:
        while not batch_done.is_set():
            IPMI_SESSIONS.drop(IPMI_SESSIONS.entry(make_driver(a.primary, GOOD, SETTINGS)._key))
            r = controller.status(a)  # a fresh login each time
            assert r.ok, r
            slowest.append(r.elapsed_s)

    caller = threading.Thread(target=per_host_calls)
    caller.start()
    try:
        results = controller.status_many(batch)
    finally:
        batch_done.set()
        caller.join(30)
    assert [r.ok for r in results] == [True, True, True, False]
    assert len(slowest) >= 3 and max(slowest) < patience(1.0), slowest
    assert controller.status(a).elapsed_s < patience(1.0)
