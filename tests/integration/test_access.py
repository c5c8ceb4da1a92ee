"""Access control at the library level, on a real SQLite store (the PostgreSQL store's
tables are tested in test_store_access.py): who may do what through `GuardedFleet`, API
tokens, and JWTs signed by a key pair generated here.

The authorization matrix: each role x own/other pool x action -> allowed, or
`AccessDenied` with nothing written to the queue and a refusal in the audit log.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from maas_lib.access import policy
from maas_lib.access.authn import authenticate
from maas_lib.access.guard import GuardedFleet
from maas_lib.access.jwt_verify import JwtSettings, JwtVerifier
from maas_lib.access.models import PoolGrant, Role
from maas_lib.access.principal import Principal
from maas_lib.access.tokens import hash_secret, verify_token
from maas_lib.errors import AccessDenied, AuthenticationError, IdempotencyConflict, InputError

WEB = ["web01", "web02"]  # pool web: team-web owns it
DB = ["db01"]  # pool db: nobody of ours owns it

VIEWER = Principal("token:viewer", Role.VIEWER, ("team-web",))
OPERATOR = Principal("token:op", Role.OPERATOR, ("team-web",))
WIPER = Principal("token:wiper", Role.OPERATOR, ("team-wipe",))  # destructive on web
ADMIN = Principal("token:admin", Role.ADMIN)


@pytest.fixture
def owned(fleet):
    fleet.grant_pool("team-web", "web")
    fleet.grant_pool("team-wipe", "web", destructive=True)
    return fleet


def queue(fleet) -> list[int]:
    return [r.id for r in fleet.requests()]


def refusals(fleet) -> list[tuple[str, str]]:
    return [(r.principal, r.verb) for r in fleet.audit(decision="refused")]


def other_request(fleet, hosts) -> int:
    """A request someone else (an admin) submitted."""
    return (
        GuardedFleet(fleet, Principal("token:other-admin", Role.ADMIN)).submit("reboot", hosts).id
    )


#: (principal, hosts, action, verb, allowed)
MATRIX = [
    (VIEWER, WEB, "reboot", "submit", False),
    (VIEWER, WEB, "reboot", "plan", False),
    (VIEWER, WEB, "reboot", "cancel", False),
    (VIEWER, WEB, "reboot", "read", True),
    (VIEWER, DB, "reboot", "read", True),
    (OPERATOR, WEB, "reboot", "submit", True),
    (OPERATOR, WEB, "reboot", "plan", True),
    (OPERATOR, WEB, "reboot", "cancel", True),
    (OPERATOR, WEB, "reboot", "read", True),
    (OPERATOR, DB, "reboot", "submit", False),
    (OPERATOR, DB, "reboot", "plan", False),
    (OPERATOR, DB, "reboot", "cancel", False),
    (OPERATOR, DB, "reboot", "read", True),
    (OPERATOR, WEB + DB, "reboot", "submit", False),  # one foreign host refuses it all
    (OPERATOR, WEB + DB, "reboot", "cancel", True),  # touches a pool it owns
    (OPERATOR, WEB, "wipe", "submit", False),  # owner, but no destructive grant
    (OPERATOR, WEB, "decommission", "plan", False),
    (WIPER, WEB, "wipe", "submit", True),
    (WIPER, WEB, "decommission", "plan", True),
    (WIPER, DB, "wipe", "submit", False),
    (ADMIN, WEB, "reboot", "submit", True),
    (ADMIN, DB, "wipe", "submit", True),
    (ADMIN, DB, "reboot", "cancel", True),
    (ADMIN, DB, "reboot", "read", True),
]


@pytest.mark.parametrize(
    ("who", "hosts", "action", "verb", "allowed"),
    MATRIX,
    ids=[f"{w.name}-{'+'.join(h)}-{a}-{v}-{'ok' if ok else 'no'}" for w, h, a, v, ok in MATRIX],
)
def test_authorization_matrix(owned, who, hosts, action, verb, allowed):
    existing = other_request(owned, hosts) if verb in ("cancel", "read") else None
    before = queue(owned)
    guarded = GuardedFleet(owned, who)

    def call():
        image = "ubuntu-24.04" if action == "wipe" else None
        if verb == "submit":
            return guarded.submit(action, hosts, image=image)
        if verb == "plan":
            return guarded.plan(action, hosts, image=image)
        if verb == "cancel":
            return guarded.cancel(existing)
        return guarded.request_info(existing)

    if allowed:
        call()
        after = queue(owned)
        assert len(after) == len(before) + (verb == "submit")
        if verb == "submit":
            st = owned.status(after[0])
            assert st.submitted_by == who.name and st.hosts[0].host == hosts[0]
            assert owned.audit(principal=who.name)[0].verb == "submit"
        if verb == "cancel":
            assert owned.status(existing).state == "cancelled"
            assert [e.actor for e in owned.events(existing) if "cancel" in e.kind] == [who.name]
            assert owned.audit(principal=who.name)[0].verb == "cancel"
        assert refusals(owned) == []
    else:
        with pytest.raises(AccessDenied) as denied:
            call()
        assert queue(owned) == before
        if existing is not None:
            assert owned.status(existing).state == "accepted"
        assert refusals(owned) == [(who.name, verb)]
        (record,) = owned.audit(decision="refused")
        assert record.reason == denied.value.reason
        if who.role is Role.OPERATOR:  # refused for its pools: the 403 names them
            assert denied.value.pools and set(denied.value.pools) <= {"web", "db"}
            assert record.detail["pools"] == list(denied.value.pools)


def test_a_refusal_names_every_pool_the_operator_lacks(owned):
    with pytest.raises(AccessDenied, match="pools db, gpu") as denied:
        GuardedFleet(owned, OPERATOR).submit("reboot", ["web01", "db01", "gpu01"])
    assert denied.value.pools == ("db", "gpu")


def test_an_operator_cancels_its_own_request_in_a_pool_it_no_longer_owns(owned):
    rid = GuardedFleet(owned, OPERATOR).submit("reboot", WEB).id
    owned.revoke_pool("team-web", "web")
    assert GuardedFleet(owned, OPERATOR).cancel(rid) == "cancelled"
    other = other_request(owned, WEB)
    with pytest.raises(AccessDenied):
        GuardedFleet(owned, OPERATOR).cancel(other)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hosts_file", "/etc/hosts"),
        ("pre_hook", "/tmp/evil.yml"),
        ("post_hook", "/tmp/evil.yml"),
        ("submitted_by", "someone-else"),
    ],
)
def test_server_paths_and_a_chosen_submitter_are_refused_even_for_an_admin(owned, field, value):
    with pytest.raises(AccessDenied, match=field):
        GuardedFleet(owned, ADMIN).submit("reboot", WEB, **{field: value})
    assert queue(owned) == []
    assert refusals(owned) == [(ADMIN.name, "submit")]


def test_the_audit_log_is_for_admins(owned):
    with pytest.raises(AccessDenied, match="the audit log needs admin"):
        GuardedFleet(owned, OPERATOR).audit()
    assert [r.verb for r in GuardedFleet(owned, ADMIN).audit(decision="refused")] == ["audit"]
    with pytest.raises(InputError, match="--decision"):
        GuardedFleet(owned, ADMIN).audit(decision="maybe")


def test_an_idempotency_key_makes_one_request_and_conflicts_on_another_body(owned):
    g = GuardedFleet(owned, OPERATOR)
    first = g.submit("reboot", WEB, batch_size="1", idempotency_key="retry-1")
    again = g.submit("reboot", WEB, batch_size="1", idempotency_key="retry-1")
    assert (again.id, again.hosts) == (first.id, 2)
    assert queue(owned) == [first.id]
    with pytest.raises(IdempotencyConflict):
        g.submit("reboot", ["web01"], idempotency_key="retry-1")
    assert queue(owned) == [first.id]
    # The key is the principal's: another principal's same key is its own request.
    other = GuardedFleet(owned, WIPER).submit("reboot", WEB, idempotency_key="retry-1")
    assert other.id != first.id
    with pytest.raises(InputError, match="Idempotency-Key"):
        g.submit("reboot", WEB, idempotency_key="bad\nkey")
    with pytest.raises(InputError, match="Idempotency-Key"):
        g.submit("reboot", WEB, idempotency_key="k" * 201)


def test_a_replayed_key_answers_even_after_the_hosts_changed(owned):
    g = GuardedFleet(owned, OPERATOR)
    first = g.submit("reboot", ["web03"], idempotency_key="k")
    owned.store.set_host_status("web03", "quarantined", "x", actor="t")  # now refused
    assert g.submit("reboot", ["web03"], idempotency_key="k").id == first.id


def test_policy_is_pure_and_names_the_destructive_grant():
    grants = [PoolGrant(team="team-web", pool="web")]
    d = policy.may_submit(OPERATOR, "wipe", ["web"], grants)
    assert not d.allowed and d.pools == ("web",) and "destructive" in d.reason
    assert policy.may_submit(OPERATOR, "reboot", ["web"], grants).allowed
    nobody = Principal("token:x", Role.OPERATOR)
    assert not policy.may_submit(nobody, "reboot", ["web"], grants).allowed


# -- tokens ---------------------------------------------------------------------------------


def test_a_token_authenticates_as_its_principal_and_only_its_hash_is_stored(fleet, db_path):
    created = fleet.create_token("ci", "operator", teams=["team-web", "sre"], expires="30d")
    secret = created.secret
    assert secret.startswith("maas_") and len(secret) == 5 + 43
    who = fleet.authenticate_token(secret)
    assert who == Principal("token:ci", Role.OPERATOR, ("sre", "team-web"), "token")
    assert fleet.tokens()[0].last_used is not None
    fleet.close()
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert secret.encode() not in raw and secret[5:].encode() not in raw
    assert hash_secret(secret).encode() in raw
    conn = sqlite3.connect(db_path)
    dump = "\n".join(conn.iterdump())
    assert secret not in dump and secret[5:] not in dump
    audit = conn.execute("SELECT * FROM audit_log").fetchall()
    assert audit and secret not in repr(audit)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), "unknown token"),
        (lambda s: "maas_" + "x" * 43, "unknown token"),
        (lambda s: s + " ", "garbled token"),
        (lambda s: s[:12], "garbled token"),
        (lambda s: "maas_../../etc/passwd", "garbled token"),
        (lambda s: "", "garbled token"),
    ],
    ids=["one-char-off", "unknown", "trailing-space", "truncated", "path", "empty"],
)
def test_garbled_and_unknown_tokens_are_refused(fleet, mangle, reason):
    secret = fleet.create_token("ci", "admin").secret
    with pytest.raises(AuthenticationError, match=reason):
        fleet.authenticate_token(mangle(secret))


def test_revoked_and_expired_tokens_are_refused(fleet):
    revoked = fleet.create_token("gone", "admin").secret
    fleet.revoke_token("gone")
    with pytest.raises(AuthenticationError, match="token gone was revoked"):
        fleet.authenticate_token(revoked)
    short = fleet.create_token("short", "viewer", expires="1h").secret
    assert fleet.authenticate_token(short).role is Role.VIEWER
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    with pytest.raises(AuthenticationError, match="token short expired"):
        verify_token(fleet.store, short, now=later)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "root"}, "--role: unknown role 'root'"),
        ({"expires": "0d"}, "--expires: 0d is not in the future"),
        ({"expires": "3651d"}, "--expires: at most 3650 days"),
        ({"expires": "2001-01-01"}, "not in the future"),
        ({"expires": "soon"}, "expected a duration"),
        ({"teams": ["bad team"]}, "--team: not a valid name"),
        ({"name": "a b"}, "token name: not a valid name"),
    ],
)
def test_bad_token_options_write_nothing(fleet, kwargs, message):
    args = {"name": "ci", "role": "operator", **kwargs}
    with pytest.raises(InputError, match=message):
        fleet.create_token(args.pop("name"), args.pop("role"), **args)
    assert fleet.tokens() == [] and fleet.audit() == []


def test_expiry_defaults_to_90_days_and_a_date_lasts_through_that_day(fleet):
    t = fleet.create_token("a", "viewer").token
    created = datetime.fromisoformat(t.created.replace("Z", "+00:00"))
    expires = datetime.fromisoformat(t.expires.replace("Z", "+00:00"))
    assert expires - created == timedelta(days=90)
    day = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")
    assert fleet.create_token("b", "viewer", expires=day).token.expires.startswith(
        f"{day}T23:59:59"
    )


def test_authenticate_audits_every_failure_without_the_credential(fleet):
    secret = fleet.create_token("ci", "operator").secret
    assert authenticate(fleet, f"Bearer {secret}").name == "token:ci"
    fleet.revoke_token("ci")
    for header in (None, "Basic abc", f"Bearer {secret}", "Bearer maas_nope", "Bearer a.b.c"):
        with pytest.raises(AuthenticationError):
            authenticate(fleet, header, client="10.1.2.3")
    refused = fleet.audit(decision="refused")
    assert len(refused) == 5
    assert refused[2].principal == "token:ci" and "revoked" in refused[2].reason
    assert all(r.detail == {"client": "10.1.2.3"} for r in refused)
    assert secret not in json.dumps([r.model_dump() for r in fleet.audit(limit=1000)])


# -- JWTs -----------------------------------------------------------------------------------

ISSUER = "https://sso.example.test"
AUDIENCE = "maas-lib"


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(tmp_path, rsa_key) -> Path:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1", "use": "sig"}]}))
    return path


@pytest.fixture
def verifier(jwks) -> JwtVerifier:
    return JwtVerifier(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks=str(jwks)))


def claims(**over):
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice@example.test",
        "iat": now,
        "exp": now + 300,
        "maas_role": "operator",
        "groups": ["team-web", "cn=not a team,ou=x"],
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def other_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key, payload, alg="RS256", kid="k1"):
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def test_a_valid_jwt_is_its_subject_with_its_role_and_valid_teams(verifier, rsa_key):
    who = verifier.verify(sign(rsa_key, claims()))
    assert who == Principal("jwt:alice@example.test", Role.OPERATOR, ("team-web",), "jwt")
    assert verifier.verify(sign(rsa_key, claims(maas_role=None))).role is Role.VIEWER
    assert verifier.verify(sign(rsa_key, claims(maas_role="root"))).role is Role.VIEWER
    assert verifier.verify(sign(rsa_key, claims(maas_role=["admin"]))).role is Role.VIEWER
    # Within the leeway (30 s) an expired token still passes: clocks differ.
    assert verifier.verify(sign(rsa_key, claims(exp=int(time.time()) - 10)))


def _hs256_with_public_key(rsa_key) -> str:
    """The algorithm-confusion attack: an HMAC whose secret is the verifier's public key."""
    import base64
    import hashlib
    import hmac

    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims(maas_role="admin")).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def _alg_none() -> str:
    return jwt.encode(claims(maas_role="admin"), None, algorithm="none", headers={"kid": "k1"})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda k: sign(k, claims(iss="https://evil.example")), "another issuer"),
        (lambda k: sign(k, claims(aud="someone-else")), "another audience"),
        (lambda k: sign(k, claims(exp=int(time.time()) - 60)), "expired"),
        (lambda k: sign(k, claims(exp=None)), "lacks the exp claim"),
        (lambda k: sign(k, claims(aud=None)), "lacks the aud claim"),
        (lambda k: sign(k, claims(sub=None)), "lacks the sub claim"),
        (lambda k: _alg_none(), "algorithm 'none' is not accepted"),
        (_hs256_with_public_key, "algorithm 'HS256' is not accepted"),
        (lambda k: sign(k, claims(), kid="k2"), "unknown key"),
        (
            lambda k: sign(
                rsa.generate_private_key(public_exponent=65537, key_size=2048), claims()
            ),
            "signature does not verify",
        ),
        (
            lambda k: sign(ec.generate_private_key(ec.SECP256R1()), claims(), "ES256"),
            "ES256 does not fit its key's type",
        ),
        (lambda k: sign(k, claims())[:-8], "garbled JWT|signature does not verify"),
        (lambda k: "not.a.jwt", "garbled JWT"),
    ],
    ids=[
        "issuer",
        "audience",
        "expired",
        "no-exp",
        "no-aud",
        "no-sub",
        "alg-none",
        "hs256-public-key",
        "unknown-kid",
        "other-rsa-key",
        "es256-other-key",
        "truncated",
        "garbage",
    ],
)
def test_bad_jwts_are_refused(verifier, rsa_key, make, reason):
    with pytest.raises(AuthenticationError, match=reason):
        verifier.verify(make(rsa_key))


def test_authenticate_takes_a_jwt_when_configured(fleet, verifier, rsa_key):
    token = sign(rsa_key, claims())
    assert authenticate(fleet, f"Bearer {token}", jwt=verifier).name == "jwt:alice@example.test"
    with pytest.raises(AuthenticationError, match="JWTs not configured"):
        authenticate(fleet, f"Bearer {token}")
    assert token not in json.dumps([r.model_dump() for r in fleet.audit()])


def test_a_jwks_that_is_not_one_is_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="not a usable JWK set"):
        JwtVerifier(JwtSettings(ISSUER, AUDIENCE, str(bad)))
    with pytest.raises(InputError, match="must be https"):
        JwtVerifier(JwtSettings(ISSUER, AUDIENCE, "http://sso.example.test/jwks"))


@pytest.fixture
def jwks_url(jwks):
    """The JWKS served over HTTP on loopback by a real server (as an issuer serves it)."""
    import http.server
    import threading

    body = jwks.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


def test_a_jwks_url_is_fetched_and_an_unknown_kid_refused(jwks_url, rsa_key):
    v = JwtVerifier(JwtSettings(ISSUER, AUDIENCE, jwks_url))
    assert v.verify(sign(rsa_key, claims())).name == "jwt:alice@example.test"
    with pytest.raises(AuthenticationError, match="unknown key"):
        v.verify(sign(rsa_key, claims(), kid="k2"))
    with pytest.raises(AuthenticationError, match="algorithm 'HS256' is not accepted"):
        v.verify(_hs256_with_public_key(rsa_key))
    gone = JwtVerifier(JwtSettings(ISSUER, AUDIENCE, jwks_url.replace("jwks.json", "nope")))
    with pytest.raises(AuthenticationError, match="cannot fetch the issuer's JWKS"):
        gone.verify(sign(rsa_key, claims()))
