"""The service's clients against a real server (uvicorn over TLS on loopback with a CA
made for the test, tests/apiserver.py): `maasctl --api` prints what `maasctl --db`
prints for the same fleet, with the same exit codes; access errors exit 3 with the
server's one line; a submission whose answer was lost is retried into one request; a
down server is failed over; the token is never shown; the collection's modules and
inventory go through the same client in a real ansible-playbook run."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import maas_lib
from tests.apiserver import SeededFleet, Service, free_port, running_service, service_process
from tests.conftest import CliResult, cli_environment, maasctl_in_process, patience
from tests.integration import test_service


class Setup(SeededFleet):
    """The server tests' seeded fleet (tokens `admin`, `ops` of team web-team owning pool
    web, `viewer`) in a SQLite file (or a PostgreSQL schema's URL), and a home directory
    for maasctl."""

    def __init__(self, db: Path | str, inventory: Path, home: Path):
        super().__init__(str(db), inventory)
        self.db, self.home = db, home


@pytest.fixture
def setup(request: pytest.FixtureRequest, db_path: Path, inventory: Path, tmp_path: Path) -> Setup:
    """SQLite, unless a test asks for `postgresql` (parametrized indirectly)."""
    backend = getattr(request, "param", "sqlite")
    db = db_path if backend == "sqlite" else request.getfixturevalue("pg_url")
    return Setup(db, inventory, tmp_path / "home")


@pytest.fixture
def service(setup: Setup, tmp_path: Path) -> Iterator[Service]:
    with running_service(setup.db, tmp_path, progress_poll_s=0.05) as svc:
        yield svc


Run = Callable[..., CliResult]


@pytest.fixture
def via_db(setup: Setup, tmp_path: Path) -> Run:
    """`maasctl --db DB ARGS` (in this process)."""

    def run(*args: str) -> CliResult:
        env = cli_environment(setup.home, None)
        return maasctl_in_process(["--db", str(setup.db), *args], env, tmp_path)

    return run


@pytest.fixture
def via_api(setup: Setup, service: Service, tmp_path: Path) -> Run:
    """`maasctl --api URL ARGS` with a token (admin unless `token=`) in MAAS_API_TOKEN and
    the test's CA in MAAS_API_CA, no database in the environment."""

    def run(*args: str, token: str = "admin", url: str | None = None, **env: str) -> CliResult:
        full = cli_environment(setup.home, None, {"MAAS_API_CA": str(service.certs["ca"])})
        if token:
            full["MAAS_API_TOKEN"] = setup.tokens.get(token, token)
        full.update(env)
        return maasctl_in_process(["--api", url or service.url, *args], full, tmp_path)

    return run


def same(a: CliResult, b: CliResult) -> CliResult:
    assert (a.code, a.out, a.err) == (b.code, b.out, b.err), (a, b)
    return a


# -- the same output and exit codes as against the database ---------------------------------


@pytest.mark.parametrize("setup", ["sqlite", "postgresql"], indirect=True)
def test_api_commands_print_what_the_database_commands_print(via_api, via_db, setup):
    # The dry run of one submission, both ways, before and after a request holds hosts.
    plan = ("submit", "power-cycle", "web*", "db01", "--batch-size", "3", "--canary", "1")
    same(via_api(*plan, "--dry-run", "--json"), via_db(*plan, "--dry-run", "--json"))
    same(via_api(*plan, "--dry-run"), via_db(*plan, "--dry-run"))

    sent = via_api(*plan)
    assert (sent.code, sent.out) == (0, "request 1 accepted: power-cycle of 9 hosts\n"), sent
    # Recorded as the token's principal, as the database path records --as.
    direct = via_db("submit", "reboot", "web0[1-3]", "--on-overlap", "wait", "--as", "token:admin")
    assert direct.out == "request 2 accepted: reboot of 3 hosts\n", direct
    same(via_api(*plan, "--dry-run", "--json"), via_db(*plan, "--dry-run", "--json"))

    for args in (
        ("list", "--json"),
        ("list",),
        ("list", "--state", "accepted", "--limit", "1", "--json"),
        ("status", "1", "--json"),
        ("status", "1"),
        ("status", "2", "--steps", "--json"),
        ("status", "2", "--host", "web01", "--json"),
        ("inflight", "--json"),
        ("inflight",),
        ("stats", "--json"),
        ("stats", "--pool", "web", "--action", "reboot", "--json"),
        ("hosts", "list", "--json"),
        ("hosts", "list", "--pool", "db"),
        ("workers", "--json"),
        ("audit", "--json"),
        ("audit", "--decision", "allowed", "--limit", "2"),
    ):
        same(via_api(*args), via_db(*args))

    # Bad input: the server's one line is the library's, exit 2, both ways.
    for args in (
        ("status", "99"),
        ("submit", "reboot", "nosuch*"),
        ("submit", "reimage", "web01"),
        ("submit", "reboot", "web01", "--batch-size", "0"),
        ("stats", "--since", "yesterday"),
        ("cancel", "99"),
    ):
        result = same(via_api(*args), via_db(*args))
        assert result.code == 2 and result.err.count("\n") == 1, result
    # The server checks the query itself (FastAPI): its own words, the same exit code.
    result = via_api("list", "--limit", "0")
    assert result.code == 2 and result.err.count("\n") == 1 and "limit" in result.err, result

    cancelled = via_api("cancel", "1", "--json")
    assert cancelled.json() == {"id": 1, "state": "cancelled", "cancel_requested": True}
    assert via_db("cancel", "2").out == "request 2 cancelled\n"
    for ended in ("1", "2"):  # exit 2 and the same line, both ways
        assert same(via_api("cancel", ended), via_db("cancel", ended)).code == 2
    same(via_api("status", "1", "--json"), via_db("status", "1", "--json"))
    # --watch of an ended request: the same document, exit 1 (not every host succeeded).
    watch = ("status", "1", "--watch", "--json")
    assert same(via_api(*watch), via_db(*watch)).code == 1


def test_commands_that_need_the_database_say_so(via_api):
    for args, name in (
        (("workers", "--claim-ttl", "5"), "--claim-ttl"),
        (("hosts", "release", "web01"), "hosts release"),
        (("bmc", "status", "web01"), "bmc status"),
        (("run", "--until-idle"), "run"),
        (("report", "--html", "r.html"), "report"),
        (("submit", "reboot", "web01", "--pre-hook", "x.yml"), "--pre-hook"),
        (("submit", "reboot", "web01", "--as", "someone"), "--as"),
        (("cancel", "1", "--as", "someone"), "--as"),
    ):
        result = via_api(*args)
        assert result.code == 2, result
        assert result.err.startswith(f"maasctl: error: {name} is not available with --api")


def test_a_hosts_file_is_read_by_the_client(via_api, tmp_path):
    names = tmp_path / "hosts.txt"
    names.write_text("web01\n# a comment\nweb02\n")
    sent = via_api("submit", "reboot", "--hosts-file", str(names), "--json")
    assert sent.json() == {"id": 1, "state": "accepted", "hosts": 2}, sent
    assert via_api("status", "1", "--json").json()["patterns"] == ["web01", "web02"]


def test_watch_follows_the_progress_stream_until_the_request_ends(via_api, setup):
    assert via_api("submit", "reboot", "web01", "web02").code == 0

    def cancel_soon() -> None:
        with maas_lib.open_fleet(setup.db, create=False) as fleet:
            # The watch has drawn the request once the stream is open; then it ends.
            threading.Event().wait(patience(1))
            fleet.cancel(1, actor="someone-else")

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    watched = via_api("status", "1", "--watch")
    canceller.join()
    assert watched.code == 1, watched  # cancelled: not every host succeeded
    assert "request 1: reboot cancelled" in watched.out
    # The live view (on stderr) followed the request into the state it ended in.
    assert "reboot cancelled" in watched.err and "2/2 done" in watched.err, watched


#: The server tests' fixture: a real scheduler worker over in-process simulated BMCs.
scheduler = test_service.scheduler


def test_submit_wait_follows_a_run_to_its_end_and_the_results_read_the_same(
    via_api, via_db, scheduler
):
    scheduler()  # on the service's database
    # maasctl runs in this process, with exactly its environment: the worker's credential.
    lab = {k: v for k, v in os.environ.items() if k.startswith("MAAS_CRED_LAB_")}
    sent = via_api("submit", "power-cycle", "web0[1-4]", "--batch-size", "2", "--wait", **lab)
    assert sent.code == 0, sent  # every host succeeded
    assert sent.out.startswith("request 1 accepted: power-cycle of 4 hosts\n"), sent
    assert "succeeded" in sent.err and "4/4 done" in sent.err  # the live view
    assert via_api("status", "1", "--watch", **lab).code == 0
    for args in (
        ("status", "1", "--steps", "--json"),
        ("status", "1", "--steps"),
        ("list", "--state", "succeeded", "--json"),
    ):
        same(via_api(*args), via_db(*args))

    def aged(stats: dict) -> dict:  # a worker's heartbeat age is as of each call
        for worker in stats["fleet"]["workers"]:
            worker.pop("heartbeat_age_s")
        return stats

    stats = ("stats", "--action", "power-cycle", "--json")
    assert aged(via_api(*stats).json()) == aged(via_db(*stats).json())


def test_watch_reads_the_stream_instead_of_polling(setup, tmp_path):
    """The server's access log (`maasctl -v serve`) of a watch that lasts a few seconds:
    one stream, and no read of the request but the one before it and the one after."""
    with service_process(setup.db, tmp_path / "logged") as svc:
        env = cli_environment(setup.home, None)
        env |= {"MAAS_API_CA": str(svc.certs["ca"]), "MAAS_API_TOKEN": setup.tokens["admin"]}
        api = ["--api", svc.url]
        assert maasctl_in_process([*api, "submit", "reboot", "web01"], env, tmp_path).code == 0

        def cancel_later() -> None:
            threading.Event().wait(patience(3))
            with maas_lib.open_fleet(setup.db, create=False) as fleet:
                fleet.cancel(1, actor="someone-else")

        canceller = threading.Thread(target=cancel_later)
        canceller.start()
        watched = maasctl_in_process([*api, "status", "1", "--watch"], env, tmp_path)
        canceller.join()
        assert watched.code == 1 and "reboot cancelled" in watched.out, watched
        calls = [line.split('"')[1] for line in svc.logged().splitlines() if '"' in line]
    assert calls == [
        "POST /api/v1/requests HTTP/1.1",
        "GET /api/v1/requests/1 HTTP/1.1",
        "GET /api/v1/requests/1/progress HTTP/1.1",
        "GET /api/v1/requests/1 HTTP/1.1",
    ], calls


def test_a_watch_whose_token_is_revoked_meanwhile_ends_with_exit_3(via_api, setup):
    from maas_lib.access.tokens import revoke_token

    assert via_api("submit", "reboot", "web01").code == 0

    def revoke_soon() -> None:
        with maas_lib.open_fleet(setup.db, create=False) as fleet:
            threading.Event().wait(patience(1))
            revoke_token(fleet.store, "viewer", actor="test")

    revoker = threading.Thread(target=revoke_soon)
    revoker.start()
    watched = via_api("status", "1", "--watch", token="viewer")
    revoker.join()
    assert watched.code == 3 and watched.out == "", watched
    assert watched.err.endswith("maasctl: error: token viewer was revoked\n"), watched
    assert setup.tokens["viewer"] not in watched.err


def test_a_service_that_requires_client_certificates(setup, tmp_path):
    with running_service(setup.db, tmp_path / "mtls", client_ca=True) as svc:
        env = cli_environment(setup.home, None)
        env |= {"MAAS_API_CA": str(svc.certs["ca"]), "MAAS_API_TOKEN": setup.tokens["admin"]}
        cert = ["--client-cert", str(svc.certs["client-alice"])]
        key = ["--client-key", str(svc.certs["client-alice-key"])]
        listed = maasctl_in_process(
            ["--api", svc.url, *cert, *key, "list", "--json"], env, tmp_path
        )
        assert listed.code == 0 and listed.json() == [], listed
        # From the environment, as the collection and AWX give them.
        both = {"MAAS_API_CLIENT_CERT": cert[1], "MAAS_API_CLIENT_KEY": key[1]}
        listed = maasctl_in_process(["--api", svc.url, "list"], env | both, tmp_path)
        assert listed.code == 0, listed
        # Without one, TLS 1.3 leaves the server no way to say why: it closes the
        # connection; past the deadline, one line says what may be missing.
        env["MAAS_API_DEADLINE"] = str(patience(2))
        refused = maasctl_in_process(["--api", svc.url, "list"], env, tmp_path)
        assert refused.code == 1 and refused.err.count("\n") == 1, refused
        assert "requires a client certificate: --client-cert" in refused.err
        # A key that is not the certificate's: bad input, before any connection.
        wrong = ["--client-key", str(svc.certs["key"])]
        mismatched = maasctl_in_process(["--api", svc.url, *cert, *wrong, "list"], env, tmp_path)
        assert mismatched.code == 2 and "--client-cert" in mismatched.err, mismatched


# -- access errors ------------------------------------------------------------------------


def test_access_errors_exit_3_with_the_servers_one_line(via_api, setup):
    for token in ("maas_" + "x" * 43, ""):
        denied = via_api("list", token=token)
        assert denied.code == 3 and denied.out == "", denied
        assert denied.err.count("\n") == 1 and denied.err.startswith("maasctl: error: ")
    # No token at all: the line says how to give one, not only the header it lacked.
    assert "set MAAS_API_TOKEN or --api-token-file" in via_api("list", token="").err
    # A viewer reads but may not submit; an operator submits only in its team's pools.
    assert via_api("list", token="viewer").code == 0
    refused = via_api("submit", "reboot", "web01", token="viewer")
    assert refused.code == 3 and refused.err.count("\n") == 1, refused
    refused = via_api("submit", "reboot", "web01", "db01", token="ops")
    assert refused.code == 3 and "db" in refused.err, refused
    assert via_api("list", "--json").json() == []  # nothing was written
    assert via_api("submit", "reboot", "web01", token="ops").code == 0
    # Not found is bad input (2), as against the database.
    assert via_api("status", "7", token="viewer").code == 2


def test_the_token_is_never_shown(via_api, setup, service, tmp_path):
    token = setup.tokens["admin"]
    results = [
        via_api("-vv", "submit", "reboot", "web01"),
        via_api("-vv", "cancel", "1"),
        via_api("-vv", "status", "1", "--watch", "--json"),
        via_api("-vv", "list", url=f"https://127.0.0.1:{free_port()}," + service.url),
        via_api("-vv", "status", "99"),
    ]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    results.append(via_api("--api-token-file", str(token_file), "list", token=""))
    assert results[-1].code == 0, results[-1]
    results.append(via_api("list", token=token[:-1] + "Z"))
    assert results[-1].code == 3
    for r in results:
        assert token not in r.out + r.err and token[5:25] not in r.out + r.err, r


# -- retries, idempotency and failover ------------------------------------------------------


class DroppingProxy:
    """A TLS-terminating proxy in front of the service that forwards each request and
    reads its answer, but drops the client's connection instead of answering the first
    `drops` POSTs to /api/v1/requests: the fault of a load balancer that dies after the
    server acted (mocked here because a real server does not drop its own answers)."""

    def __init__(self, service: Service):
        self.service = service
        self.drops = 1
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, idempotency key
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(service.certs["cert"], service.certs["key"])
        self.server_ctx = server_ctx
        self.client_ctx = service.context()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_message(stream) -> bytes | None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = stream.recv(1)
            if not chunk:
                return None
            head += chunk
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = b""
        while len(body) < length:
            chunk = stream.recv(length - len(body))
            if not chunk:
                break
            body += chunk
        return head + body

    def _handle(self, conn: socket.socket) -> None:
        try:
            with self.server_ctx.wrap_socket(conn, server_side=True) as client:
                while True:
                    request = self._read_message(client)
                    if request is None:
                        return
                    first = request.split(b"\r\n", 1)[0].decode()
                    method, path = first.split()[:2]
                    key = None
                    for line in request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                        name, _, value = line.decode().partition(":")
                        if name.lower() == "idempotency-key":
                            key = value.strip()
                    self.seen.append((method, path, key))
                    answer = self._forward(request)
                    if method == "POST" and path == "/api/v1/requests" and self.drops:
                        self.drops -= 1
                        return  # the server acted; its answer never reaches the client
                    client.sendall(answer)
        except (OSError, ssl.SSLError):
            return

    def _forward(self, request: bytes) -> bytes:
        host, port = self.service.url.removeprefix("https://").rsplit(":", 1)
        raw = socket.create_connection((host, int(port)))
        with self.client_ctx.wrap_socket(raw, server_hostname=host) as upstream:
            upstream.sendall(request)
            answer = self._read_message(upstream)
        return answer or b""


@pytest.fixture
def proxy(service: Service) -> Iterator[DroppingProxy]:
    p = DroppingProxy(service)
    yield p
    p.close()


def test_a_submission_whose_answer_was_lost_is_retried_into_one_request(via_api, proxy):
    sent = via_api("submit", "reboot", "web*", "--json", url=proxy.url)
    assert sent.code == 0, sent
    assert sent.json() == {"id": 1, "state": "accepted", "hosts": 8}
    posts = [s for s in proxy.seen if s[0] == "POST"]
    # Sent twice with one key (the first answer was dropped); one request exists.
    assert len(posts) == 2 and posts[0][2] == posts[1][2] and posts[0][2], proxy.seen
    assert [r["id"] for r in via_api("list", "--json").json()] == [1]


def test_a_cancel_whose_answer_was_lost_is_not_sent_again(via_api, proxy):
    assert via_api("submit", "reboot", "web01").code == 0
    proxy.drops = 0
    assert via_api("cancel", "1", url=proxy.url).code == 0


def test_rate_limited_calls_wait_for_retry_after_within_the_deadline(setup, tmp_path):
    with running_service(setup.db, tmp_path / "slow", rate_limit=1) as svc:  # burst 2
        env = cli_environment(setup.home, None)
        env |= {"MAAS_API_CA": str(svc.certs["ca"]), "MAAS_API_TOKEN": setup.tokens["admin"]}
        # A submission, then a status that reads three times at once: past the burst.
        api = ["--api", svc.url]
        assert maasctl_in_process([*api, "submit", "reboot", "web01"], env, tmp_path).code == 0
        status = maasctl_in_process([*api, "status", "1", "--steps"], env, tmp_path)
        assert status.code == 0 and status.err == "", status  # the 429 waited out, not shown
        assert status.out.startswith("request 1: reboot accepted"), status
        env["MAAS_API_DEADLINE"] = "0.5"  # shorter than the Retry-After (1 s)
        results = [maasctl_in_process(["--api", svc.url, "list"], env, tmp_path) for _ in range(3)]
        limited = results[-1]
        assert limited.code == 1 and limited.err.count("\n") == 1, results
        assert "rate limited" in limited.err, limited


def test_a_down_server_is_failed_over_to_the_next(via_api, service):
    down = f"https://127.0.0.1:{free_port()}"
    sent = via_api("submit", "reboot", "web01", "--json", url=f"{down},{service.url}")
    assert sent.code == 0 and sent.json()["id"] == 1, sent
    listed = via_api("list", "--json", url=f"{down},{service.url}")
    assert [r["id"] for r in listed.json()] == [1]


def test_two_server_processes_on_one_database_fail_over_mid_way(setup, tmp_path):
    """Active-active: two `maasctl serve` processes; the client's first URL is stopped
    between two submissions, and the second one is accepted by the other, once each."""
    with (
        service_process(setup.db, tmp_path / "a") as a,
        service_process(setup.db, tmp_path / "b") as b,
    ):
        env = cli_environment(setup.home, None)
        env |= {"MAAS_API_TOKEN": setup.tokens["admin"], "MAAS_API_URL": f"{a.url},{b.url}"}
        # Each process made its own CA: trust both.
        bundle = tmp_path / "both.pem"
        bundle.write_text(a.certs["ca"].read_text() + b.certs["ca"].read_text())
        env["MAAS_API_CA"] = str(bundle)
        first = maasctl_in_process(["submit", "reboot", "web01", "--json"], env, tmp_path)
        assert first.code == 0, first
        assert a.proc is not None
        a.proc.terminate()
        a.proc.wait(patience(40))
        second = maasctl_in_process(["submit", "reboot", "web02", "--json"], env, tmp_path)
        assert second.code == 0, second
        listed = maasctl_in_process(["list", "--json"], env, tmp_path)
        assert sorted(r["id"] for r in listed.json()) == [1, 2]
        assert setup.tokens["admin"] not in a.logged() + b.logged()


def test_a_watch_goes_on_through_the_other_server_when_its_own_is_killed(setup, tmp_path):
    with (
        service_process(setup.db, tmp_path / "a") as a,
        service_process(setup.db, tmp_path / "b") as b,
    ):
        bundle = tmp_path / "both.pem"
        bundle.write_text(a.certs["ca"].read_text() + b.certs["ca"].read_text())
        env = cli_environment(setup.home, None)
        env |= {
            "MAAS_API_TOKEN": setup.tokens["admin"],
            "MAAS_API_URL": f"{a.url},{b.url}",
            "MAAS_API_CA": str(bundle),
        }
        assert maasctl_in_process(["submit", "reboot", "web01"], env, tmp_path).code == 0

        def kill_then_cancel() -> None:
            assert a.proc is not None
            while "/progress" not in a.logged():  # the watch's stream is open on a
                threading.Event().wait(0.05)
            a.proc.kill()  # no goodbye: the stream breaks
            a.proc.wait(patience(10))
            threading.Event().wait(patience(1))
            with maas_lib.open_fleet(setup.db, create=False) as fleet:
                fleet.cancel(1, actor="someone-else")

        killer = threading.Thread(target=kill_then_cancel)
        killer.start()
        watched = maasctl_in_process(["status", "1", "--watch", "--json"], env, tmp_path)
        killer.join()
        assert watched.code == 1 and watched.json()["state"] == "cancelled", watched
        assert "/progress" in b.logged()  # reopened on the other server


# -- the collection through the service -----------------------------------------------------


def ansible_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Ansible with the collection from this checkout, state in `tmp_path`, no MAAS_* or
    ANSIBLE_* of the caller's, then `extra`."""
    from tests.integration.test_collection import COLLECTION

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "ANSIBLE_"))}
    return env | {
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTION.parents[2]),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        **extra,
    }


def ansible(tmp_path: Path, env: dict[str, str], command: str, *args: str):
    """An Ansible command of this environment's, at -vvv (where a token would show)."""
    from tests.integration.test_collection import BIN

    return subprocess.run(
        [BIN / command, *args, "-vvv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=patience(300),
    )


def test_a_playbook_submits_and_reads_through_the_service(setup, service, tmp_path):
    pytest.importorskip("ansible")
    from tests.integration.test_collection import tail

    token = setup.tokens["ops"]
    env = ansible_env(
        tmp_path,
        MAAS_API_TOKEN="maas_not-this-one",  # the task's api_token wins
        MAAS_DB=str(tmp_path / "no-such.db"),  # never opened: the task names the service
    )
    (tmp_path / "hosts.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    (tmp_path / "vars.json").write_text(
        json.dumps({"url": service.url, "token": token, "ca": str(service.certs["ca"])})
    )
    (tmp_path / "play.yml").write_text(
        """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/maas_lib.fleet.maas:
      api_url: "{{ url }}"
      api_token: "{{ token }}"
      api_ca: "{{ ca }}"
  tasks:
    - name: Dry run
      maas_lib.fleet.submit: {action: reboot, hosts: ["web0[1-4]"], batch_size: 2}
      check_mode: true
      register: plan
    - name: Submit through the service
      maas_lib.fleet.submit: {action: reboot, hosts: ["web0[1-4]"], batch_size: 2}
      register: sent
    - name: Read it back
      maas_lib.fleet.request_info: {id: "{{ sent.id }}"}
      register: info
    - name: List
      maas_lib.fleet.request_info: {state: [accepted]}
      register: listed
    - name: Cancel it
      maas_lib.fleet.cancel: {id: "{{ sent.id }}"}
      register: cancelled
    - name: A pool the token's team does not own
      maas_lib.fleet.submit: {action: reboot, hosts: [db01]}
      register: refused
      ignore_errors: true
    - name: A submitter of the task's choosing
      maas_lib.fleet.submit: {action: reboot, hosts: [web05], submitted_by: someone}
      register: named
      ignore_errors: true
    - name: A canceller of the task's choosing
      maas_lib.fleet.cancel: {id: "{{ sent.id }}", cancelled_by: someone}
      register: named_cancel
      ignore_errors: true
    - ansible.builtin.assert:
        that:
          - plan.plan.batches | length == 2
          - sent.changed and sent.id == 1 and sent.hosts == 4
          - info.state == 'accepted' and info.request.submitted_by == 'token:ops'
          - info.request.hosts | length == 4
          - listed.requests | map(attribute='id') | list == [1]
          - cancelled.changed and cancelled.state == 'cancelled'
          - refused.failed and 'db' in refused.msg
          - named.failed and named.msg.startswith('submitted_by is not available with api_url')
          - named_cancel.msg.startswith('cancelled_by is not available with api_url')
"""
    )
    proc = ansible(
        tmp_path, env, "ansible-playbook", "-i", "hosts.ini", "play.yml", "-e", "@vars.json"
    )
    assert proc.returncode == 0, tail(proc)
    assert token not in proc.stdout + proc.stderr
    with maas_lib.open_fleet(setup.db, create=False) as fleet:
        assert [(r.id, r.submitted_by) for r in fleet.requests()] == [(1, "token:ops")]


def test_a_playbook_waits_for_its_request_through_the_service(setup, service, scheduler, tmp_path):
    """The AWX way: the credential's variables only (no api_* in the play, no database),
    and submit's wait follows the request, run by a real worker, to its results."""
    pytest.importorskip("ansible")
    from tests.integration.test_collection import tail

    scheduler()
    token = setup.tokens["ops"]
    env = ansible_env(
        tmp_path,
        MAAS_API_URL=service.url,
        MAAS_API_TOKEN=token,
        MAAS_API_CA=str(service.certs["ca"]),
    )
    (tmp_path / "play.yml").write_text(
        """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Power-cycle two web hosts and wait
      maas_lib.fleet.submit:
        action: power-cycle
        hosts: [web07, web08]
        wait: true
        wait_timeout: 120
      register: done
    - ansible.builtin.assert:
        that:
          - done.state == 'succeeded'
          - done.results | map(attribute='state') | list == ['succeeded', 'succeeded']
          - done.request.batches | length >= 1
"""
    )
    proc = ansible(tmp_path, env, "ansible-playbook", "-i", "localhost,", "play.yml")
    assert proc.returncode == 0, tail(proc)
    assert token not in proc.stdout + proc.stderr


def test_the_inventory_plugin_reads_the_hosts_through_the_service(setup, service, tmp_path):
    pytest.importorskip("ansible")
    from tests.integration.test_collection import tail, unsafe

    token = setup.tokens["viewer"]
    env = ansible_env(
        tmp_path,
        MAAS_API_URL=service.url,
        MAAS_API_TOKEN=token,
        MAAS_API_CA=str(service.certs["ca"]),
    )
    (tmp_path / "fleet.maas.yml").write_text("plugin: maas_lib.fleet.hosts\npools: [web, db]\n")
    proc = ansible(
        tmp_path, env, "ansible-inventory", "-i", "fleet.maas.yml", "--list", "--output=out.json"
    )
    assert proc.returncode == 0, tail(proc)
    listed = json.loads((tmp_path / "out.json").read_text())
    assert sorted(listed["pool_web"]["hosts"]) == [f"web0{i}" for i in range(1, 9)]
    assert sorted(listed["pool_db"]["hosts"]) == ["db01", "db02"]
    assert unsafe(listed["_meta"]["hostvars"]["db01"]["bmc_address"]) == "10.20.2.1"
    assert token not in proc.stdout + proc.stderr
    # A bad token: a one-line parser error naming the service, never the token.
    bad = {"MAAS_API_TOKEN": token[:-1] + "Z", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}
    proc = ansible(tmp_path, env | bad, "ansible-inventory", "-i", "fleet.maas.yml", "--list")
    assert proc.returncode != 0 and "maas-lib service" in proc.stderr, tail(proc)
    assert token[:-1] not in proc.stdout + proc.stderr
