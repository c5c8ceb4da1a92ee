"""Every front end reports a request alike: `maasctl status --json`, the collection's
`request_info` module and the Python API give the same JSON for the same request, after a
real scheduler run over in-process simulated machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import maas_lib
from maas_lib.models import HostSpec
from maas_lib.serialize import to_jsonable
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.sim.machine import MachineConfig
from tests.conftest import REPO

REQUEST_INFO = REPO / "ansible_collections/maas_lib/fleet/plugins/modules/request_info.py"


def request_info_module(tmp_path: Path, **args: object) -> dict:
    """The `request_info` module run as Ansible runs it (arguments in a JSON file)."""
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "ANSIBLE_"))}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, str(REQUEST_INFO), str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    return result


def test_cli_collection_and_api_give_the_same_json_for_a_request(
    db_path, tmp_path, cli, monkeypatch
):
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")
    hosts = [
        HostSpec(
            name=f"n{i}",
            pool="p",
            bmc_address="127.0.0.1",
            bmc_port=7300 + i,
            bmc_credential="nocreds" if i == 2 else "lab",  # n2 fails: no credential
        )
        for i in range(3)
    ]
    sim = InProcessFleet(config=MachineConfig(power_delay=0.0, install_time=0.0))
    for h in hosts:
        sim.add_host(h, power="on")
    with maas_lib.open_fleet(db_path) as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="test")
        rid = fleet.submit("power-cycle", ["n*"], batch_size="2", max_failures="100%").id
        fleet.run(driver_factory=sim.driver_factory, poll=0.02, poll_interval=0.01)
        status = to_jsonable(fleet.status(rid))
        api = {steps: fleet.request_info(rid, steps=steps) for steps in (False, True)}

    for steps in (False, True):
        check_alike(
            rid,
            api[steps],
            status,
            steps,
            cli("status", str(rid), "--json", *(["--steps"] if steps else [])).json(),
            request_info_module(tmp_path, id=rid, steps=steps, db=str(db_path)),
        )


def check_alike(rid: int, api: dict, status: dict, steps: bool, from_cli: dict, module: dict):
    assert api["state"] == "partial" and api["counts"] == {"succeeded": 2, "failed": 1}
    assert ("steps" in api) is steps and api["summary"]["failures"][0]["hosts"] == ["n2"]
    assert from_cli == api
    assert json.loads(json.dumps(api)) == api  # JSON-ready as returned
    assert (module["id"], module["state"]) == (rid, "partial")
    assert (
        module["request"]
        == status
        == {k: v for k, v in api.items() if k not in ("steps", "summary")}
    )
    assert module["summary"] == api["summary"]
    assert module.get("steps") == api.get("steps")
