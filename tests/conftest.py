"""Shared fixtures: real SQLite files in tmp dirs, real PostgreSQL schemas, real
inventories, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import maas_lib

REPO = Path(__file__).resolve().parents[1]

#: How long tests wait for anything is a multiple of this one setting: raise it on a
#: slow or loaded machine (MAAS_TEST_TIMEOUT_SCALE=3) rather than editing timeouts.
TIMEOUT_SCALE = float(os.environ.get("MAAS_TEST_TIMEOUT_SCALE", "1"))


def patience(seconds: float) -> float:
    """A test's wait of `seconds` on an unloaded machine, scaled by MAAS_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


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


#: The PostgreSQL server the store tests use (a database the tests may create schemas in).
PG_URL = os.environ.get("MAAS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """`MAAS_TEST_PG` if a server answers there; else every test using it is skipped."""
    from urllib.parse import urlsplit

    from maas_lib.store.pg_url import parse_pg_url

    target = parse_pg_url(PG_URL)
    where = urlsplit(PG_URL).netloc.rpartition("@")[2] or "the default socket"
    try:
        import psycopg

        with psycopg.connect(target.conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # ImportError, OperationalError, a bad URL
        pytest.skip(f"PostgreSQL not reachable at {where}: {target.scrub(exc)}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema of its own (`?schema=`), dropped after."""
    import psycopg
    from psycopg import sql

    schema = f"maas_test_{uuid.uuid4().hex[:12]}"
    yield f"{pg_server}{'&' if '?' in pg_server else '?'}schema={schema}"
    from maas_lib.store.pg_url import parse_pg_url

    with psycopg.connect(parse_pg_url(pg_server).conninfo, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each backend: a SQLite file, and a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "maas.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def fleet(db_path: Path, inventory: Path):
    with maas_lib.open_fleet(db_path) as f:
        f.import_hosts([str(inventory)])
        yield f


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str] | None = None, **parts):
        self.code = proc.returncode if proc else parts["code"]
        self.out = proc.stdout if proc else parts["out"]
        self.err = proc.stderr if proc else parts["err"]

    def json(self):
        import json

        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[:500]!r}, err={self.err[:500]!r})"


def cli_environment(
    home: Path, db_path: Path | None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The whole environment `maasctl` runs with in the `cli` fixtures: this one's without
    credentials or a database, HOME in the test's directory, then `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_CRED_", "MAAS_DB"))}
    full_env["HOME"] = str(home)
    full_env.pop("XDG_DATA_HOME", None)
    if db_path is not None:
        full_env["MAAS_DB"] = str(db_path)
    full_env.update(env or {})
    return full_env


@pytest.fixture
def cli(db_path: Path, tmp_path: Path) -> Callable[..., CliResult]:
    """Run the installed `maasctl` entry point in a subprocess, as a user would."""

    def run(*args: str, env: dict[str, str] | None = None, db: bool = True) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "maas_lib", *args],
            capture_output=True,
            text=True,
            env=cli_environment(tmp_path / "home", db_path if db else None, env),
            cwd=tmp_path,
            timeout=patience(120),
        )
        return CliResult(proc)

    return run


def maasctl_in_process(args: Sequence[str], env: dict[str, str], cwd: Path) -> CliResult:
    """`maasctl ARGS` through the same `main` the entry point calls, in this process, with
    exactly `env` as its environment: what it printed on stdout and stderr, and its exit
    code. A fraction of a subprocess's cost, for the many bad-input cases; each behaviour
    family keeps a case through the real entry point (`cli`)."""
    import logging

    from click.testing import CliRunner

    from maas_lib.cli import main

    root = logging.getLogger()
    loggers = {name: logging.getLogger(name).level for name in ("", "sushy", "pyghmi", "urllib3")}
    handlers = list(root.handlers)
    before = os.getcwd()
    os.chdir(cwd)
    try:
        overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
        with CliRunner().isolation(env={**overrides, **env}) as (out, err, _):
            try:
                code = main(list(args))
            except SystemExit as exc:  # pragma: no cover - main returns, it does not exit
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
            text_out, text_err = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.chdir(before)
        root.handlers[:] = handlers
        for name, level in loggers.items():
            logging.getLogger(name).setLevel(level)
    return CliResult(code=code, out=text_out, err=text_err)


@pytest.fixture
def cli_in_process(db_path: Path, tmp_path: Path) -> Callable[..., CliResult]:
    """As `cli`, with `maasctl` run in this process (`maasctl_in_process`)."""

    def run(*args: str, env: dict[str, str] | None = None, db: bool = True) -> CliResult:
        full_env = cli_environment(tmp_path / "home", db_path if db else None, env)
        return maasctl_in_process(args, full_env, tmp_path)

    return run
