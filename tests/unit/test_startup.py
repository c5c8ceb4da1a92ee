"""Start-up: `maasctl` and `import maas_lib` load only what a command needs. Checked on
the import graph (which modules a fresh interpreter has loaded), never on a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import patience

#: Libraries no `--help` needs: BMC protocols, databases, Ansible, retries, rendering.
HEAVY = (
    "pyghmi",
    "sushy",
    "ansible",
    "ansible_runner",
    "sqlite_utils",
    "psycopg",
    "tenacity",
    "rich",
    "yaml",
    "cryptography",
    "maas_lib.fleet",
    "maas_lib.store",
    "maas_lib.telemetry",
    "maas_lib.bmc.ipmi",
    "maas_lib.bmc.redfish",
    # Models: option choices come from maas_lib.enums, defaults and ranges when shown.
    "pydantic",
    "maas_lib.models",
    "maas_lib.bmc.control",
    "maas_lib.scheduler",
)


def _probe(code: str, env: dict[str, str] | None = None) -> Any:
    """What `code`, run by a fresh interpreter, prints as JSON on its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=patience(120),
        check=True,
        env=env,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def _loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Top modules and maas_lib submodules a fresh interpreter holds after `code`."""
    return set(_probe(f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))\n", env))


def _heavy(loaded: set[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy))


def _maasctl(*args: str) -> str:
    """Probe code running `maasctl ARGS` (output swallowed)."""
    return (
        "import contextlib, io, runpy\n"
        f"sys.argv = ['maasctl', *{list(args)!r}]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        runpy.run_module('maas_lib', run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
    )


def test_import_maas_lib_loads_no_submodule_until_a_name_is_used():
    loaded = _loaded_after("import maas_lib")
    assert sorted(m for m in loaded if m.startswith("maas_lib.")) == []
    assert "pydantic" not in loaded


def test_every_public_name_resolves():
    import maas_lib

    for name in maas_lib.__all__:
        assert getattr(maas_lib, name) is not None, name
    with pytest.raises(AttributeError):
        maas_lib.no_such_name  # noqa: B018


def test_maasctl_help_loads_no_protocol_database_or_ansible_library():
    loaded = _loaded_after(_maasctl("--help"))
    assert "maas_lib.cli" in loaded  # the probe ran the CLI
    assert _heavy(loaded) == []


def test_option_defaults_and_ranges_are_the_librarys_read_when_shown():
    from click.testing import CliRunner

    from maas_lib.bmc.control import BmcSettings
    from maas_lib.cli import cli
    from maas_lib.scheduler.settings import SchedulerSettings

    bmc, run = BmcSettings(), SchedulerSettings()
    shown = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    shown = " ".join(shown.split())
    assert f"BMC calls in flight at once (range 1..4096). [default: {bmc.concurrency}]" in shown
    assert f"[default: {run.executor}]" in shown
    assert f"(range 1..3600). [default: {run.store_retry_s}]" in shown
    shown = CliRunner().invoke(cli, ["submit", "--help"], terminal_width=200).output
    assert "(range 0..100000)." in shown  # --canary: no default of the CLI's own


#: What a submission does not use: the scheduler, BMCs, rendering, Ansible, reports.
SUBMIT_UNUSED = (
    *(h for h in HEAVY if h.startswith(("pyghmi", "sushy", "ansible", "psycopg", "rich"))),
    "tenacity",
    "yaml",
    "cryptography",
    "prometheus_client",
    "matplotlib",
    "maas_lib.scheduler",
    "maas_lib.bmc",
    "maas_lib.inventory",
    "maas_lib.telemetry.progress",
    "maas_lib.telemetry.alerts",
    "maas_lib.telemetry.metrics",
    "maas_lib.telemetry.report",
)


def test_maasctl_submit_loads_the_queue_only(tmp_path):
    import os

    import maas_lib
    from maas_lib.models import HostSpec, PoolSpec

    db = tmp_path / "q.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_parsed(
            [HostSpec(name="n1", pool="p", bmc_address="10.0.0.1")], [PoolSpec(name="p")]
        )
    loaded = _loaded_after(
        _maasctl("submit", "reboot", "n1", "--json"), env={**os.environ, "MAAS_DB": str(db)}
    )
    with maas_lib.open_fleet(db) as fleet:
        assert [r.host_count for r in fleet.requests()] == [1]  # the probe submitted
    assert _heavy(loaded, SUBMIT_UNUSED) == []


#: What `maasctl bmc status` of IPMI hosts in a SQLite store does not use: its start-up
#: was most of its run (issue 12: at most 1.5x FreeIPMI's `ipmipower --stat`), so no
#: models (pydantic), no store interfaces or backends, nothing of the fleet, scheduler,
#: telemetry, planner, access control or service, and no other protocol or rendering.
BMC_STATUS_UNUSED = (
    "pydantic",
    "pydantic_core",
    "maas_lib.models",
    "maas_lib.fleet",
    "maas_lib.store.base",
    "maas_lib.store.sqlite",
    "maas_lib.store.sql",
    "maas_lib.store.postgres",
    "maas_lib.scheduler",
    "maas_lib.telemetry",
    "maas_lib.planner",
    "maas_lib.access",
    "maas_lib.service",
    "maas_lib.inventory",
    "maas_lib.bmc.settings",
    "maas_lib.bmc.redfish",
    "sushy",
    "requests",
    "tenacity",
    "rich",
    "yaml",
    "ansible",
    "psycopg",
    "httpx",
)


def test_maasctl_bmc_status_of_ipmi_hosts_loads_no_models_store_or_scheduler(tmp_path):
    import os
    import socket

    import maas_lib
    from maas_lib.models import HostSpec, PoolSpec

    # A BMC address where nothing answers (a UDP port just closed): the status runs to
    # its end, `unreachable` after --timeout, through the whole lean path.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "q.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_parsed(
            [
                HostSpec(name=f"n{i}", pool="p", bmc_address="127.0.0.1", bmc_port=port)
                for i in (1, 2)
            ],
            [PoolSpec(name="p")],
        )
    env = {
        **os.environ,
        "MAAS_DB": str(db),
        "MAAS_CRED_DEFAULT_USERNAME": "admin",
        "MAAS_CRED_DEFAULT_PASSWORD": "not-a-real-secret",
    }
    probe = (
        "import contextlib, io, runpy, sys, json\n"
        "sys.argv = ['maasctl', 'bmc', 'status', 'n*', '--json', '--timeout', '0.05']\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        runpy.run_module('maas_lib', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        "print(json.dumps([code, json.loads(out.getvalue()), sorted(sys.modules)]))\n"
    )
    code, rows, loaded = _probe(probe, env)
    # The command ran to its end, as always: a row per host, exit 1 (the BMCs failed).
    assert code == 1
    assert [(r["host"], r["error_class"]) for r in rows] == [
        ("n1", "unreachable"),
        ("n2", "unreachable"),
    ]
    assert _heavy(set(loaded), BMC_STATUS_UNUSED) == []
