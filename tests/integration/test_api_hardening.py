"""The HTTPS API attacked as a hostile caller and as a member of another team would: each
test is a finding of the security review (docs/service.md, "Hardening"), against real
stores (SQLite, PostgreSQL) and a real uvicorn over TLS on loopback."""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maas_lib.access import policy
from maas_lib.access.guard import GuardedFleet
from maas_lib.access.models import Role
from maas_lib.access.principal import Principal
from maas_lib.errors import AccessDenied
from tests.apiserver import SeededFleet, Service, running_service, service_process
from tests.apiserver import error_detail as _error
from tests.conftest import patience

#: web01 moved from pool web into pool db (an admin's `maasctl hosts import`).
MOVED = """
all:
  vars:
    bmc_credential: lab
  children:
    db:
      hosts:
        web01: {rack: r1, bmc_address: 10.20.1.1}
"""
OPS = Principal("token:ops", Role.OPERATOR, ("web-team",))


@pytest.fixture
def setup(store_url: str, inventory: Path) -> SeededFleet:
    return SeededFleet(store_url, inventory)


@pytest.fixture
def service(setup: SeededFleet, tmp_path: Path) -> Iterator[Service]:
    with running_service(setup.url, tmp_path, rate_limit=10_000) as svc:
        yield svc


# -- authorization --------------------------------------------------------------------------


#: What an admin commits right after an operator's submission was decided: (the change,
#: the submission's action, the pool its refusal names).
CHANGES_AFTER_THE_CHECK = {
    "host moved": (lambda admin, moved: admin.import_hosts([str(moved)]), "reboot", "db"),
    "grant revoked": (lambda admin, moved: admin.revoke_pool("web-team", "web"), "reboot", "web"),
    "destructive grant taken back": (
        lambda admin, moved: admin.grant_pool("web-team", "web", destructive=False),
        "decommission",
        "web",
    ),
}


@pytest.mark.parametrize("change", CHANGES_AFTER_THE_CHECK)
def test_a_change_of_pools_or_grants_after_the_check_is_refused(
    setup: SeededFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
):
    """TOCTOU: the operator's submission is decided (web01 in web, which its team owns,
    destructively for decommission), then an admin moves web01 into pool db, revokes the
    grant, or takes its destructive part back, before the request is written. The
    submission must be decided again and refused (403 naming the pool), nothing queued,
    the refusal audited."""
    moved = tmp_path / "moved.yml"
    moved.write_text(MOVED)
    write, action, pool = CHANGES_AFTER_THE_CHECK[change]
    with setup.fleet() as admin:
        admin.grant_pool("web-team", "web", destructive=True)
    decisions: list[policy.Decision] = []
    real = policy.may_submit

    def then_changed(*args: Any, **kwargs: Any) -> policy.Decision:
        decisions.append(real(*args, **kwargs))
        if len(decisions) == 1:
            with setup.fleet() as admin:  # another connection, as another process
                write(admin, moved)
        return decisions[-1]

    monkeypatch.setattr(policy, "may_submit", then_changed)
    with setup.fleet() as fleet:
        with pytest.raises(AccessDenied) as refused:
            GuardedFleet(fleet, OPS).submit(action, ["web01"])
        assert [d.allowed for d in decisions] == [True, False]
        assert refused.value.pools == (pool,)
        assert fleet.requests() == []
        record = fleet.audit(decision="refused")[0]
        assert (record.principal, record.verb, record.detail["pools"]) == (
            "token:ops",
            "submit",
            [pool],
        )


# -- hostile input --------------------------------------------------------------------------

OK_BODY = '{"action": "reboot", "patterns": ["web01"]%s}'
#: (raw body, what the 422's detail names). Python's own parser takes the first five.
HOSTILE_BODIES = [
    (OK_BODY % ', "pause": NaN', "NaN is not a JSON number"),
    (OK_BODY % ', "pause": -Infinity', "-Infinity is not a JSON number"),
    (OK_BODY % ', "pause": 1e400', "number 1e400 is out of range"),
    (OK_BODY % (', "canary": ' + "9" * 5000), "more than 20 digits"),
    ('{"action": "reboot", "action": "wipe", "patterns": ["web01"]}', "'action' appears twice"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b'{"action": "reboot", "patterns": ["web\xff01"]}', "not UTF-8 (byte 0xff"),
    ('{"action": "reboot", "patterns": ["web01\\u0000"]}', "U+0000"),
    ('{"action": "reboot", "patterns": ["web0*\\u0000"]}', "U+0000"),
    ('{"action": "reboot", "patterns": ["\\ud800"]}', "U+D800"),
    ('{"action": "reboot", "patterns": ["web01\\u202e"]}', "U+202E"),
    ('{"action": "reboot", "patterns": ["web01\\u001b[2J"]}', "U+001B"),
    ('{"action": "reboot", "patterns": ["\\uff57eb01"]}', "printable ASCII"),  # fullwidth w
    ('{"action": "reboot", "patterns": ["' + "w" * 300 + '"]}', "printable ASCII"),
    ("{not json", "not JSON: Expecting property name"),
]


def test_hostile_bodies_are_refused_naming_the_problem(setup: SeededFleet, service: Service):
    """Every body Python's json would take but should not (NaN, Infinity, duplicate
    keys), or that broke the server (a NUL on PostgreSQL, a lone surrogate: 500s), or that
    was refused without saying why ("There was an error parsing the body"): a 422 naming
    the problem, nothing written."""
    ops = service.client(setup.tokens["ops"])
    for body, named in HOSTILE_BODIES:
        for path in ("/api/v1/requests", "/api/v1/plan"):
            response = ops.post(path, content=body, headers={"Content-Type": "application/json"})
            assert named in _error(response, 422, "invalid"), (body[:60], response.text)
    with setup.fleet() as fleet:
        assert fleet.requests() == []


def test_ids_and_limits_out_of_range_are_invalid_not_internal(setup: SeededFleet, service: Service):
    """A request id or limit past the store's 64-bit integers was a 500 (OverflowError on
    SQLite, NumericValueOutOfRange on PostgreSQL)."""
    ops = service.client(setup.tokens["ops"])
    huge = 2**70
    for response in (
        ops.get(f"/api/v1/requests/{huge}"),
        ops.get(f"/api/v1/requests/{2**63}/progress"),
        ops.post(f"/api/v1/requests/{huge}/cancel"),
        ops.get("/api/v1/requests", params={"limit": 10**20}),
        ops.get("/api/v1/requests/0"),
    ):
        assert "request_id" in _error(response, 422, "invalid") or "limit" in response.text
    assert ops.get(f"/api/v1/requests/{2**63 - 1}").status_code == 404


def test_control_characters_in_paths_and_queries_are_refused(setup: SeededFleet, service: Service):
    """A NUL in a query parameter was a 500 on PostgreSQL; an ESC in a path went back in the
    404's detail; a newline reached the server's log as a line of its own."""
    viewer = service.client(setup.tokens["viewer"])
    admin = service.client(setup.tokens["admin"])
    for response, named in (
        (viewer.get("/api/v1/hosts", params={"pool": "web\x00"}), "query parameter pool"),
        (viewer.get("/api/v1/stats", params={"pool": "a\x00"}), "query parameter pool"),
        (admin.get("/api/v1/audit", params={"principal": "a\x00"}), "query parameter principal"),
        (viewer.get("/api/v1/requests", params={"state": "a\x1b[2J"}), "query parameter state"),
        (viewer.get("/api/v1/requests/1%0Amaasctl: INFO: forged"), "the path"),
        (viewer.get("/api/v1/nothing%1b[2J"), "the path"),
    ):
        assert named in _error(response, 400, "bad_request")


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(
    setup: SeededFleet, service: Service
):
    """Starlette redirected /api/v1/requests/ to a URL built from the Host header (307 to
    https://evil.example/...): an open redirect any link could use."""
    viewer = service.client(setup.tokens["viewer"])
    response = viewer.get("/api/v1/requests/", headers={"Host": "evil.example"})
    _error(response, 404, "not_found")
    assert "location" not in response.headers


def test_a_request_h11_refuses_is_answered_in_the_one_shape(setup: SeededFleet, service: Service):
    """A request h11 cannot parse (here a header line without a colon; also headers past
    its 16 KiB) was answered text/plain "Invalid HTTP request received."."""
    host, port = service.url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=patience(10)) as raw,
        service.context().wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in head.lower(), answer
    assert json.loads(body) == {
        "error": "bad_request",
        "detail": "invalid HTTP request (a malformed request line or header, or headers "
        "larger than 16 KiB)",
    }


# -- transport ------------------------------------------------------------------------------


def _handshake(service: Service, *, ciphers: str | None = None, tls: str = "TLSv1_2") -> str:
    """The cipher a TLS handshake with the server agreed on, offering only `ciphers`."""
    ctx = service.context()
    ctx.maximum_version = ssl.TLSVersion[tls]
    if ciphers:
        ctx.set_ciphers(ciphers)
    host, port = service.url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=patience(10)) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as conn,
    ):
        return str(conn.cipher()[0])


def test_tls12_takes_only_forward_secret_aead_ciphers(setup: SeededFleet, service: Service):
    """TLS 1.2 also agreed to CBC suites (ECDHE-ECDSA-AES128-SHA256, ...-AES256-SHA384)."""
    assert _handshake(service, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256").endswith("GCM-SHA256")
    assert "CHACHA20" in _handshake(service, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
    assert _handshake(service, tls="TLSv1_3").startswith("TLS_")
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        with pytest.raises(ssl.SSLError):
            _handshake(service, ciphers=cbc)


def test_a_body_is_read_only_after_its_caller_is_known(setup: SeededFleet, service: Service):
    """FastAPI reads and checks a body before any dependency: an anonymous caller got 422s
    about its bodies (never a 401, never audited, never slowed down by the failed sign-in
    budget)."""
    bad = b"{not json"
    json_type = {"Content-Type": "application/json"}
    for client in (service.client(), service.client("maas_" + "x" * 43)):
        for path in ("/api/v1/requests", "/api/v1/plan"):
            _error(client.post(path, content=bad, headers=json_type), 401, "unauthenticated")
    with setup.fleet() as fleet:
        assert [r.reason for r in fleet.audit(decision="refused")][:1] == ["unknown token"]
    ops = service.client(setup.tokens["ops"])  # a known caller still hears about its body
    assert "not JSON" in _error(
        ops.post("/api/v1/plan", content=bad, headers=json_type), 422, "invalid"
    )


# -- information and third parties ---------------------------------------------------------


def test_no_page_of_the_service_loads_a_script_from_another_origin(
    setup: SeededFleet, service: Service
):
    """/docs was FastAPI's Swagger UI: a script from cdn.jsdelivr.net (no integrity hash)
    running on the origin where the web page keeps its token in sessionStorage."""
    anon = service.client()
    _error(anon.get("/docs"), 404, "not_found")
    for path in ("/", "/openapi.json"):
        page = anon.get(path)
        assert page.status_code == 200
        assert "cdn." not in page.text and '<script src="http' not in page.text


def test_a_secret_sent_as_an_idempotency_key_is_not_stored(tmp_path: Path, inventory: Path):
    """The store kept an `Idempotency-Key` as sent: a client using its token as its key
    (or any secret) left that secret in the database in plain text."""
    setup = SeededFleet(str(tmp_path / "keys.db"), inventory)
    secret = setup.tokens["ops"]
    with running_service(setup.url, tmp_path) as svc:
        ops = svc.client(secret)
        body = {"action": "reboot", "patterns": ["web01"]}
        first = ops.post("/api/v1/requests", json=body, headers={"Idempotency-Key": secret})
        again = ops.post("/api/v1/requests", json=body, headers={"Idempotency-Key": secret})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = {**body, "patterns": ["web02"]}
        _error(
            ops.post("/api/v1/requests", json=other, headers={"Idempotency-Key": secret}),
            409,
            "conflict",
        )
    with sqlite3.connect(setup.url) as db:
        dump = "\n".join(db.iterdump())
    assert "idempotency_keys" in dump and secret not in dump
    assert secret[len("maas_") :][:16] not in dump


@pytest.mark.parametrize("amount", ["\u0663", "\u0661\u0660%", "\uff15", "5\u00a0%"])
def test_batch_amounts_are_ascii_digits(setup: SeededFleet, service: Service, amount: str):
    """Python's int() and \\d take any script's digits: "٣" (Arabic-Indic three) was a
    batch size of 3, fullwidth "10%" ten percent."""
    ops = service.client(setup.tokens["ops"])
    for field in ("batch_size", "max_failures", "max_unavailable"):
        body = {"action": "reboot", "patterns": ["web01", "web02"], field: amount}
        detail = _error(ops.post("/api/v1/plan", json=body), 400, "bad_request")
        assert field.replace("_", "-") in detail


def test_progress_streams_per_principal_are_bounded(tmp_path: Path, inventory: Path):
    """A viewer could open any number of progress streams, each reading the store every
    poll: one caller could hold the store pool (and the threadpool) with them."""
    setup = SeededFleet(str(tmp_path / "streams.db"), inventory)
    with running_service(setup.url, tmp_path, max_streams=2, progress_poll_s=0.05) as svc:
        rid = (
            svc.client(setup.tokens["ops"])
            .post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]})
            .json()["id"]
        )  # no scheduler runs: its stream stays open
        path = f"/api/v1/requests/{rid}/progress"
        viewer, other = svc.client(setup.tokens["viewer"]), svc.client(setup.tokens["admin"])
        with viewer.stream("GET", path) as one, viewer.stream("GET", path) as two:
            assert one.status_code == two.status_code == 200
            with viewer.stream("GET", path) as third:  # (uncapped, it streams on for ever)
                assert third.status_code == 429
                third.read()
            assert "2 progress streams open" in _error(third, 429, "rate_limited")
            assert int(third.headers["retry-after"]) >= 1
            with other.stream("GET", path) as theirs:  # another principal's own slots
                assert theirs.status_code == 200
        deadline = time.monotonic() + patience(20)  # the server sees them gone at a poll
        while True:
            with viewer.stream("GET", path) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream kept its slot"
            time.sleep(0.05)


def test_a_submission_holds_a_bounded_number_of_globs(setup: SeededFleet, service: Service):
    """Each distinct glob is matched on its own: 8 MiB of them held a worker thread and a
    store connection for minutes, per call. Names stay unbounded (one lookup)."""
    ops = service.client(setup.tokens["ops"])
    globs = ["web0*"] + [f"web0*{i}" for i in range(1, 1001)]  # 1001 distinct
    body = {"action": "reboot", "patterns": globs}
    assert "at most 1000 distinct globs" in _error(
        ops.post("/api/v1/plan", json=body), 422, "invalid"
    )
    ok = {"action": "reboot", "patterns": globs[:1000] + ["web01"] * 5000}
    assert ops.post("/api/v1/plan", json=ok).status_code == 404  # 'web0*1000' matches none


def test_headers_past_16_kib_are_refused_however_they_arrive(setup: SeededFleet, service: Service):
    """h11 refuses headers past 16 KiB only while they are incomplete: sent at once over
    loopback, 100 KiB of them reached the app."""
    viewer = service.client(setup.tokens["viewer"])
    for _ in range(3):
        response = viewer.get("/api/v1/whoami", headers={"X-Big": "a" * 100_000})
        assert "16 KiB" in _error(response, 400, "bad_request")
    assert viewer.get("/api/v1/whoami", headers={"X-Ok": "a" * 8_000}).status_code == 200


def test_no_caller_can_write_a_line_of_its_own_into_the_servers_log(
    tmp_path: Path, inventory: Path
):
    """`maasctl -vv serve` logged each call's decoded path: /requests/1%0Amaasctl: INFO: ...
    wrote a line of the caller's choosing."""
    setup = SeededFleet(str(tmp_path / "log.db"), inventory)
    with service_process(setup.url, tmp_path, verbose="-vv") as svc:
        viewer = svc.client(setup.tokens["viewer"])
        forged = "maasctl: INFO: FORGED"
        for path in (
            f"/api/v1/requests/1%0A{forged}",
            f"/api/v1/requests/1%0D%0A{forged}",
            f"/api/v1/nothing%0A{forged}",
            f"/api/v1/requests?state=x%0A{forged}",
            f"/api/v1/requests/1%E2%80%A8{forged}",  # U+2028, a line separator
        ):
            assert viewer.get(path).status_code in (400, 404, 422)  # 400 since the fix
        assert viewer.get("/api/v1/whoami").status_code == 200  # logged at -vv
    logged = svc.logged()
    assert "GET /api/v1/whoami" in logged
    assert not [
        ln
        for ln in logged.splitlines()
        if "FORGED" in ln and not ln.startswith("maasctl: INFO: 127.0.0.1")
    ]
    assert "\u2028" not in logged and "\r" not in logged


def test_every_answer_is_kept_by_no_cache_and_sniffed_by_no_browser(
    setup: SeededFleet, service: Service
):
    """API answers (the fleet's data, one caller's) had no Cache-Control or nosniff."""
    viewer = service.client(setup.tokens["viewer"])
    rid = (
        service.client(setup.tokens["ops"])
        .post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]})
        .json()["id"]
    )
    with viewer.stream("GET", f"/api/v1/requests/{rid}/progress") as stream:
        answers = [stream]
        answers += [
            viewer.get("/api/v1/whoami"),
            viewer.get("/api/v1/hosts"),
            viewer.get("/api/v1/nothing"),
            service.client().get("/api/v1/whoami"),
            viewer.get("/api/v1/requests/1%00"),
            viewer.get("/openapi.json"),
            viewer.get("/"),
        ]
        for answer in answers:
            stored = "no-cache" if answer is stream else "no-store"  # SSE's own, standard
            assert answer.headers.get("cache-control") == stored, answer.url
            assert answer.headers.get("x-content-type-options") == "nosniff", answer.url


@pytest.mark.parametrize(
    "since", ["9999999999d", "99999999999999999999w", "0001-01-01T00:00:00+01:00", "\u0663d"]
)
def test_a_since_out_of_range_is_bad_input(setup: SeededFleet, service: Service, since: str):
    """`stats?since=9999999999d` was a 500 (OverflowError); "٣d" (Arabic-Indic three)
    was three days."""
    viewer = service.client(setup.tokens["viewer"])
    detail = _error(viewer.get("/api/v1/stats", params={"since": since}), 400, "bad_request")
    assert detail.startswith("--since: ")


@pytest.mark.parametrize(
    "image",
    ["a/../../../etc/shadow", "ubuntu/./22.04", "http://evil.example/x", "/abs", "x" * 256],
)
def test_an_image_name_cannot_leave_the_image_servers_path(
    setup: SeededFleet, service: Service, image: str
):
    """An image name goes into `--image-url`'s path (https://images/{image}.iso): one with
    `..` parts made the BMC boot any file of the image server; nor was it bounded."""
    ops = service.client(setup.tokens["admin"])
    body = {"action": "reimage", "patterns": ["web01"], "image": image}
    assert "--image: not a valid image name" in _error(
        ops.post("/api/v1/requests", json=body), 400, "bad_request"
    )
    good = {**body, "image": "ubuntu/22.04:lts+hwe"}
    assert ops.post("/api/v1/plan", json=good).status_code == 200
    with setup.fleet() as fleet:
        assert fleet.requests() == []


def test_a_database_gone_since_start_up_is_unavailable_not_bad_input(
    tmp_path: Path, inventory: Path
):
    """A SQLite file moved away under the server: a call that opened a connection was
    answered 400 bad_request "no database at /path/to/file (`maasctl db init` ...)", the
    server's path and advice meant for its operator."""
    setup = SeededFleet(str(tmp_path / "gone.db"), inventory)
    moved = tmp_path / "elsewhere.db"
    with running_service(setup.url, tmp_path) as svc:
        viewer = svc.client(setup.tokens["viewer"])
        Path(setup.url).rename(moved)
        try:
            response = viewer.get("/api/v1/hosts")
            assert _error(response, 503, "unavailable") == "the store is unavailable; try again"
            assert response.headers["retry-after"] == "1" and str(tmp_path) not in response.text
        finally:
            moved.rename(setup.url)
        assert viewer.get("/api/v1/hosts").status_code == 200
