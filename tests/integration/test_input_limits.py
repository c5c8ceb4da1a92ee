"""Input limits and data at rest / on the wire (issue 13, items 6 and 7), seen as a user
sees them: the real `maasctl` in subprocesses, real SQLite files, a real HTTP(S) server.

Bad input is one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

import maas_lib
from tests.conftest import PG_URL, CliResult, patience
from tests.simfleet import free_udp_base, run_maasctl

BOMB = """\
all:
  hosts:
    h1:
      bmc_address: 10.0.0.1
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def one_line_error(r, *needles: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("maasctl: error: "), r
    for needle in needles:
        assert needle in lines[0], r


def maasctl(tmp_path: Path, db: Path, *args: str, timeout: float) -> CliResult:
    """As the `cli` fixture, with a timeout of our own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_CRED_", "MAAS_DB"))}
    env.update(HOME=str(tmp_path / "home"), MAAS_DB=str(db))
    return CliResult(run_maasctl(env, *args, cwd=tmp_path, timeout=timeout))


# -- item 6: inventories, --hosts-file, host names ----------------------------------------


def test_a_yaml_alias_bomb_is_refused_and_ordinary_anchors_still_import(
    cli, write_file, db_path, tmp_path
):
    bomb = write_file("bomb.yml", BOMB)
    # Within the limit ansible-core would need minutes and gigabytes for this one; a
    # timeout here is the defect.
    r = maasctl(tmp_path, db_path, "hosts", "import", str(bomb), timeout=patience(60))
    one_line_error(r, str(bomb), "aliases")
    assert not db_path.exists()
    # A merge key on every host is what anchors are for: 400 hosts share one block.
    hosts = "\n".join(
        f"    n{i:03d}: {{<<: *d, bmc_address: 10.9.{i // 200}.{i % 200 + 1}}}" for i in range(400)
    )
    shared = write_file(
        "shared.yml",
        "x-defaults: &d {rack: r1, hw_model: m1, bmc_vendor: v, site: s, row: 1}\n"
        f"all:\n  hosts:\n{hosts}\n",
    )
    r = cli("hosts", "import", str(shared), "--json")
    assert r.code == 0, r
    assert r.json()["added"] == 400


@pytest.fixture
def imported(cli, inventory):
    r = cli("hosts", "import", str(inventory))
    assert r.code == 0, r
    return r


def test_a_hosts_file_that_is_not_utf8_text_or_is_endless_is_refused(
    cli, imported, write_file, tmp_path
):
    bad = tmp_path / "hosts.txt"
    bad.write_bytes(b"web01\nweb\xff\xfe02\n")
    one_line_error(cli("submit", "reboot", "--hosts-file", str(bad)), str(bad), "UTF-8")
    one_line_error(cli("bmc", "status", "--hosts-file", str(bad)), str(bad), "UTF-8")
    # An endless file is read only up to the cap (documented: 16 MiB), not forever.
    one_line_error(cli("submit", "reboot", "--hosts-file", "/dev/zero"), "/dev/zero", "MiB")
    assert cli("list", "--json").json() == []


def test_host_names_are_at_most_253_characters_and_one_line(
    cli, cli_in_process, write_file, db_path
):
    long_ini = write_file("long.ini", "[all]\n" + "a" * 10_000 + " bmc_address=10.0.0.1\n")
    r = cli("hosts", "import", str(long_ini))
    one_line_error(r, "253")
    assert len(r.err) < 500, r
    for name in ("web\\n01", "web01\\n"):
        inv = write_file("nl.yml", f'all:\n  hosts:\n    "{name}": {{bmc_address: 10.0.0.1}}\n')
        one_line_error(cli_in_process("hosts", "import", str(inv)), "not a valid name")
    ok = write_file("ok.ini", "[all]\n" + "a" * 253 + " bmc_address=10.0.0.1\n")
    assert cli("hosts", "import", str(ok)).code == 0
    assert [h["host"] for h in cli("hosts", "list", "--json").json()] == ["a" * 253]


def test_sim_faults_go_to_protocols_that_have_hosts(cli, tmp_path):
    simdir = tmp_path / "sim"
    one_line_error(
        cli("sim", "up", "--ipmi", "0", "--dual", "1", "--dead", "1", "--dir", str(simdir)),
        "--ipmi",
    )
    base = str(free_udp_base(4))
    up = cli(
        "sim", "up", "--ipmi", "2", "--redfish", "0", "--dead", "1", "--http",
        "--ipmi-base-port", base, "--dir", str(simdir),
    )  # fmt: skip
    try:
        assert up.code == 0, up
        machines = cli("sim", "status", "--dir", str(simdir), "--json").json()
        assert sorted(m["fault"] or "" for m in machines) == ["", "dead"]
    finally:
        cli("sim", "down", "--dir", str(simdir))


# -- item 6: databases ----------------------------------------------------------------------


def test_an_unusable_database_is_bad_input_and_is_left_as_it_was(
    cli, cli_in_process, inventory, tmp_path
):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    folder = tmp_path / "a-directory"
    folder.mkdir()
    for target in (garbage, text, folder):
        before = target.read_bytes() if target.is_file() else None
        for args in (("list",), ("hosts", "import", str(inventory)), ("metrics",)):
            # The first through the installed entry point; the rest in-process, as cheap.
            run = cli if (target, args) == (garbage, ("list",)) else cli_in_process
            one_line_error(run("--db", str(target), *args), f"cannot use database {target}")
        if before is not None:
            assert target.read_bytes() == before
    # A server that does not answer is a fault, not bad input: exit 1.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = PG_URL.rsplit("@", 1)[0] + f"@127.0.0.1:{closed}/test"
    r = cli("--db", url, "list")
    assert r.code == 1 and "cannot open database" in r.err, r


def test_only_import_and_db_init_create_a_database(cli, cli_in_process, inventory, tmp_path):
    typo = tmp_path / "typo" / "sub" / "maas.db"
    for args in (
        ("submit", "reboot", "web01"),
        ("list",),
        ("hosts", "list"),
        ("run", "--until-idle"),
        ("metrics",),
        ("stats",),
    ):
        run = cli if args == ("list",) else cli_in_process
        one_line_error(run("--db", str(typo), *args), f"no database at {typo}", "db init")
    assert not (tmp_path / "typo").exists()
    # The default database, when it does not exist yet, is no different.
    default = tmp_path / "home" / ".local" / "share" / "maas-lib" / "maas.db"
    one_line_error(cli("list", db=False), str(default))
    r = cli("--db", str(typo), "db", "init")
    assert r.code == 0 and "ready" in r.out, r
    assert cli("--db", str(typo), "list", "--json").json() == []
    assert cli("--db", str(typo), "db", "init").code == 0  # again: nothing to do
    other = tmp_path / "new" / "fleet.db"
    assert cli("--db", str(other), "hosts", "import", str(inventory)).code == 0
    assert len(cli("--db", str(other), "hosts", "list", "--json").json()) == 11


def test_a_postgresql_schema_without_a_store_is_not_created_by_a_mistyped_url(
    cli, inventory, pg_url
):
    one_line_error(cli("--db", pg_url, "submit", "reboot", "web01"), "no maas-lib store at")
    assert "schema=" in pg_url  # the name shown is the URL as given, password masked
    assert cli("--db", pg_url, "hosts", "import", str(inventory)).code == 0
    assert len(cli("--db", pg_url, "hosts", "list", "--json").json()) == 11


# -- item 7: at rest ------------------------------------------------------------------------


def test_a_new_database_and_its_wal_and_shm_are_private(cli, inventory, db_path):
    assert cli("hosts", "import", str(inventory)).code == 0
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    with maas_lib.open_fleet(db_path) as fleet:  # a second process keeps the WAL alive
        fleet.submit("reboot", ["web01"])
        for suffix in ("-wal", "-shm"):
            side = db_path.with_name(db_path.name + suffix)
            assert stat.S_IMODE(side.stat().st_mode) == 0o600, side
    fresh = db_path.with_name("init.db")
    assert cli("--db", str(fresh), "db", "init").code == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# -- item 7: on the wire --------------------------------------------------------------------


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`maasctl metrics --serve …` in the background, stopped on exit."""

    def __init__(self, tmp_path: Path, db: Path, *args: str, env: dict[str, str] | None = None):
        full = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "HOME"))}
        full.update(HOME=str(tmp_path / "home"), MAAS_DB=str(db), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maas_lib", "metrics", "--serve", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=full,
            cwd=tmp_path,
        )

    def __enter__(self) -> Server:
        assert self.proc.stderr is not None
        self.banner = self.proc.stderr.readline().strip()  # written once listening
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=patience(30))
        finally:
            self.proc.kill()


def status_of(url: str, *, context: ssl.SSLContext | None = None, auth: str | None = None) -> int:
    headers = {"Authorization": "Basic " + b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=30, context=context
        ) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_metrics_serve_binds_loopback_by_default_and_answers_only_metrics(
    cli, inventory, db_path, tmp_path
):
    assert cli("hosts", "import", str(inventory)).code == 0
    port = free_tcp_port()
    with Server(tmp_path, db_path, f":{port}") as server:
        assert server.banner == f"serving http://127.0.0.1:{port}/metrics", server.banner
        assert status_of(f"http://127.0.0.1:{port}/metrics") == 200
        for path in ("/", "/anything", "/metrics/x", "/favicon.ico"):
            assert status_of(f"http://127.0.0.1:{port}{path}") == 404, path


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


def test_metrics_serve_over_tls_with_basic_auth(cli, inventory, db_path, tmp_path):
    assert cli("hosts", "import", str(inventory)).code == 0
    certfile, keyfile = self_signed(tmp_path)
    password = "Zq9-scrape-pass"
    # No password anywhere: refused before listening; never taken from argv.
    one_line_error(cli("metrics", "--serve", ":9", "--auth-user", "prom"), "MAAS_METRICS_PASSWORD")
    port = free_tcp_port()
    args = (f"127.0.0.1:{port}", "--tls-cert", str(certfile), "--tls-key", str(keyfile))
    with Server(
        tmp_path, db_path, *args, "--auth-user", "prom", env={"MAAS_METRICS_PASSWORD": password}
    ) as server:
        assert server.banner == f"serving https://127.0.0.1:{port}/metrics", server.banner
        assert password not in Path(f"/proc/{server.proc.pid}/cmdline").read_text()
        ctx = ssl.create_default_context(cafile=str(certfile))
        url = f"https://127.0.0.1:{port}/metrics"
        assert status_of(url, context=ctx) == 401
        assert status_of(url, context=ctx, auth="prom:wrong") == 401
        assert status_of(url, context=ctx, auth=f"other:{password}") == 401
        assert status_of(url, context=ctx, auth=f"prom:{password}") == 200
        assert status_of(f"https://127.0.0.1:{port}/", context=ctx, auth=f"prom:{password}") == 404
        # A plain-HTTP client gets no metrics, and the server goes on serving.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert status_of(url, context=ctx, auth=f"prom:{password}") == 200
    # The password may come from a file too.
    pwfile = tmp_path / "scrape.pass"
    pwfile.write_text(password + "\n")
    port = free_tcp_port()
    with Server(
        tmp_path, db_path, f"127.0.0.1:{port}", "--auth-user", "prom",
        "--auth-password-file", str(pwfile),
    ) as server:  # fmt: skip
        assert server.banner == f"serving http://127.0.0.1:{port}/metrics", server.banner
        url = f"http://127.0.0.1:{port}/metrics"
        assert status_of(url) == 401
        assert status_of(url, auth=f"prom:{password}") == 200
