"""The in-process BMC transport: machine lookup, driver verbs, and the controller's caps."""

from __future__ import annotations

from pathlib import Path

import pytest

import maas_lib
from maas_lib.bmc import (
    BmcController,
    BmcResult,
    BmcSettings,
    BootDevice,
    PowerAction,
    PowerState,
)
from maas_lib.bmc.base import BmcEndpoint, BmcTarget
from maas_lib.credentials import Credential
from maas_lib.errors import BmcUnreachable
from maas_lib.models import BmcProtocol, HostSpec
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.sim.machine import BootTarget

CRED = Credential("lab", "admin", "secret")
SHARED = ("127.0.0.1", 6230)


def shared_endpoint_hosts(n: int) -> list[HostSpec]:
    """`n` hosts behind one endpoint (a chassis manager), told apart by system."""
    return [
        HostSpec(
            name=f"blade{i}",
            pool="chassis",
            bmc_address=SHARED[0],
            bmc_port=SHARED[1],
            bmc_system=f"blade-{i}",
            bmc_credential="lab",
        )
        for i in range(n)
    ]


def own_endpoint_hosts(n: int) -> list[HostSpec]:
    return [
        HostSpec(
            name=f"node{i}",
            pool="rack",
            bmc_address="127.0.0.1",
            bmc_port=7000 + i,
            bmc_credential="lab",
        )
        for i in range(n)
    ]


def controller(sim: InProcessFleet, **settings: object) -> BmcController:
    return BmcController(
        BmcSettings.model_validate(settings),
        resolve=lambda _: CRED,
        driver_factory=sim.driver_factory,
    )


def power_on_all(sim: InProcessFleet, hosts: list[HostSpec], **settings: object) -> list[BmcResult]:
    for h in hosts:
        sim.add_host(h)
    c = controller(sim, **settings)
    targets = [BmcTarget.from_host(h) for h in hosts]
    return c.fan_out(targets, lambda t: c.power(t, PowerAction.ON, wait=True))


def test_shared_endpoint_is_capped_by_endpoint_concurrency() -> None:
    sim = InProcessFleet(latency=0.03)
    hosts = shared_endpoint_hosts(8)
    results = power_on_all(sim, hosts, endpoint_concurrency=2, concurrency=64)

    assert all(r.ok for r in results), results
    assert sim.max_in_flight == {SHARED: 2}
    assert sim.calls[SHARED] == 16  # power on, then one poll that sees it on
    # Each host reached its own machine, though all share the endpoint.
    machines = sim.by_name()
    assert sorted(machines) == sorted(h.name for h in hosts)
    assert all(m.power == "on" and m.power_ons == 1 for m in machines.values())
    assert {r.via for r in results} == {"ipmi://127.0.0.1:6230"}


def test_distinct_endpoints_run_side_by_side() -> None:
    sim = InProcessFleet(latency=0.03)
    hosts = own_endpoint_hosts(8)
    results = power_on_all(sim, hosts, endpoint_concurrency=2, concurrency=64)

    assert all(r.ok for r in results), results
    assert set(sim.max_in_flight.values()) == {1}  # one host per endpoint
    assert sim.max_in_flight_total > 2
    assert all(m.power_ons == 1 for m in sim.by_name().values())


def test_fleet_wide_concurrency_caps_every_endpoint() -> None:
    sim = InProcessFleet(latency=0.03)
    power_on_all(sim, own_endpoint_hosts(8), endpoint_concurrency=2, concurrency=3)
    assert sim.max_in_flight_total == 3


def test_driver_verbs_act_on_the_machine() -> None:
    sim = InProcessFleet()
    machine = sim.add("n1", port=6300, power="on")
    d = sim.driver_factory(
        BmcEndpoint.build(BmcProtocol.IPMI, "127.0.0.1", 6300), CRED, BmcSettings()
    )
    assert d.power_state().state is PowerState.ON
    d.power(PowerAction.SOFT)
    assert d.power_state().state is PowerState.OFF and machine.power_offs == 1
    d.set_boot(BootDevice.PXE, persistent=True)
    assert (machine.boot_target, machine.boot_persistent) == (BootTarget.PXE, True)
    d.insert_media("https://images.example/ubuntu.iso")
    assert machine.media_url == "https://images.example/ubuntu.iso"
    d.eject_media()
    assert machine.media_url is None
    d.identify(True)
    assert machine.identify
    d.power(PowerAction.ON)
    assert machine.power == "on" and machine.power_ons == 1
    assert d.via == "ipmi://127.0.0.1:6300"
    assert sim.calls == {("127.0.0.1", 6300): 8}


def test_unknown_endpoint_is_unreachable() -> None:
    sim = InProcessFleet()
    sim.add("n1", port=6300)
    with pytest.raises(BmcUnreachable):
        sim.driver_factory(
            BmcEndpoint.build(BmcProtocol.IPMI, "127.0.0.1", 6301), CRED, BmcSettings()
        )
    with pytest.raises(ValueError, match="already reaches"):
        sim.add("n2", port=6300)


def test_worker_runs_a_request_over_in_process_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")
    sim = InProcessFleet(latency=0.01)
    hosts = shared_endpoint_hosts(6) + own_endpoint_hosts(2)
    for h in hosts:
        sim.add_host(h, power="on")
    with maas_lib.open_fleet(tmp_path / "fleet.db") as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="test")
        rid = fleet.submit("power-cycle", [h.name for h in hosts], batch_size="100%").id
        report = fleet.worker(
            driver_factory=sim.driver_factory,
            poll=0.01,
            poll_interval=0.01,
            endpoint_concurrency=2,
        ).run(until_idle=True)
        assert report.finished == {rid: "succeeded"}
        assert len(fleet.steps(rid)) == 2 * len(hosts)
    assert sim.max_in_flight[SHARED] == 2
    assert all((m.power_offs, m.power_ons) == (1, 1) for m in sim.by_name().values())
