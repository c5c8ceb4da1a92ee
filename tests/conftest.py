"""Shared fixtures: real SQLite files in tmp dirs, real inventories, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import maas_lib

REPO = Path(__file__).resolve().parents[1]

FLEET_YAML = """
all:
  vars:
    bmc_credential: lab
  children:
    web:
      vars:
        pool_max_unavailable: 25%
      hosts:
        web[01:08]:
          rack: r1
          bmc_address: "10.20.1.{{ inventory_hostname[-2:] | int }}"
    db:
      hosts:
        db01: {rack: r2, bmc_address: 10.20.2.1}
        db02: {rack: r2, bmc_address: 10.20.2.2}
    gpu:
      hosts:
        gpu01:
          bmc_address: https://gpu01-bmc.example:8443
          bmc_credential: redfish-lab
"""


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    def write(name: str, text: str, mode: int | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        if mode is not None:
            path.chmod(mode)
        return path

    return write


@pytest.fixture
def inventory(write_file: Callable[..., Path]) -> Path:
    return write_file("inventory/fleet.yml", FLEET_YAML)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "maas.db"


@pytest.fixture
def fleet(db_path: Path, inventory: Path):
    with maas_lib.open_fleet(db_path) as f:
        f.import_hosts([str(inventory)])
        yield f


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        import json

        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[:500]!r}, err={self.err[:500]!r})"


@pytest.fixture
def cli(db_path: Path, tmp_path: Path) -> Callable[..., CliResult]:
    """Run the installed `maasctl` entry point in a subprocess, as a user would."""

    def run(*args: str, env: dict[str, str] | None = None, db: bool = True) -> CliResult:
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("MAAS_CRED_", "MAAS_DB"))
        }
        full_env["HOME"] = str(tmp_path / "home")
        full_env.pop("XDG_DATA_HOME", None)
        if db:
            full_env["MAAS_DB"] = str(db_path)
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "maas_lib", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=tmp_path,
            timeout=120,
        )
        return CliResult(proc)

    return run
