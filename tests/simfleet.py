"""A simulated fleet for integration tests: the real simulator process, real BMC peers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maas_lib
from maas_lib import sim
from maas_lib.models import HostSpec
from tests.conftest import patience

#: Fast, but not so tight that a loaded CI machine times out a healthy simulated BMC.
FAST_RUN = {
    "timeout": patience(2.0),
    "retries": 1,
    "power_timeout": patience(15.0),
    "poll_interval": 0.1,
    "poll": 0.1,
    "install_timeout": patience(20.0),
    "claim_ttl": 5.0,
}


def run_args(**settings: float) -> list[str]:
    """`maasctl run` options for FAST_RUN's BMC timeouts and poll, or `settings` instead."""
    chosen = {k: FAST_RUN[k] for k in ("timeout", "power_timeout", "poll")} | settings
    return [f"--{k.replace('_', '-')}={v:g}" for k, v in chosen.items()]


def run_maasctl(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, with exactly `env` as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "maas_lib", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=patience(120) if timeout is None else timeout,
    )


def blades(n: int) -> list[HostSpec]:
    """`n` hosts behind one BMC endpoint (a chassis manager), for the in-process sim."""
    return [
        HostSpec(
            name=f"blade{i}",
            pool="chassis",
            bmc_address="127.0.0.1",
            bmc_port=6230,
            bmc_system=f"blade-{i}",
            bmc_credential="lab",
        )
        for i in range(n)
    ]


def free_udp_base(count: int, start: int = 21000) -> int:
    """A base port with `count` consecutive free UDP ports on loopback."""
    base = start + (os.getpid() % 200) * 50
    while base + count < 65000:
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base += count + 7
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


@dataclass
class SimFleet:
    directory: Path
    db: Path
    info: dict[str, Any]
    env: dict[str, str]

    def state(self) -> dict[str, dict[str, Any]]:
        """Machine states written after this call (state.json is refreshed each second)."""
        import time

        asked = time.time()
        path = self.directory / "state.json"
        deadline = time.monotonic() + patience(5)
        while path.stat().st_mtime <= asked and time.monotonic() < deadline:
            time.sleep(0.05)
        return {m["host"]: m for m in sim.state(self.directory)}

    def fleet(self) -> maas_lib.Fleet:
        return maas_lib.open_fleet(self.db)

    def hosts(self, fault: str | None = None, kind: str | None = None) -> list[str]:
        import json

        rows = json.loads((self.directory / "hosts.json").read_text())
        return [
            r["name"] for r in rows if (kind is None or r["kind"] == kind) and r["fault"] == fault
        ]


@contextmanager
def running_sim(directory: Path, **options: Any) -> Iterator[SimFleet]:
    """Start the simulator, import its inventory into a fresh DB, stop it afterwards."""
    db = directory / "fleet.db"
    n = options.get("ipmi", 0) + options.get("dual", 0)
    config = sim.sim_config(
        directory=directory / "sim",
        db=str(db),
        ipmi_base_port=free_udp_base(max(2 * n, 1)),
        **options,
    )
    info = sim.start(config)
    try:
        with maas_lib.open_fleet(db) as fleet:
            fleet.import_hosts([info["inventory"]])
        yield SimFleet(directory / "sim", db, info, read_env(Path(info["credentials_env"])))
    finally:
        sim.stop(directory / "sim")
