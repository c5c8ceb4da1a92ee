"""`maasctl tokens`, `maasctl pools` and `maasctl audit`, and the inventory's
`pool_owner`, as a user runs them: output, exit codes, nothing written on bad input, and
a token's secret printed once, on stdout, and nowhere else."""

from __future__ import annotations

import sqlite3

import pytest

import maas_lib

OWNED_YAML = """
all:
  children:
    web:
      vars: {pool_owner: [web-team, sre]}
      hosts:
        web01: {bmc_address: 10.0.0.1}
        web02: {bmc_address: 10.0.0.2}
    db:
      vars: {pool_owner: db-team}
      hosts:
        db01: {bmc_address: 10.0.0.3}
"""


@pytest.fixture
def imported(cli_in_process, write_file):
    r = cli_in_process("hosts", "import", str(write_file("inv/owned.yml", OWNED_YAML)))
    assert r.code == 0, r
    return r


def test_a_token_secret_is_printed_once_on_stdout_and_stored_nowhere(cli, imported, db_path):
    r = cli("tokens", "create", "ci-bot", "--role", "operator", "--team", "web-team")
    assert r.code == 0, r
    secret = r.out.strip()
    assert secret.startswith("maas_") and r.out.count("\n") == 1
    assert secret not in r.err and "ci-bot: operator, teams web-team" in r.err
    listed = cli("tokens", "list", "--json")
    assert listed.code == 0 and secret not in listed.out and secret[5:] not in listed.out
    (token,) = listed.json()
    assert set(token) == {"name", "role", "teams", "created", "expires", "revoked", "last_used"}
    audit = cli("audit", "--json")
    assert audit.code == 0 and secret not in audit.out
    assert audit.json()[0]["verb"] == "tokens.create"
    assert audit.json()[0]["principal"].startswith("local:")
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert secret.encode() not in raw and secret[5:].encode() not in raw
    # The secret works: the library authenticates it as the token.
    with maas_lib.open_fleet(db_path) as fleet:
        assert fleet.authenticate_token(secret).name == "token:ci-bot"


def test_tokens_create_json_is_the_one_document_with_the_secret(cli_in_process, imported):
    r = cli_in_process("tokens", "create", "a", "--role", "viewer", "--expires", "12h", "--json")
    assert r.code == 0, r
    doc = r.json()
    assert doc["secret"].startswith("maas_") and doc["token"]["role"] == "viewer"
    assert doc["secret"] not in cli_in_process("tokens", "list").out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tokens", "create", "x", "--role", "root"], "Invalid value for '--role'"),
        (["tokens", "create", "x", "--role", "admin", "--expires", "9999d"], "at most 3650"),
        (["tokens", "create", "x", "--role", "admin", "--expires", "yesterday"], "--expires"),
        (["tokens", "create", "x y", "--role", "admin"], "token name: not a valid name"),
        (["tokens", "create", "x", "--role", "admin", "--team", "a;b"], "--team"),
        (["tokens", "revoke", "nobody"], "unknown token nobody"),
        (["pools", "grant", "team", "no-such-pool"], "unknown pool no-such-pool"),
        (["pools", "grant", "bad team", "web"], "--team: team: not a valid name"),
        (["pools", "revoke", "db-team", "web"], "team db-team does not own pool web"),
        (["audit", "--decision", "maybe"], "Invalid value for '--decision'"),
        (["audit", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(cli_in_process, imported, db_path, args, message):
    def state():
        conn = sqlite3.connect(db_path)
        try:
            return [
                conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("api_tokens", "pool_owners", "audit_log")
            ]
        finally:
            conn.close()

    before = state()
    r = cli_in_process(*args)
    assert r.code == 2, r
    assert message in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert state() == before


def test_inventory_owners_then_grants_revokes_and_the_audit_log(cli_in_process, imported):
    owners = cli_in_process("pools", "owners", "--json").json()
    assert [(o["pool"], o["team"], o["destructive"]) for o in owners] == [
        ("db", "db-team", False),
        ("web", "sre", False),
        ("web", "web-team", False),
    ]
    r = cli_in_process("pools", "grant", "sre", "db", "--destructive")
    assert (r.code, r.out) == (0, "team sre owns pool db, destructive actions included\n")
    r = cli_in_process("pools", "revoke", "web-team", "web")
    assert (r.code, r.out) == (0, "team web-team no longer owns pool web\n")
    human = cli_in_process("pools", "owners")
    assert "sre" in human.out and "yes" in human.out and "web-team" not in human.out
    audit = cli_in_process("audit", "--json", "--limit", "2").json()
    assert [(a["verb"], a["target"]) for a in audit] == [
        ("pools.revoke", "pool:web"),
        ("pools.grant", "pool:db"),
    ]
    assert cli_in_process("audit", "--decision", "refused", "--json").json() == []
    inventory = cli_in_process("audit", "--json").json()[2:]
    assert {a["reason"] for a in inventory} == {"inventory pool_owner"}


def test_conflicting_pool_owners_in_one_pool_are_refused(cli_in_process, write_file, db_path):
    bad = write_file(
        "inv/bad.yml",
        """
        all:
          children:
            web:
              hosts:
                web01: {bmc_address: 10.0.0.1, pool_owner: a}
                web02: {bmc_address: 10.0.0.2, pool_owner: b}
        """,
    )
    r = cli_in_process("hosts", "import", str(bad))
    assert r.code == 2
    assert (
        r.err == "maasctl: error: pool web: pool_owner is a for host web01 but b for host web02\n"
    )
    assert not db_path.exists()
    wrong = write_file(
        "inv/wrong.yml",
        """
        all:
          hosts:
            web01: {bmc_address: 10.0.0.1, pool_owner: {team: a}}
        """,
    )
    r = cli_in_process("hosts", "import", str(wrong))
    assert r.code == 2 and "pool_owner: expected a team name or a list" in r.err
    assert not db_path.exists()


def test_access_commands_need_the_database(cli_in_process):
    r = cli_in_process("--api", "https://127.0.0.1:1", "tokens", "list")
    assert r.code == 2 and "not available with --api" in r.err
