"""Redfish as real BMCs serve it (issue 12, items 1-5), against the profile services of
`maas_lib.sim.redfish_profile_server` on loopback: what users see through the API and
`maasctl`, and what really reached the BMC (its record)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

import maas_lib
from maas_lib.bmc import BmcSettings
from maas_lib.bmc.base import BmcEndpoint, PowerAction
from maas_lib.bmc.redfish import RedfishDriver
from maas_lib.bmc.sessions import REDFISH_SESSIONS
from maas_lib.credentials import Credential
from maas_lib.errors import BmcError, BmcTimeout
from maas_lib.models import BmcProtocol
from maas_lib.sim.redfish_profile_server import RedfishService, serve
from maas_lib.sim.redfish_profiles import PROFILES, Profile
from tests.conftest import patience
from tests.simfleet import FAST_RUN, run_maasctl

USER, PASSWORD = "admin", "profile-pass-0"
#: Generous for a loaded 2-core machine; the profiles answer in milliseconds.
QUICK = BmcSettings(timeout=5, power_timeout=15, poll_interval=0.1, retries=1)


class Lab:
    """Profile services, each behind one host of a fresh fleet database."""

    def __init__(self, directory: Path, stack: ExitStack) -> None:
        self.directory = directory
        self.db = directory / "fleet.db"
        self._stack = stack
        self.hosts: dict[str, dict[str, object]] = {}
        self.bmcs: dict[str, RedfishService] = {}

    def add(self, name: str, profile: Profile, **hostvars: object) -> RedfishService:
        bmc = self._stack.enter_context(serve(profile, username=USER, password=PASSWORD))
        self.bmcs[name] = bmc
        self.hosts[name] = {
            "bmc_address": bmc.url,
            "bmc_system": bmc.system_url(),
            "bmc_credential": "rf",
        } | hostvars
        return bmc

    def inventory(self) -> Path:
        path = self.directory / "rf.yml"
        path.write_text(yaml.safe_dump({"all": {"children": {"rf": {"hosts": self.hosts}}}}))
        return path

    def fleet(self) -> maas_lib.Fleet:
        fleet = maas_lib.open_fleet(self.db)
        fleet.import_hosts([str(self.inventory())])
        return fleet

    def maasctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
        env |= {
            "MAAS_DB": str(self.db),
            "MAAS_CRED_RF_USERNAME": USER,
            "MAAS_CRED_RF_PASSWORD": PASSWORD,
            "HOME": str(self.directory),
        }
        return run_maasctl(env, *args)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_CRED_RF_USERNAME", USER)
    monkeypatch.setenv("MAAS_CRED_RF_PASSWORD", PASSWORD)
    with ExitStack() as stack:
        yield Lab(tmp_path, stack)
        REDFISH_SESSIONS.close_all()  # sessions of direct driver calls, while BMCs listen


def resets(bmc: RedfishService) -> list[tuple[str, int | None]]:
    """Reset types that reached the BMC, with the status it answered."""
    return [
        (r["body"]["ResetType"], r.get("status"))
        for r in bmc.record.requests
        if r["method"] == "POST" and r["path"].endswith("ComputerSystem.Reset")
    ]


# -- 1. unknown power is never off ------------------------------------------------------------


@pytest.mark.parametrize(
    ("power_state", "raw"),
    [("absent", "absent"), ("null", "null"), ("Paused", "Paused"), ("Standby?", "Standby?")],
)
def test_power_state_absent_null_or_unrecognised_is_unknown_never_off(lab, power_state, raw):
    lab.add("odd", Profile(power_state=power_state))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_status(["odd"], settings=QUICK)
    assert r.ok and r.power == "unknown" and r.power_raw == raw, r


def test_a_transition_is_reported_as_such_and_polled_until_done(lab):
    bmc = lab.add("obmc", PROFILES["openbmc"].but(power_delay=1.0))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("on", ["obmc"], wait=False, settings=QUICK)
        assert r.ok and r.power == "powering_on", r
        (r,) = fleet.bmc_power("on", ["obmc"], settings=QUICK)
    assert r.ok and r.power == "on", r
    assert bmc.state.power("system") == "On"


def test_cli_shows_unknown_and_power_off_of_an_unknown_host_does_not_succeed(lab):
    # A service without sessions (like sushy-tools' emulator): Basic at once, quietly.
    bmc = lab.add("nops", Profile(power_state="absent", sessions=False))
    lab.fleet().close()
    status = lab.maasctl("bmc", "status", "nops", "--json")
    assert status.returncode == 0 and status.stderr == "", status.stderr
    (row,) = json.loads(status.stdout)
    assert row["power"] == "unknown" and row["power_raw"] == "absent", row
    off = lab.maasctl("bmc", "power", "off", "nops", "--json", "--timeout", "5")
    assert off.returncode == 1, off
    (row,) = json.loads(off.stdout)
    assert not row["ok"] and row["error_class"] == "power_unknown", row
    assert bmc.state.power("1") == "Off"  # the ForceOff landed; it just cannot be confirmed
    assert resets(bmc) == [("ForceOff", 204)]
    assert bmc.record.count("POST", "/SessionService") == 0


def test_cycle_of_a_host_in_an_unknown_state_powers_it_off_first_and_never_on(lab):
    # Before: Paused read as off, the off skipped, and On sent to a host that may be running.
    bmc = lab.add("paused", Profile(power_state="Paused", sessions=False))
    bmc.state.set_power("1", "On")
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("cycle", ["paused"], settings=QUICK)
    assert not r.ok and r.error_class == "power_unknown", r
    assert "Paused" in (r.error or ""), r
    assert resets(bmc) == [("ForceOff", 204)]


def test_a_transition_that_never_ends_is_a_timeout(lab):
    bmc = lab.add("stuck", Profile(power_state="PoweringOn", sessions=False))
    settings = QUICK.model_copy(update={"power_timeout": 1.0})
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("on", ["stuck"], settings=settings)
    assert not r.ok and r.error_class == "timeout" and "powering_on" in (r.error or ""), r
    assert resets(bmc) == [("On", 204)]


@pytest.mark.parametrize("action", ["power-off", "power-cycle"])
def test_scheduled_power_change_on_an_unknown_host_fails_power_unknown(lab, action):
    bmc = lab.add("nops", Profile(power_state="absent"))
    bmc.state.set_power("1", "On")
    with lab.fleet() as fleet:
        req = fleet.submit(action, ["nops"])
        fleet.run(**FAST_RUN)
        status = fleet.status(req.id)
    (host,) = status.hosts
    assert status.state == "failed" and host.state == "failed", status
    assert host.error_class == "power_unknown", host
    # Never powered back on as if the off had been confirmed.
    assert ("On", 204) not in resets(bmc)


# -- 2. slow is not unreachable ---------------------------------------------------------------


def test_a_slow_bmc_succeeds_within_its_per_request_timeout(lab):
    bmc = lab.add("slow", Profile(latency=1.2))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_status(["slow"], settings=BmcSettings(timeout=patience(2), retries=0))
    assert r.ok and r.power == "off", r
    # Several requests, each answered within the 2 s read timeout (together past it), none
    # more than once.
    assert r.elapsed_s >= 2 * 1.2
    assert bmc.record.count("GET", "/Systems/1") == 1


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_silent_bmc_is_timeout_and_absent_bmc_is_unreachable(lab):
    lab.add("silent", Profile(hang=True))
    lab.hosts["gone"] = {
        "bmc_address": f"http://127.0.0.1:{_refused_port()}",
        "bmc_system": "1",
        "bmc_credential": "rf",
    }
    settings = BmcSettings(timeout=1, connect_timeout=1, retries=0)
    with lab.fleet() as fleet:
        silent, gone = fleet.bmc_status(["silent", "gone"], settings=settings)
    assert silent.error_class == "timeout", silent
    assert silent.elapsed_s < settings.operation_deadline + 2, silent
    assert gone.error_class == "unreachable" and gone.elapsed_s < 3, gone


# -- 3. advertised capabilities ---------------------------------------------------------------


def test_boot_target_not_advertised_is_unsupported_and_nothing_is_sent(lab):
    bmc = lab.add("nopxe", Profile(boot_targets=("None", "Hdd", "Cd")))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_boot("pxe", ["nopxe"], settings=QUICK)
        (ok,) = fleet.bmc_boot("disk", ["nopxe"], settings=QUICK)
    assert r.error_class == "unsupported", r
    assert "Pxe" in r.error and "Hdd, Cd" in r.error and "<" not in r.error, r.error
    assert ok.ok, ok
    assert [p[1]["Boot"]["BootSourceOverrideTarget"] for p in bmc.record.patches] == ["Hdd"]


def test_missing_boot_object_and_unoffered_reset_type_are_unsupported_unsent(lab):
    bmc = lab.add("blade", PROFILES["cray-ex"])
    bmc.state.set_power("Node0", "On")
    with lab.fleet() as fleet:
        (boot,) = fleet.bmc_boot("pxe", ["blade"], settings=QUICK)
        (soft,) = fleet.bmc_power("soft", ["blade"], settings=QUICK)
    assert boot.error_class == "unsupported" and "no Boot object" in boot.error, boot
    assert soft.error_class == "unsupported", soft
    assert "ResetType GracefulShutdown" in soft.error and "<" not in soft.error, soft.error
    assert bmc.record.count("PATCH") == 0 and resets(bmc) == []
    assert bmc.state.power("Node0") == "On"


# -- 4. what real BMCs do ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_vendor_profiles_cycle_over_one_session_logged_out_at_the_end(lab, name):
    bmc = lab.add(name, PROFILES[name])
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("cycle", [name], settings=QUICK)
    assert r.ok and r.power == "on", r
    assert bmc.record.sessions_created == 1 and bmc.state.open_sessions == 0
    authed = [q for q in bmc.record.requests if q["auth"] is not None]
    assert authed and all(q["auth"] == "session" for q in authed)


def test_session_only_bmc_with_two_slots_serves_repeated_cli_calls(lab):
    bmc = lab.add("ilo", PROFILES["ilo5"].but(basic_auth=False, session_limit=2))
    lab.fleet().close()
    output = ""
    for verbosity in ("-vv", "-v", "-v"):  # debug logging once: secrets stay out of it
        r = lab.maasctl(verbosity, "bmc", "status", "ilo", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        output += r.stdout + r.stderr
    # Without a logout at the end of each call the third login finds both slots taken.
    assert bmc.record.sessions_created == 3
    assert bmc.state.open_sessions == 0
    assert bmc.record.count("DELETE", "/SessionService/Sessions/") == 3
    assert [q for q in bmc.record.requests if q["auth"] == "basic"] == []
    assert "HTTP request" in output  # the debug log did run
    for secret in [PASSWORD, *bmc.record.tokens]:
        assert secret not in output


def test_wrong_state_resets_refused_with_400_are_reread(lab):
    bmc = lab.add("ilo", PROFILES["ilo5"])
    bmc.state.set_power("1", "On")
    with lab.fleet() as fleet:
        (on,) = fleet.bmc_power("on", ["ilo"], settings=QUICK)
        bmc.state.set_power("1", "Off")
        (off,) = fleet.bmc_power("off", ["ilo"], settings=QUICK)
        (reset,) = fleet.bmc_power("reset", ["ilo"], settings=QUICK)
    assert on.ok and on.power == "on", on
    assert off.ok and off.power == "off", off
    assert reset.error_class == "bmc_error", reset
    assert "ForceRestart" in reset.error and "off" in reset.error, reset.error
    assert resets(bmc) == [("On", 400), ("ForceOff", 400), ("ForceRestart", 400)]


def _driver(bmc: RedfishService, deadline: float) -> RedfishDriver:
    return RedfishDriver(
        BmcEndpoint.build(BmcProtocol.REDFISH, bmc.url, None, system=bmc.system_url()),
        Credential("rf", USER, PASSWORD),
        timeout=5,
        deadline=deadline,
    )


def test_task_monitor_is_followed_and_a_failed_task_is_reported(lab):
    bmc = lab.add("tasks", Profile(tasks=True, task_time=0.6, power_delay=0.1))
    driver = _driver(bmc, deadline=20)
    driver.insert_media("http://images.example/installer.iso")
    # Returned once the BMC's task had finished: the media is in.
    assert bmc.state.systems["1"].media_image == "http://images.example/installer.iso"
    assert bmc.record.count("GET", "/TaskService/TaskMonitors/") >= 1
    bmc.state.profile = bmc.state.profile.but(task_failure="Power supply 2 failed")
    started = time.monotonic()
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("on", ["tasks"], settings=QUICK)
    assert r.error_class == "bmc_error" and "Power supply 2 failed" in r.error, r
    assert time.monotonic() - started < QUICK.power_timeout
    assert bmc.state.power("1") == "Off"
    # A task that outlives the operation's deadline is a timeout, at the deadline.
    bmc.state.profile = bmc.state.profile.but(task_failure=None, task_time=60)
    started = time.monotonic()
    with pytest.raises(BmcTimeout, match="still running"):
        _driver(bmc, deadline=2).power(PowerAction.ON)
    assert time.monotonic() - started < 2 + 1.5


def test_busy_bmc_is_retried_after_its_retry_after(lab):
    bmc = lab.add("busy", Profile(busy=2, busy_status=429, retry_after="1"))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("on", ["busy"], settings=QUICK)
    assert r.ok and r.power == "on", r
    to_system = [q for q in bmc.record.requests if "/Systems/1" in q["path"]]
    assert [q.get("status") for q in to_system[:2]] == [429, 429]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(to_system[:3])]
    assert all(gap >= 0.9 for gap in gaps), gaps  # no request before Retry-After
    assert resets(bmc) == [("On", 204)]
    # A Retry-After beyond the operation's deadline: a transient failure now, no sleep.
    bmc.state.busy_left, bmc.state.profile = 1, bmc.state.profile.but(retry_after="60")
    started = time.monotonic()
    with pytest.raises(BmcError, match="retry after 60s") as busy:
        _driver(bmc, deadline=3).power_state()
    assert busy.value.transient and time.monotonic() - started < 3


@pytest.mark.parametrize(
    "profile",
    [
        PROFILES["openbmc"].but(etag_header=False),  # ETag only as @odata.etag
        PROFILES["openbmc"].but(etag_stale_once=True),  # changed between GET and PATCH
    ],
    ids=["etag-in-body", "etag-stale"],
)
def test_patch_carries_if_match_where_the_bmc_requires_it(lab, profile):
    bmc = lab.add("obmc", profile)
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_boot("pxe", ["obmc"], settings=QUICK)
    assert r.ok, r
    assert bmc.state.systems["system"].boot_target == "Pxe"
    assert all(if_match for _, _, if_match in bmc.record.patches)


def test_links_to_another_host_are_not_followed_with_our_credentials(lab):
    other = lab.add("other", Profile())
    bmc = lab.add("lure", Profile(reset_target_base=other.url))
    with lab.fleet() as fleet:
        (r,) = fleet.bmc_power("on", ["lure"], settings=QUICK)
    assert r.error_class == "bmc_error" and "another host" in r.error, r
    assert other.record.requests == [] and resets(bmc) == []


# -- 5. bmc_system is a Systems member --------------------------------------------------------


def test_import_refuses_a_chassis_path_and_resolves_a_bare_id(lab):
    bmc = lab.add("chassis", Profile(), bmc_system="/redfish/v1/Chassis/1")
    r = lab.maasctl("hosts", "import", str(lab.inventory()))
    assert r.returncode == 2, r
    assert r.stderr.strip().count("\n") == 0 and "bmc_system" in r.stderr, r.stderr
    listed = lab.maasctl("hosts", "list", "--json")
    assert json.loads(listed.stdout or "[]") == []
    lab.hosts["chassis"]["bmc_system"] = "1"
    assert lab.maasctl("hosts", "import", str(lab.inventory())).returncode == 0
    (row,) = json.loads(lab.maasctl("hosts", "list", "--json").stdout)
    assert row["bmc_system"] == "/redfish/v1/Systems/1"
    with maas_lib.open_fleet(lab.db) as fleet:
        (r,) = fleet.bmc_status(["chassis"], settings=QUICK)
    assert r.ok and r.power == "off", r
    assert bmc.record.count("GET", "/Chassis") == 0
