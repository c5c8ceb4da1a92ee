"""Scheduler faults a real BMC cannot be made to produce on cue: BMCs that hang past every
timeout, crashes at chosen points. The transport is the in-process simulated machine
(`maas_lib.sim.inproc`); the store is a real SQLite file."""

from __future__ import annotations

import time

import pytest

import maas_lib
from maas_lib.bmc import BmcController, BmcSettings, PowerAction
from maas_lib.bmc.base import BmcTarget
from maas_lib.credentials import Credential
from maas_lib.models import HostTaskState
from maas_lib.sim.inproc import InProcessFleet
from tests.simfleet import blades

CRED = Credential("lab", "admin", "secret")


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")


def test_a_hung_call_keeps_its_endpoint_slot_until_it_really_ends():
    hosts = blades(2)
    sim = InProcessFleet(latency=1.5)  # every call hangs past its deadline (0.1 s + 1 s)
    for h in hosts:
        sim.add_host(h)
    settings = BmcSettings(timeout=0.1, retries=1, endpoint_concurrency=1)
    controller = BmcController(settings, resolve=lambda _: CRED, driver_factory=sim.driver_factory)
    results = controller.fan_out(
        [BmcTarget.from_host(h) for h in hosts],
        lambda t: controller.power(t, PowerAction.OFF, wait=False),
    )
    assert not any(r.ok for r in results)
    # We stopped waiting for each call, but a call still in flight still counts.
    assert sim.max_in_flight[("127.0.0.1", 6230)] == 1


def test_a_step_past_its_timeout_sends_nothing_more_to_the_bmc(tmp_path, creds, monkeypatch):
    from maas_lib.models import Action
    from maas_lib.scheduler import steps

    # A step that keeps talking to its BMC (ten 0.2 s calls) but has 0.5 s to do it.
    def chatty(ctx):
        for _ in range(10):
            ctx.controller.call(ctx.driver, lambda d: d.power_state(), "read power state")

    slow = steps.Step("chatty", chatty, lambda ctx: 0.5)
    monkeypatch.setitem(steps.ACTION_STEPS, Action.POWER_ON, [slow])
    hosts = blades(1)
    sim = InProcessFleet(latency=0.2)
    sim.add_host(hosts[0])
    with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="t")
        rid = fleet.submit("power-on", ["blade0"]).id
        fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        h = fleet.status(rid).hosts[0]
        assert (h.state, h.error_class) == ("failed", "timeout")
        assert h.reason == "chatty: no result within 0.5s"
        calls_at_end = sum(sim.calls.values())
        time.sleep(2.5)
    # The abandoned step may finish the one call in flight, but starts none.
    assert sum(sim.calls.values()) - calls_at_end <= 1
    assert sum(sim.calls.values()) <= 4


def test_a_wipe_interrupted_then_cancelled_leaves_the_host_quarantined(tmp_path, creds):
    hosts = blades(2)
    sim = InProcessFleet()
    for h in hosts:
        sim.add_host(h, power="on")
    with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
        store = fleet.store
        store.upsert_hosts(hosts, [], actor="t")
        rid = fleet.submit("wipe", ["blade*"], batch_size="1").id
        # A worker that dies mid-wipe of blade0: its step is still `running`.
        assert store.claim_request("dead", ttl=0.1) == rid
        started = store.begin_hosts(
            rid, ["blade0"], batch=0, action="wipe", holder="dead", limits={}
        ).started
        store.start_step(started["blade0"], "wait-install")
        fleet.cancel(rid)
        time.sleep(0.2)
        fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        st = fleet.status(rid)
        assert st.state == "cancelled"
        hosts_by_name = {h.host: h for h in st.hosts}
        assert hosts_by_name["blade0"].state == HostTaskState.CANCELLED
        assert store.get_host("blade0").status == "quarantined"
        assert store.get_host("blade1").status == "active"  # never touched
        assert fleet.inflight() == []


def test_a_resumed_host_skips_the_steps_it_completed(tmp_path, creds):
    hosts = blades(1)
    sim = InProcessFleet()
    machine = sim.add_host(hosts[0], power="on")
    with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
        store = fleet.store
        store.upsert_hosts(hosts, [], actor="t")
        rid = fleet.submit("power-cycle", ["blade0"]).id
        # The dead worker finished power-off (the machine is off) and was killed while
        # powering on.
        assert store.claim_request("dead", ttl=0.1) == rid
        task = store.begin_hosts(
            rid, ["blade0"], batch=0, action="power-cycle", holder="dead", limits={}
        ).started["blade0"]
        store.end_step(store.start_step(task, "power-off"), "succeeded", 0.1)
        machine.request_power("off")
        store.start_step(task, "power-on")
        time.sleep(0.2)
        fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        assert fleet.status(rid).state == "succeeded"
        steps = [(s["attempt"], s["step"], s["outcome"]) for s in fleet.steps(rid)]
        assert steps == [
            (1, "power-off", "succeeded"),
            (1, "power-on", "interrupted"),
            (2, "power-on", "succeeded"),
        ]
    assert machine.power == "on" and machine.power_offs == 1


def test_lost_claim_fences_the_old_worker_out(tmp_path):
    with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
        store = fleet.store
        store.upsert_hosts(blades(2), [], actor="t")
        rid = fleet.submit("reboot", ["blade*"]).id
        assert store.claim_request("old", ttl=0.1) == rid
        task = store.begin_hosts(
            rid, ["blade0"], batch=0, action="reboot", holder="old", limits={}
        ).started["blade0"]
        time.sleep(0.2)
        assert store.claim_request("new", ttl=60) == rid  # the old one missed heartbeats
        # The old worker's late end neither frees the host nor decides its state.
        store.end_task(task, HostTaskState.FAILED, error_class="timeout", holder="old")
        assert [x.holder for x in store.inflight()] == ["new"]
        assert {h.host: h.state for h in store.get_request(rid).hosts}["blade0"] == "running"
        assert (
            store.begin_hosts(
                rid, ["blade1"], batch=0, action="reboot", holder="old", limits={}
            ).started
            == {}
        )
