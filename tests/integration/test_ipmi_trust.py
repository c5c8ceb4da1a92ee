"""The IPMI client under concurrency, against real peers: OpenIPMI's `ipmi_sim` (IPMI 2.0,
a real session table), the same behind an IPMI-1.5-only front (tests/ipmi_peers.py), and
`ipmitool` as the reference client. Issue 12, items 6 to 9."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from maas_lib.bmc import BmcController, BmcSettings
from maas_lib.bmc.base import BmcEndpoint, BmcTarget
from maas_lib.bmc.control import make_driver
from maas_lib.bmc.sessions import IPMI_SESSIONS, close_all_sessions
from maas_lib.credentials import Credential
from tests.ipmi_peers import (
    PASSWORD,
    USER,
    Ipmi15Front,
    IpmiSim,
    have_ipmi_tools,
    ipmi_sim,
)

pytestmark = pytest.mark.skipif(
    not have_ipmi_tools(), reason="needs ipmi_sim (Debian openipmi) and ipmitool"
)

GOOD = Credential("trust", USER, PASSWORD, "test")
WRONG = Credential("trust-wrong", USER, "not-the-password", "test")
SETTINGS = BmcSettings(timeout=5, retries=3, poll_interval=0.1, power_timeout=20)


@pytest.fixture(scope="module")
def bmcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[IpmiSim]]:
    """Three ipmi_sim BMCs shared by the tests that leave no session behind."""
    base = tmp_path_factory.mktemp("ipmisim")
    with (
        ipmi_sim(base / "a") as a,
        ipmi_sim(base / "b") as b,
        ipmi_sim(base / "c", extra_users=2) as c,
    ):
        yield [a, b, c]


@pytest.fixture(autouse=True)
def _fresh_sessions() -> Iterator[None]:
    close_all_sessions()
    yield
    close_all_sessions()


def _target(name: str, port: int, credential: str = "trust") -> BmcTarget:
    return BmcTarget(name, credential, BmcEndpoint.build("ipmi", "127.0.0.1", port))


def _controller(settings: BmcSettings = SETTINGS) -> BmcController:
    creds = {"trust": GOOD, "trust-wrong": WRONG}
    return BmcController(settings, resolve=creds.__getitem__)


# -- item 6: IPMI 1.5 BMCs work, and one BMC's fault reaches its own caller only ---------


def test_ipmi15_only_bmcs_work_beside_ipmi2_bmcs_in_one_fan_out(bmcs):
    a, b, _ = bmcs
    fronts = [Ipmi15Front(port) for port in (a.port, b.port, a.port, b.port)]
    try:
        # The peer is genuine: the reference client speaks IPMI 1.5 to it, not RMCP+.
        assert "Chassis Power is" in a.ipmitool(
            "chassis", "power", "status", interface="lan", port=fronts[0].port
        )
        with pytest.raises(RuntimeError, match="RMCP"):
            a.ipmitool("chassis", "power", "status", interface="lanplus", port=fronts[0].port)
        targets = [_target(f"v15-{i}", f.port) for i, f in enumerate(fronts)]
        targets += [_target("v2-a", a.port), _target("v2-b", b.port)]
        for _round in range(3):
            close_all_sessions()
            controller = _controller()
            results = controller.fan_out(targets, controller.status)
            assert [(r.host, r.ok, r.error_class) for r in results] == [
                (t.host, True, None) for t in targets
            ], results
            assert all(r.power in ("on", "off") for r in results), results
    finally:
        for front in fronts:
            front.close()


def test_a_fault_while_handling_one_bmcs_reply_fails_that_bmc_only(bmcs, monkeypatch):
    """A reply that pyghmi cannot handle (injected: a real peer would need a pyghmi bug)
    fails the call to that BMC, whichever thread handled the reply; the other BMC's
    calls, logins and commands alike, all succeed."""
    from pyghmi.ipmi.private import session

    from maas_lib.bmc import pyghmi_fixes

    pyghmi_fixes.apply()
    a, b, _ = bmcs
    real = session.Session._parse_payload

    def faulty(self, payload):
        if getattr(self, "port", None) == b.port and not self.servermode:
            raise RuntimeError("injected fault in BMC b's reply")
        return real(self, payload)

    monkeypatch.setattr(session.Session, "_parse_payload", faulty)
    targets = [_target("a", a.port), _target("b", b.port)] * 1
    for _round in range(15):
        close_all_sessions()
        controller = _controller(BmcSettings(timeout=3, retries=0))
        ra, rb = controller.fan_out(targets, controller.status)
        assert ra.ok, ra
        assert (rb.ok, rb.error_class) == (False, "bmc_error"), rb
        assert "injected fault in BMC b's reply" in rb.error, rb


# -- item 7: a healthy login beside a wrong-password login ---------------------------------


def test_healthy_login_beside_a_wrong_password_login_is_never_held_up(bmcs):
    """Before the fix, 2 of 30 rounds here left the healthy login asleep for ~24 s."""
    a, b, c = bmcs
    good = make_driver(BmcEndpoint.build("ipmi", "127.0.0.1", a.port), GOOD, SETTINGS)
    wrong = make_driver(BmcEndpoint.build("ipmi", "127.0.0.1", b.port), WRONG, SETTINGS)
    # Other BMCs' established sessions, as in any fan-out: their keepalive timers (~25 s)
    # are what a waiter that missed its login's completion used to sleep on.
    for user in c.users:
        idle = make_driver(
            BmcEndpoint.build("ipmi", "127.0.0.1", c.port),
            Credential(user, user, PASSWORD),
            SETTINGS,
        )
        idle.power_state()

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
            close_all_sessions()
            healthy = pool.submit(timed, good)
            refused = pool.submit(timed, wrong)
            (elapsed, error), (_, wrong_error) = healthy.result(), refused.result()
            assert error is None and wrong_error == "auth", (error, wrong_error)
            slowest = max(slowest, elapsed)
    # The bug left a healthy login asleep until the next keepalive timer: ~24-29 s.
    assert slowest < 1.0, f"a healthy login took {slowest:.2f}s"


# -- item 8: sessions are logged out when a call ends ----------------------------------------


def _inventory(tmp_path: Path, hosts: dict[str, int]) -> Path:
    lines = ["all:", "  hosts:"]
    for name, port in hosts.items():
        lines.append(
            f"    {name}: {{bmc_address: 127.0.0.1, bmc_port: {port}, bmc_credential: trust}}"
        )
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


CRED_ENV = {"MAAS_CRED_TRUST_USERNAME": USER, "MAAS_CRED_TRUST_PASSWORD": PASSWORD}


def test_bmc_status_leaves_no_session_open_on_the_bmc(bmcs, cli, tmp_path):
    a = bmcs[0]
    assert cli("hosts", "import", str(_inventory(tmp_path, {"h1": a.port}))).code == 0
    before = a.active_sessions()
    for _ in range(4):
        r = cli("bmc", "status", "h1", "--json", env=CRED_ENV)
        assert r.code == 0 and r.json()[0]["power"] in ("on", "off"), r
    # ipmitool and ipmipower leave none; the BMC has few slots.
    assert a.active_sessions() == before


def test_scheduler_setting_closes_idle_sessions(bmcs):
    from maas_lib.bmc.sessions import IdleSessionCloser
    from maas_lib.scheduler.settings import SchedulerSettings

    a = bmcs[0]
    assert SchedulerSettings().session_idle_s == 60
    with pytest.raises(ValueError):
        SchedulerSettings(session_idle_s=1)
    before = a.active_sessions()
    controller = _controller()
    assert controller.status(_target("h1", a.port)).ok
    assert a.active_sessions() == before + 1 and len(IPMI_SESSIONS) == 1
    closer = IdleSessionCloser(5)
    closer._next = 0  # due now; the session was used just now, so not idle yet
    assert closer.tick() == 0 and a.active_sessions() == before + 1
    for entry in IPMI_SESSIONS._entries.values():
        entry.last_used -= 10  # as if unused for 10 s
    closer._next = 0
    assert closer.tick() == 1
    assert a.active_sessions() == before and len(IPMI_SESSIONS) == 0


# -- item 9: a BMC out of session slots is busy, not unreachable -----------------------------


def test_bmc_out_of_session_slots_is_busy_and_retried_until_a_slot_frees(tmp_path):
    with ipmi_sim(tmp_path / "full", extra_users=61) as sim:
        holders = []
        try:
            # ipmi_sim has 63 session slots; pyghmi opens one session per user per process.
            while True:
                holder = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "from tests.ipmi_peers import hold_sessions; "
                        f"hold_sessions({sim.port}, {sim.users!r})",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=Path(__file__).parents[2],
                )
                holders.append(holder)
                line = holder.stdout.readline()
                assert line.startswith("held"), line
                if "refused ''" not in line:
                    break
                assert len(holders) < 4, "ipmi_sim never ran out of session slots"
            assert "Insufficient resources" in line, line

            # Full: not unreachable, but busy, and retried within the deadline.
            controller = _controller(BmcSettings(timeout=2, retries=2))
            r = controller.status(_target("full", sim.port))
            assert (r.ok, r.error_class) == (False, "bmc_error"), r
            assert "busy" in r.error and "session slot" in r.error, r
            assert r.elapsed_s > 0.4, r  # retried with backoff, not given up at once

            # A slot frees while the call is retrying: the call succeeds.
            results = []
            worker = threading.Thread(
                target=lambda: results.append(
                    _controller(BmcSettings(timeout=3, retries=4)).status(_target("full", sim.port))
                )
            )
            worker.start()
            time.sleep(0.3)
            holders[0].stdin.write("release one\n")
            holders[0].stdin.flush()
            assert holders[0].stdout.readline().strip() == "released"
            worker.join(60)
            (r,) = results
            assert r.ok and r.power in ("on", "off"), r
        finally:
            close_all_sessions()
            for holder in holders:
                holder.stdin.close()
                holder.wait(30)
