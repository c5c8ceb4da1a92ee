"""The HTTPS API (`maasctl serve`, maas_lib.service) against real servers: uvicorn over TLS
on loopback with a CA made for the test, httpx clients verifying it, real SQLite and
PostgreSQL stores, a real scheduler over the in-process simulated fleet."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maas_lib.access.tokens import create_token
from maas_lib.serialize import to_jsonable
from maas_lib.service.settings import MAX_BODY_BYTES
from maas_lib.sim.inproc import InProcessFleet, zero_latency
from tests.apiserver import SeededFleet, Service, running_service, service_process
from tests.conftest import maasctl_in_process, patience

BMC_PASSWORD = "bmc-pa55word-never-shown"
#: How a client sees a TLS handshake the server refused.
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


@pytest.fixture
def setup(store_url: str, inventory: Path) -> SeededFleet:
    return SeededFleet(store_url, inventory)


@pytest.fixture
def sqlite_setup(tmp_path: Path, inventory: Path) -> SeededFleet:
    return SeededFleet(str(tmp_path / "api.db"), inventory)


@pytest.fixture
def service(setup: SeededFleet, tmp_path: Path) -> Iterator[Service]:
    with running_service(setup.url, tmp_path, progress_poll_s=0.05) as svc:
        yield svc


def _error(response: httpx.Response, status: int, kind: str) -> str:
    """The one error shape: exactly {error, detail}, one line, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    assert "\n" not in body["detail"] and "Traceback" not in response.text
    return str(body["detail"])


# -- the endpoints answer what the fleet answers --------------------------------------------


def test_endpoints_return_the_fleets_documents(setup: SeededFleet, service: Service, tmp_path):
    ops, viewer = service.client(setup.tokens["ops"]), service.client(setup.tokens["viewer"])
    body = {"action": "power-cycle", "patterns": ["web0*"], "batch_size": "25%", "canary": 1}

    planned = ops.post("/api/v1/plan", json=body)
    with setup.fleet() as fleet:
        assert planned.status_code == 200
        assert planned.json() == to_jsonable(
            fleet.plan("power-cycle", ["web0*"], batch_size="25%", canary=1)
        )

    accepted = ops.post("/api/v1/requests", json=body)
    assert accepted.status_code == 202, accepted.text
    rid = accepted.json()["id"]
    assert accepted.json() == {"id": rid, "state": "accepted", "hosts": 8}
    assert accepted.headers["location"] == f"/api/v1/requests/{rid}"

    with setup.fleet() as fleet:
        st = fleet.status(rid)
        assert st.submitted_by == "token:ops"  # the principal, never a name in the body
        expected = {
            "/api/v1/requests": to_jsonable(fleet.requests()),
            "/api/v1/requests?state=accepted&state=running&limit=5": to_jsonable(
                fleet.requests(["accepted", "running"], 5)
            ),
            f"/api/v1/requests/{rid}": fleet.request_info(rid),
            f"/api/v1/requests/{rid}?steps=true": fleet.request_info(rid, steps=True),
            "/api/v1/inflight": to_jsonable(fleet.inflight()),
            "/api/v1/hosts": to_jsonable(fleet.hosts()),
            "/api/v1/hosts?pool=web": to_jsonable(fleet.hosts("web")),
            "/api/v1/stats": to_jsonable(fleet.stats()),
            "/api/v1/workers": to_jsonable(fleet.workers()),
        }
    for path, document in expected.items():
        got = viewer.get(path)
        assert got.status_code == 200, (path, got.text)
        assert got.json() == document, path

    # The CLI's --json prints the same documents.
    env = {"MAAS_DB": setup.url, "HOME": str(tmp_path)}
    listed = maasctl_in_process(["list", "--json"], env, tmp_path)
    assert json.loads(listed.out) == viewer.get("/api/v1/requests").json()

    assert viewer.get("/api/v1/whoami").json() == {
        "name": "token:viewer",
        "role": "viewer",
        "teams": [],
        "via": "token",
        "cert": None,
    }
    cancelled = ops.post(f"/api/v1/requests/{rid}/cancel")
    assert cancelled.json() == {"id": rid, "state": "cancelled", "cancel_requested": True}
    audit = service.client(setup.tokens["admin"]).get("/api/v1/audit").json()
    assert {(a["principal"], a["verb"], a["decision"]) for a in audit} >= {
        ("token:ops", "submit", "allowed"),
        ("token:ops", "cancel", "allowed"),
    }


def test_openapi_document_describes_the_api(service: Service):
    with service.client() as anon:
        doc = anon.get("/openapi.json").json()
        assert anon.get("/api/v1/health").json() == {"status": "ok"}
    paths = set(doc["paths"])
    assert {
        "/api/v1/requests",
        "/api/v1/requests/{request_id}",
        "/api/v1/requests/{request_id}/cancel",
        "/api/v1/requests/{request_id}/progress",
        "/api/v1/plan",
        "/api/v1/inflight",
        "/api/v1/hosts",
        "/api/v1/stats",
        "/api/v1/workers",
        "/api/v1/audit",
        "/api/v1/whoami",
        "/api/v1/health",
    } <= paths
    submit = doc["components"]["schemas"]["SubmitBody"]
    assert submit["additionalProperties"] is False
    assert not {"hosts_file", "pre_hook", "post_hook", "submitted_by"} & set(submit["properties"])
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error", "detail"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/v1/requests"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in doc["paths"]["/api/v1/health"]["get"]


# -- errors ---------------------------------------------------------------------------------


def test_every_error_has_one_shape(setup: SeededFleet, service: Service):
    ops, viewer = service.client(setup.tokens["ops"]), service.client(setup.tokens["viewer"])
    anon = service.client()
    ok = {"action": "reboot", "patterns": ["web01"]}

    assert "melt" in _error(
        ops.post("/api/v1/requests", json={**ok, "action": "melt"}), 400, "bad_request"
    )
    for response in (
        anon.get("/api/v1/requests"),
        service.client("maas_" + "x" * 43).get("/api/v1/requests"),  # unknown
        service.client("not-a-token").get("/api/v1/requests"),  # garbled
        anon.get("/api/v1/requests", headers={"Authorization": "Basic YTpi"}),
    ):
        _error(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
    _error(viewer.post("/api/v1/requests", json=ok), 403, "forbidden")
    assert "db" in _error(
        ops.post("/api/v1/requests", json={**ok, "patterns": ["db01"]}), 403, "forbidden"
    )
    assert "unknown state" in _error(
        viewer.get("/api/v1/requests?state=asleep"), 400, "bad_request"
    )
    _error(viewer.get("/api/v1/requests/999"), 404, "not_found")
    _error(viewer.get("/api/v1/nothing-here"), 404, "not_found")
    _error(anon.get("/nothing-here"), 404, "not_found")
    _error(viewer.delete("/api/v1/requests"), 405, "method_not_allowed")
    _error(viewer.get("/api/v1/requests/1/cancel"), 405, "method_not_allowed")
    for bad in (
        {**ok, "hosts_file": "/etc/hosts"},
        {**ok, "pre_hook": "/tmp/x.yml"},
        {**ok, "submitted_by": "someone-else"},
        {**ok, "canary": "1"},
        {"action": "reboot"},
    ):
        _error(ops.post("/api/v1/requests", json=bad), 422, "invalid")
    bad_json = ops.post(
        "/api/v1/requests", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _error(bad_json, 422, "invalid")
    _error(viewer.get("/api/v1/requests?limit=0"), 422, "invalid")
    _error(viewer.get("/api/v1/requests/abc"), 422, "invalid")
    with setup.fleet() as fleet:
        assert fleet.requests() == []  # nothing refused was written


def test_bodies_over_the_limit_are_refused_while_read(setup: SeededFleet, service: Service):
    ops = service.client(setup.tokens["ops"])
    big = (
        b'{"action": "reboot", "patterns": [' + b'"web01", ' * (MAX_BODY_BYTES // 9) + b'"web01"]}'
    )
    assert len(big) > MAX_BODY_BYTES
    stated = ops.post("/api/v1/requests", content=big, headers={"Content-Type": "application/json"})
    assert "larger than" in _error(stated, 413, "too_large")

    sent: list[int] = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for i in range(0, len(big), 1 << 16):
            sent.append(i)
            yield big[i : i + (1 << 16)]

    with service.client(setup.tokens["ops"]) as client:
        try:
            chunked = client.post(
                "/api/v1/requests", content=chunks(), headers={"Content-Type": "application/json"}
            )
        except httpx.WriteError:  # the server may close before the client stops sending
            chunked = None
    if chunked is not None:
        assert "content-length" not in chunked.request.headers
        _error(chunked, 413, "too_large")
    with setup.fleet() as fleet:
        assert fleet.requests() == []
    # A body under the limit is read whole.
    fine = b'{"action": "reboot", "patterns": [' + b'"web01", ' * 1000 + b'"web01"]}'
    assert (
        ops.post(
            "/api/v1/requests", content=fine, headers={"Content-Type": "application/json"}
        ).status_code
        == 202
    )


def test_rate_limit_answers_429_with_retry_after(sqlite_setup: SeededFleet, tmp_path: Path):
    with running_service(sqlite_setup.url, tmp_path, rate_limit=0.5) as svc:
        viewer, ops = (
            svc.client(sqlite_setup.tokens["viewer"]),
            svc.client(sqlite_setup.tokens["ops"]),
        )
        answers = [viewer.get("/api/v1/whoami") for _ in range(3)]  # burst 2 x 0.5/s = 1
        assert answers[0].status_code == 200
        limited = next(r for r in answers if r.status_code == 429)
        _error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        # Per principal: another caller is not held back by this one.
        assert ops.get("/api/v1/whoami").status_code == 200
        # Failed authentications are limited per client address.
        anon = [svc.client("maas_" + "y" * 43).get("/api/v1/whoami") for _ in range(3)]
        assert [r.status_code for r in anon] == [401, 429, 429]
        _error(anon[-1], 429, "rate_limited")
    with sqlite_setup.fleet() as fleet:  # once over budget, nothing is checked or written
        refusals = fleet.audit(decision="refused", limit=10)
        assert [r.verb for r in refusals] == ["authenticate"]


# -- idempotency ----------------------------------------------------------------------------


def test_a_retried_submission_is_one_request(setup: SeededFleet, service: Service):
    ops = service.client(setup.tokens["ops"])
    body = {"action": "reboot", "patterns": ["web01", "web02"]}
    key = {"Idempotency-Key": "retry-7f3a"}
    first = ops.post("/api/v1/requests", json=body, headers=key)
    again = ops.post("/api/v1/requests", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]
    with setup.fleet() as fleet:
        assert [r.id for r in fleet.requests()] == [first.json()["id"]]
    other = ops.post("/api/v1/requests", json={**body, "patterns": ["web03"]}, headers=key)
    _error(other, 409, "conflict")
    too_long = ops.post("/api/v1/requests", json=body, headers={"Idempotency-Key": "k" * 201})
    assert "Idempotency-Key" in _error(too_long, 400, "bad_request")
    with setup.fleet() as fleet:
        assert len(fleet.requests()) == 1


# -- progress as server-sent events ---------------------------------------------------------


def _events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) per event of a text/event-stream; ("comment", text) per comment."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, "\n".join(data)
            event, data = "message", []


@pytest.fixture
def scheduler(setup: SeededFleet, monkeypatch) -> Iterator[Callable[[], None]]:
    """Starts a real scheduler worker over the in-process simulated machines."""
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", BMC_PASSWORD)
    sim = InProcessFleet(config=zero_latency(), latency=0.02)
    with setup.fleet() as fleet:
        for host in fleet.hosts():
            sim.add_host(host, power="on")
    fleet = setup.fleet()
    worker = fleet.worker(
        driver_factory=sim.driver_factory,
        poll=0.05,
        poll_interval=0.02,
        timeout=patience(2),
        retries=0,
        claim_ttl=30,
        alerts=[],
    )
    thread = threading.Thread(target=lambda: worker.run(until_idle=False), daemon=True)
    yield thread.start
    worker.stop()
    thread.join(patience(30))
    fleet.close()


def test_progress_streams_a_request_to_its_end(setup: SeededFleet, service: Service, scheduler):
    ops = service.client(setup.tokens["ops"])
    rid = ops.post(
        "/api/v1/requests", json={"action": "power-cycle", "patterns": ["web0*"], "batch_size": "2"}
    ).json()["id"]
    viewer = service.client(setup.tokens["viewer"])
    seen: list[tuple[str, Any]] = []
    with viewer.stream("GET", f"/api/v1/requests/{rid}/progress") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        scheduler()  # the request starts only once the stream is open
        for event, data in _events(stream):
            if event != "comment":
                seen.append((event, json.loads(data)))
            if event == "end":
                break
    progress = [doc for event, doc in seen if event == "progress"]
    assert seen[-1] == ("end", {"id": rid, "state": "succeeded"})
    assert progress[0]["state"] == "accepted" and progress[-1]["state"] == "succeeded"
    assert any(doc["state"] == "running" for doc in progress)
    assert all(a != b for a, b in itertools.pairwise(progress))  # only changes are sent
    assert progress[-1] == viewer.get(f"/api/v1/requests/{rid}").json()


def test_progress_keeps_alive_ends_on_cancel_and_refuses_unknown(
    sqlite_setup: SeededFleet, tmp_path: Path, caplog
):
    with running_service(sqlite_setup.url, tmp_path, progress_poll_s=0.05, keepalive_s=0.2) as svc:
        ops = svc.client(sqlite_setup.tokens["ops"])
        rid = ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]}).json()[
            "id"
        ]
        _error(ops.get("/api/v1/requests/999/progress"), 404, "not_found")
        _error(svc.client().get(f"/api/v1/requests/{rid}/progress"), 401, "unauthenticated")
        kinds = []
        with ops.stream("GET", f"/api/v1/requests/{rid}/progress") as stream:
            for event, data in _events(stream):
                kinds.append(event)
                if event == "comment" and "cancel" not in kinds:
                    kinds.append("cancel")  # nothing runs it: cancelled from outside
                    assert (
                        svc.client(sqlite_setup.tokens["ops"])
                        .post(f"/api/v1/requests/{rid}/cancel")
                        .status_code
                        == 200
                    )
                if event == "end":
                    assert json.loads(data) == {"id": rid, "state": "cancelled"}
        assert kinds[0] == "progress" and kinds[-2:] == ["progress", "end"]
        assert "comment" in kinds

        # A client that goes away ends its stream on the server.
        rid2 = ops.post(
            "/api/v1/requests", json={"action": "reboot", "patterns": ["web02"]}
        ).json()["id"]
        with caplog.at_level("DEBUG", logger="maas_lib.service"):
            with ops.stream("GET", f"/api/v1/requests/{rid2}/progress") as stream:
                next(_events(stream))
            deadline = time.monotonic() + patience(10)
            while time.monotonic() < deadline and "client gone" not in caplog.text:
                time.sleep(0.05)
        assert f"progress of request {rid2}: client gone" in caplog.text


def test_a_revoked_token_ends_its_progress_stream(sqlite_setup: SeededFleet, tmp_path: Path):
    with sqlite_setup.fleet() as fleet:
        secret = create_token(fleet.store, "watcher", "viewer", actor="test").secret
    with running_service(sqlite_setup.url, tmp_path, progress_poll_s=0.05) as svc:
        ops = svc.client(sqlite_setup.tokens["ops"])
        rid = ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]})
        seen = []
        with svc.client(secret).stream("GET", f"/api/v1/requests/{rid.json()['id']}/progress") as s:
            for event, data in _events(s):
                seen.append((event, json.loads(data)))
                if len(seen) == 1:
                    with sqlite_setup.fleet() as fleet:
                        fleet.store.revoke_token("watcher", actor="test")
    assert [e for e, _ in seen] == ["progress", "error"]
    assert seen[-1][1] == {"error": "unauthenticated", "detail": "token watcher was revoked"}


# -- maasctl serve: TLS, mTLS, signals, refusals --------------------------------------------


def test_plain_http_only_on_loopback_and_only_when_asked(sqlite_setup: SeededFleet, tmp_path: Path):
    env = {"MAAS_DB": sqlite_setup.url, "HOME": str(tmp_path)}
    for args, needle in [
        (["--listen", "0.0.0.0:8443", "--insecure-http"], "0.0.0.0 is not a loopback address"),
        (["--listen", "[::]:8443", "--insecure-http"], ":: is not a loopback address"),
        (["--listen", "example.com:8443", "--insecure-http"], "not a loopback address"),
        (["--listen", "127.0.0.1:8443"], "--tls-cert is required"),
        (["--listen", "127.0.0.1:65536"], "--listen: expected HOST:PORT"),
        (["--listen", "127.0.0.1:8443", "--tls-cert", str(tmp_path / "none.pem")], "cannot load"),
    ]:
        result = maasctl_in_process(["serve", *args], env, tmp_path)
        assert result.code == 2, (args, result)
        assert needle in result.err and len(result.err.strip().splitlines()) == 1, result
        assert "Traceback" not in result.err
    missing = {**env, "MAAS_DB": str(tmp_path / "missing.db")}
    result = maasctl_in_process(
        ["serve", "--listen", ":8443", "--insecure-http"], missing, tmp_path
    )
    assert result.code == 2 and "no database at" in result.err, result
    assert not (tmp_path / "missing.db").exists()
    # On loopback, with --insecure-http, plain HTTP is served.
    with service_process(sqlite_setup.url, tmp_path, "--insecure-http", tls=False) as svc:
        assert svc.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{svc.url}/api/v1/health").json() == {"status": "ok"}


def test_client_certificates_are_required_with_client_ca(sqlite_setup: SeededFleet, tmp_path: Path):
    from tests.apiserver import pki

    stranger = pki(tmp_path / "other-ca", clients=("mallory",))
    certs = pki(tmp_path / "pki")  # service_process writes the same directory: same CA kept
    with service_process(sqlite_setup.url, tmp_path, "--client-ca", str(certs["ca"])) as svc:
        token = sqlite_setup.tokens["viewer"]
        # Refused in the handshake: with TLS 1.3 the client learns it on its first read.
        with pytest.raises(REFUSED):  # no certificate
            svc.client(token).get("/api/v1/whoami")
        ctx = ssl.create_default_context(cafile=str(svc.certs["ca"]))
        ctx.load_cert_chain(stranger["client-mallory"], stranger["client-mallory-key"])
        with pytest.raises(REFUSED):  # a certificate of another CA
            httpx.get(
                f"{svc.url}/api/v1/whoami", verify=ctx, headers={"Authorization": f"Bearer {token}"}
            )
        with svc.client(token, client_cert="client-alice") as alice:
            assert alice.get("/api/v1/whoami").json()["name"] == "token:viewer"
            refused = alice.post(
                "/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]}
            )
            _error(refused, 403, "forbidden")
            _error(
                svc.client(client_cert="client-alice").get("/api/v1/whoami"), 401, "unauthenticated"
            )
    with sqlite_setup.fleet() as fleet:  # the certificate's name is in the audit records
        records = fleet.audit(decision="refused", limit=10)
    assert {(r.principal, r.verb, r.detail.get("client_cert")) for r in records} >= {
        ("token:viewer", "submit", "alice"),
        ("anonymous", "authenticate", "alice"),
    }


def test_jwts_from_the_configured_issuer(sqlite_setup: SeededFleet, tmp_path: Path):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    issuer, audience = "https://sso.example.com", "maas-api"

    def token(**claims: Any) -> str:
        base = {"iss": issuer, "aud": audience, "sub": "carol", "exp": int(time.time()) + 300}
        return jwt.encode({**base, **claims}, key, algorithm="ES256", headers={"kid": "k1"})

    args = ("--jwt-issuer", issuer, "--jwt-audience", audience, "--jwks", str(jwks))
    with service_process(sqlite_setup.url, tmp_path, *args) as svc:
        who = svc.client(token(maas_role="operator", groups=["web-team"])).get("/api/v1/whoami")
        assert who.json() == {
            "name": "jwt:carol",
            "role": "operator",
            "teams": ["web-team"],
            "via": "jwt",
            "cert": None,
        }
        accepted = svc.client(token(maas_role="operator", groups=["web-team"])).post(
            "/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]}
        )
        assert accepted.status_code == 202
        for bad in (token(aud="other"), token(iss="https://evil.example"), token(exp=1)):
            _error(svc.client(bad).get("/api/v1/whoami"), 401, "unauthenticated")
        # API tokens still work beside JWTs.
        assert svc.client(sqlite_setup.tokens["viewer"]).get("/api/v1/whoami").status_code == 200
    with sqlite_setup.fleet() as fleet:
        assert fleet.status(accepted.json()["id"]).submitted_by == "jwt:carol"
    env = {"MAAS_DB": sqlite_setup.url, "HOME": str(tmp_path)}
    half = maasctl_in_process(
        ["serve", "--listen", "127.0.0.1:8443", "--insecure-http", "--jwt-issuer", issuer],
        env,
        tmp_path,
    )
    assert half.code == 2 and "--jwks" in half.err


def test_two_servers_share_one_database(pg_url: str, inventory: Path, tmp_path: Path):
    """Active-active: a submission retried through the other server is one request."""
    setup = SeededFleet(pg_url, inventory)
    body = {"action": "reboot", "patterns": ["web01", "web02"]}
    key = {"Idempotency-Key": "both-servers"}
    with (
        service_process(setup.url, tmp_path / "a") as a,
        service_process(setup.url, tmp_path / "b") as b,
    ):
        first = a.client(setup.tokens["ops"]).post("/api/v1/requests", json=body, headers=key)
        again = b.client(setup.tokens["ops"]).post("/api/v1/requests", json=body, headers=key)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        rid = first.json()["id"]
        cancelled = b.client(setup.tokens["ops"]).post(f"/api/v1/requests/{rid}/cancel")
        assert cancelled.json()["state"] == "cancelled"
        assert a.client(setup.tokens["viewer"]).get(f"/api/v1/requests/{rid}").json()["state"] == (
            "cancelled"
        )
    with setup.fleet() as fleet:
        assert [r.id for r in fleet.requests()] == [rid]


def test_a_lost_database_connection_is_503_then_replaced(
    pg_server: str, pg_url: str, inventory: Path, tmp_path: Path
):
    """A terminated PostgreSQL backend: the call on it answers 503 with Retry-After (not
    500), and the next call works."""
    import uuid

    import psycopg

    from maas_lib.store.pg_url import parse_pg_url

    name = f"maas-api-{uuid.uuid4().hex[:8]}"
    setup = SeededFleet(f"{pg_url}&application_name={name}", inventory)
    with running_service(setup.url, tmp_path) as svc:
        viewer = svc.client(setup.tokens["viewer"])
        assert viewer.get("/api/v1/requests").status_code == 200
        with psycopg.connect(parse_pg_url(pg_server).conninfo, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert killed  # the server's pooled connection
        lost = viewer.get("/api/v1/requests")
        _error(lost, 503, "unavailable")
        assert int(lost.headers["retry-after"]) >= 1
        assert viewer.get("/api/v1/requests").json() == []


def _lock(url: str) -> Callable[[], None]:
    """Hold the store's write lock (SQLite) or the requests table (PostgreSQL) until the
    returned function is called: a submission waits for it, as behind a slow writer."""
    if url.startswith("postgresql://"):
        import psycopg

        from maas_lib.store.pg_url import parse_pg_url

        target = parse_pg_url(url)
        conn = psycopg.connect(target.conninfo)
        schema = url.rpartition("schema=")[2]
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("LOCK TABLE requests IN EXCLUSIVE MODE")
    else:
        conn = sqlite3.connect(url, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")

    def release() -> None:
        conn.rollback()
        conn.close()

    return release


def test_sigterm_lets_a_slow_call_finish_and_ends_streams(setup: SeededFleet, tmp_path: Path):
    with service_process(setup.url, tmp_path, verbose="-vv") as svc:
        ops = svc.client(setup.tokens["ops"])
        assert ops.get("/api/v1/whoami").status_code == 200  # the token's first use is written
        # A progress stream of a request nothing runs: open until the server stops.
        first = ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["web02"]})
        events: list[str] = []
        opened = threading.Event()

        def follow() -> None:
            with (
                svc.client(setup.tokens["viewer"]) as viewer,
                viewer.stream("GET", f"/api/v1/requests/{first.json()['id']}/progress") as stream,
            ):
                for event, _ in _events(stream):
                    events.append(event)
                    opened.set()

        stream = threading.Thread(target=follow)
        stream.start()
        assert opened.wait(patience(10))
        release = _lock(setup.url)
        answer: dict[str, Any] = {}
        call = threading.Thread(
            target=lambda: answer.update(
                r=ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]})
            )
        )
        call.start()
        try:
            _wait_for(svc, "POST /api/v1/requests by token:ops")  # authenticated, now waiting
            assert svc.proc is not None
            svc.proc.send_signal(signal.SIGTERM)
            _wait_for(svc, "Shutting down")
            with pytest.raises(httpx.ConnectError):  # no new connection is taken
                svc.client(setup.tokens["ops"]).get("/api/v1/whoami")
        finally:
            release()
        call.join(patience(30))
        assert answer["r"].status_code == 202, answer["r"].text
        stream.join(patience(30))
        assert not stream.is_alive() and events == ["progress"]  # ended, without `end`
        assert svc.proc.wait(patience(30)) == 0
    with setup.fleet() as fleet:
        assert [r.id for r in fleet.requests()] == [answer["r"].json()["id"], first.json()["id"]]


def _wait_for(svc: Service, text: str) -> None:
    deadline = time.monotonic() + patience(20)
    while text not in svc.logged():
        assert time.monotonic() < deadline, f"{text!r} not logged: {svc.logged()}"
        time.sleep(0.02)


# -- no secrets, no tracebacks --------------------------------------------------------------


def test_no_secret_or_traceback_in_responses_or_logs(sqlite_setup: SeededFleet, tmp_path: Path):
    """A session of calls (good, refused, failing) against `maasctl -vv serve`: no token,
    no BMC password in any answer or log line; an internal error answers no traceback."""
    env = {"MAAS_CRED_LAB_USERNAME": "admin", "MAAS_CRED_LAB_PASSWORD": BMC_PASSWORD}
    tokens = sqlite_setup.tokens
    bodies: list[str] = []
    with service_process(sqlite_setup.url, tmp_path, env=env, verbose="-vv") as svc:
        ops, admin = svc.client(tokens["ops"]), svc.client(tokens["admin"])
        rid = ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["web01"]}).json()[
            "id"
        ]
        for response in (
            ops.get(f"/api/v1/requests/{rid}?steps=true"),
            ops.get("/api/v1/hosts"),
            admin.get("/api/v1/audit"),
            ops.get("/api/v1/whoami"),
            svc.client(tokens["ops"][:-1] + "A").get("/api/v1/whoami"),  # near miss
            svc.client(tokens["viewer"]).post(f"/api/v1/requests/{rid}/cancel"),
            ops.post("/api/v1/requests", json={"action": "reboot", "patterns": ["db01"]}),
            ops.get("/api/v1/requests", params={"state": tokens["admin"]}),  # a secret as input
        ):
            bodies.append(response.text)
        # A real fault: the requests table vanishes under the server.
        with sqlite3.connect(sqlite_setup.url, isolation_level=None) as conn:
            conn.execute("ALTER TABLE requests RENAME TO requests_gone")
        failed = ops.get("/api/v1/requests")
        assert _error(failed, 500, "internal") == "internal error"
        bodies.append(failed.text)
    logged = svc.logged()
    assert "GET /api/v1/requests" in logged  # the log was written (-vv)
    assert "Traceback" not in "".join(bodies)
    for secret in (*tokens.values(), BMC_PASSWORD):
        assert secret not in logged
        assert not any(secret in body for body in bodies)
