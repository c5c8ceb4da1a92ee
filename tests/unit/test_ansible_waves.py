"""The Ansible executor splits a batch so no playbook run has more hosts behind one BMC
endpoint than the per-endpoint limit (ansible's forks cannot share the native cap)."""

from collections import Counter

from maas_lib.bmc.base import BmcTarget
from maas_lib.models import HostSpec
from maas_lib.scheduler.ansible_executor import waves


def spec(name, address, port=None, **kw):
    return HostSpec(name=name, pool="p", bmc_address=address, bmc_port=port, **kw)


def endpoint_load(records, run):
    load = Counter()
    for h in run:
        t = BmcTarget.from_host(records[h])
        load.update({(e.address, e.port) for e in (t.primary, t.fallback) if e is not None})
    return load


def test_hosts_behind_one_endpoint_are_split_in_order_others_fill_the_first_run():
    agg = "https://rf-aggregator.example"
    records = {
        f"rf{i}": spec(f"rf{i}", agg, bmc_system=f"/redfish/v1/Systems/{i}") for i in range(6)
    }
    records |= {f"ipmi{i}": spec(f"ipmi{i}", f"10.0.0.{i}") for i in range(3)}
    order = ["rf0", "ipmi0", "rf1", "rf2", "rf3", "rf4", "ipmi1", "rf5", "ipmi2"]
    runs = waves(records, order, 4)
    assert runs == [["rf0", "ipmi0", "rf1", "rf2", "rf3", "ipmi1", "ipmi2"], ["rf4", "rf5"]]
    assert sorted(h for run in runs for h in run) == sorted(order)
    assert all(max(endpoint_load(records, run).values()) <= 4 for run in runs)


def test_a_fallback_endpoint_counts_too_and_one_run_suffices_below_the_limit():
    records = {
        f"h{i}": spec(
            f"h{i}",
            f"10.0.1.{i}",
            bmc_fallback_protocol="redfish",
            bmc_fallback_address="https://cmm.example",
        )
        for i in range(3)
    }
    assert waves(records, ["h0", "h1", "h2"], 2) == [["h0", "h1"], ["h2"]]
    assert waves(records, ["h0", "h1", "h2"], 3) == [["h0", "h1", "h2"]]
    assert waves(records, [], 4) == []
