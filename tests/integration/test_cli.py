"""`maasctl` end to end against a real SQLite file: in subprocesses (`cli`, the installed
entry point, as a user runs it), and, where a test checks what a command does rather than
how the process starts and logs, through the same `main` in this process (`cli_in_process`)."""

import sqlite3
import sys
import time
from pathlib import Path

import pytest

import maas_lib

SECRET = "Zq9-very-secret-BMC-pass"


def count(db, table):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def start_as_scheduler(store, hosts, worker):
    """Claim request 1 and start `hosts` of it, as a scheduler does (leasing them)."""
    assert store.claim_request(worker, ttl=60) == 1
    began = store.begin_hosts(1, hosts, batch=0, action="reboot", holder=worker, limits={})
    assert sorted(began.started) == sorted(hosts)


@pytest.fixture
def imported(cli_in_process, inventory):
    r = cli_in_process("hosts", "import", str(inventory))
    assert r.code == 0, r
    return r


def test_import_then_list_hosts(cli, inventory):
    r = cli("hosts", "import", str(inventory), "--json")
    assert r.code == 0, r
    assert r.json()["added"] == 11 and r.json()["updated"] == 0
    again = cli("hosts", "import", str(inventory), "--json").json()
    assert (again["added"], again["updated"]) == (0, 11)
    rows = cli("hosts", "list", "--json").json()
    assert len(rows) == 11
    web = next(x for x in rows if x["host"] == "web03")
    assert web | {"pool": "web", "rack": "r1", "bmc_protocol": "ipmi"} == web
    assert web["bmc_address"] == "10.20.1.3" and web["status"] == "active"
    assert [x["host"] for x in cli("hosts", "list", "--pool", "db", "--json").json()] == [
        "db01",
        "db02",
    ]
    human = cli("hosts", "list")
    assert human.code == 0 and "web03" in human.out and "10.20.1.3" in human.out


def test_submit_is_accepted_and_status_shows_every_host(cli_in_process, imported):
    r = cli_in_process(
        "submit",
        "reimage",
        "web0[1-3]",
        "db01",
        "--image",
        "ubuntu-24.04",
        "--batch-size",
        "2",
        "--max-failures",
        "1",
        "--max-unavailable",
        "50%",
        "--canary",
        "1",
        "--pause",
        "30",
        "--on-overlap",
        "wait",
        "--json",
    )
    assert r.code == 0, r
    assert r.json() == {"id": 1, "state": "accepted", "hosts": 4}
    st = cli_in_process("status", "1", "--json").json()
    assert st["action"] == "reimage" and st["state"] == "accepted"
    assert st["image"] == "ubuntu-24.04"
    assert st["policy"] == {
        "batch_size": "2",
        "max_failures": "1",
        "max_unavailable": "50%",
        "canary": 1,
        "pause": 30.0,
        "on_overlap": "wait",
    }
    assert st["created"].endswith("Z") and st["submitted_by"]
    assert [h["host"] for h in st["hosts"]] == ["web01", "web02", "web03", "db01"]
    assert all(
        h | {"state": "pending", "reason": None, "error_class": None, "batch": None} == h
        for h in st["hosts"]
    )
    human = cli_in_process("status", "1")
    assert human.code == 0 and "4 pending" in human.out and "web02" in human.out


def test_overlapping_submissions_are_both_accepted(cli_in_process, imported):
    a = cli_in_process("submit", "reboot", "web*", "--json").json()
    b = cli_in_process("submit", "power-cycle", "web0[1-4]", "db*", "--json").json()
    assert (a["state"], b["state"]) == ("accepted", "accepted")
    assert (a["hosts"], b["hosts"]) == (8, 6)
    sb = cli_in_process("status", str(b["id"]), "--json").json()
    assert {h["state"] for h in sb["hosts"]} == {"pending"}
    assert cli_in_process("inflight", "--json").json() == []
    listed = cli_in_process("list", "--json").json()
    assert [x["id"] for x in listed] == [b["id"], a["id"]]
    assert listed[0]["counts"] == {"pending": 6}


def test_submitter_defaults_to_os_user_and_as_is_recorded(cli_in_process, imported):
    import getpass

    cli_in_process("submit", "reboot", "db01")
    cli_in_process("submit", "reboot", "db02", "--as", "deploy-bot")
    assert cli_in_process("status", "1", "--json").json()["submitted_by"] == getpass.getuser()
    second = cli_in_process("status", "2", "--json").json()
    assert second["submitted_by"] == "deploy-bot" and second["os_user"] == getpass.getuser()


def test_hosts_file_with_comments(cli_in_process, imported, write_file):
    path = write_file("hosts.txt", "# maintenance list\nweb01\n\nweb02  # noisy\ndb*\n")
    r = cli_in_process("submit", "power-off", "--hosts-file", str(path), "--json")
    assert r.code == 0, r
    hosts = [h["host"] for h in cli_in_process("status", "1", "--json").json()["hosts"]]
    assert hosts == ["web01", "web02", "db01", "db02"]


def test_list_filters_by_state_and_limits(cli_in_process, imported):
    for _ in range(3):
        cli_in_process("submit", "reboot", "db01")
    assert cli_in_process("cancel", "2").code == 0
    assert [x["id"] for x in cli_in_process("list", "--state", "accepted", "--json").json()] == [
        3,
        1,
    ]
    assert [x["id"] for x in cli_in_process("list", "--state", "cancelled", "--json").json()] == [2]
    assert [x["id"] for x in cli_in_process("list", "--limit", "1", "--json").json()] == [3]


def test_cancel_accepted_request_cancels_its_hosts(cli_in_process, imported):
    cli_in_process("submit", "wipe", "db*", "--json")
    r = cli_in_process("cancel", "1", "--as", "oncall", "--json")
    assert r.code == 0 and r.json()["state"] == "cancelled"
    st = cli_in_process("status", "1", "--json").json()
    assert st["state"] == "cancelled"
    assert {h["state"] for h in st["hosts"]} == {"cancelled"}
    assert all("oncall" in h["reason"] for h in st["hosts"])
    again = cli_in_process("cancel", "1")
    assert again.code == 2 and "already ended (cancelled)" in again.err


def test_cancel_running_request_is_flagged_for_the_scheduler(cli_in_process, imported, db_path):
    cli_in_process("submit", "reboot", "web*")
    with sqlite3.connect(db_path) as conn:  # as the scheduler (a later issue) would
        conn.execute("UPDATE requests SET state = 'running' WHERE id = 1")
    r = cli_in_process("cancel", "1")
    assert r.code == 0 and "no new host starts" in r.out
    st = cli_in_process("status", "1", "--json").json()
    assert st["state"] == "running" and st["cancel_requested"] is True
    assert {h["state"] for h in st["hosts"]} == {"pending"}


def test_inflight_lists_hosts_held_by_requests(cli_in_process, imported, db_path):
    cli_in_process("submit", "reboot", "web0[1-2]")
    with maas_lib.open_fleet(db_path) as fleet:
        start_as_scheduler(fleet.store, ["web01", "web02"], "sched-a")
    rows = cli_in_process("inflight", "--json").json()
    assert [(x["host"], x["request_id"], x["action"], x["pool"], x["holder"]) for x in rows] == [
        ("web01", 1, "reboot", "web", "sched-a"),
        ("web02", 1, "reboot", "web", "sched-a"),
    ]


def test_retired_hosts_cannot_be_submitted(cli_in_process, imported, db_path):
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE hosts SET status = 'decommissioned' WHERE name = 'db02'")
    r = cli_in_process("submit", "reboot", "db*")
    assert r.code == 2 and "host db02 is decommissioned" in r.err
    assert count(db_path, "requests") == 0


BAD_SUBMITS = [
    (["submit", "explode", "web01"], "'explode' is not one of"),
    (["submit", "reboot", "nosuchhost"], "unknown host nosuchhost"),
    (["submit", "reboot", "zz*"], "pattern 'zz*' matches no registered host"),
    (["submit", "reboot"], "no hosts given"),
    (["submit", "reboot", ""], "empty host pattern"),
    (["submit", "reboot", "web*", "--batch-size", "0"], "--batch-size: batch size must be at"),
    (["submit", "reboot", "web*", "--batch-size", "150%"], "cannot exceed 100%"),
    (["submit", "reboot", "web*", "--batch-size", "-1"], "--batch-size:"),
    (["submit", "reboot", "web*", "--batch-size", "lots"], "--batch-size:"),
    (["submit", "reboot", "web*", "--max-failures", "-2"], "--max-failures:"),
    (["submit", "reboot", "web*", "--max-unavailable", "0"], "--max-unavailable:"),
    (["submit", "reboot", "web*", "--canary", "-1"], "--canary:"),
    (["submit", "reboot", "web*", "--canary", "9"], "--canary 9 exceeds the request's 8 hosts"),
    (["submit", "reboot", "web*", "--pause", "-1"], "--pause:"),
    (["submit", "reboot", "web*", "--on-overlap", "queue"], "'queue' is not one of"),
    (["submit", "reimage", "web*"], "reimage needs --image"),
    (["submit", "reboot", "web*", "--image", "x"], "--image does not apply to reboot"),
    (["submit", "reboot", "web*", "--hosts-file", "/nonexistent"], "--hosts-file"),
    (["submit", "reboot", "web*", "--as", "two words"], "--as: not a valid name"),
    (["status", "999"], "unknown request id 999"),
    (["status", "abc"], "'abc' is not a valid integer"),
    (["cancel", "999"], "unknown request id 999"),
    (["list", "--state", "sleeping"], "'sleeping' is not one of"),
    (["list", "--limit", "0"], "--limit must be at least 1"),
    (["--db", "postgresql://x/y?schema=no-dash", "hosts", "list"], "schema='no-dash' in the"),
    (["--db", "mysql://x/y", "hosts", "list"], "unsupported database URL"),
    (["frobnicate"], "No such command 'frobnicate'"),
]


def bad_input_is_one_line_exit_2_and_writes_nothing(run, db_path, args, words):
    before = {t: count(db_path, t) for t in ("requests", "request_hosts", "events", "hosts")}
    r = run(*args)
    assert r.code == 2, r
    assert r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("maasctl: error: "), r.err
    assert words in r.err
    assert "Traceback" not in r.err
    assert {t: count(db_path, t) for t in before} == before


@pytest.mark.parametrize(
    ("args", "words"), BAD_SUBMITS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli_in_process, imported, db_path, args, words
):
    bad_input_is_one_line_exit_2_and_writes_nothing(cli_in_process, db_path, args, words)


@pytest.mark.parametrize(
    ("args", "words"),
    [BAD_SUBMITS[0], BAD_SUBMITS[1], BAD_SUBMITS[-3], BAD_SUBMITS[-1]],
    ids=["click-choice", "input-error", "database-url", "no-such-command"],
)
def test_bad_input_through_the_installed_entry_point(cli, imported, db_path, args, words):
    """Each kind of refusal (click's usage errors, maas-lib's InputError, a bad database
    URL) as a user meets it: the real process's exit code and stderr, no traceback."""
    bad_input_is_one_line_exit_2_and_writes_nothing(cli, db_path, args, words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("all:\n  hosts:\n    a: {bmc_address: 1.2.3.4\n", "YAML parsing failed"),
        ("all:\n  hosts:\n    a: {bmc_address: 1.2.3.4, bmc_port: 0}\n", "host a: bmc_port:"),
        (
            "all:\n  hosts:\n    a: {bmc_address: 1.2.3.4, bmc_protocol: snmp}\n",
            "host a: bmc_protocol:",
        ),
        ("all:\n  hosts:\n    a: {rack: r1}\n", "host a: bmc_address: Field required"),
    ],
)
def test_bad_inventory_is_refused_whole(cli_in_process, imported, db_path, write_file, text, words):
    good_and_bad = text.replace("  hosts:\n", "  hosts:\n    zz1: {bmc_address: 10.9.9.9}\n", 1)
    path = write_file("bad.yml", good_and_bad)
    before = count(db_path, "hosts")
    r = cli_in_process("hosts", "import", str(path))
    assert r.code == 2, r
    assert r.err.count("\n") == 1 and words in r.err and "Traceback" not in r.err
    assert count(db_path, "hosts") == before


def test_missing_inventory_file(cli):
    r = cli("hosts", "import", "/nonexistent/inv.yml")
    assert r.code == 2 and r.err == (
        "maasctl: error: inventory /nonexistent/inv.yml: no such file or directory\n"
    )


def test_secrets_never_reach_database_or_output(cli, inventory, db_path, write_file):
    env = {"MAAS_CRED_LAB_USERNAME": "admin", "MAAS_CRED_LAB_PASSWORD": SECRET}
    creds = write_file(
        "creds.toml", f'[redfish-lab]\nusername = "root"\npassword = "{SECRET}"\n', 0o600
    )
    env["MAAS_CREDENTIALS_FILE"] = str(creds)
    leaky = write_file(
        "leaky.yml", f"all:\n  hosts:\n    l1: {{bmc_address: 10.0.0.1, bmc_password: {SECRET}}}\n"
    )
    outputs = []
    for args in (
        ["-vv", "hosts", "import", str(inventory), str(leaky), "--json"],
        ["-vv", "hosts", "list", "--json"],
        ["-vv", "submit", "reimage", "web*", "l1", "--image", "img", "--json"],
        ["-vv", "status", "1", "--json"],
        ["-vv", "status", "1"],
        ["-vv", "list"],
        ["-vv", "credentials", "check", "lab", "redfish-lab"],
    ):
        r = cli(*args, env=env)
        assert r.code == 0, r
        outputs.append(r.out + r.err)
    text = "\n".join(outputs)
    assert "bmc_password ignored" in text
    assert "credential lab (user admin, from environment)" in text
    assert SECRET not in text
    for f in db_path.parent.glob(db_path.name + "*"):
        assert SECRET.encode() not in f.read_bytes(), f


def test_credentials_check_fails_for_unknown_name(cli_in_process):
    r = cli_in_process("credentials", "check", "nope")
    assert r.code == 2 and "MAAS_CRED_NOPE_USERNAME" in r.err


def test_default_database_is_per_user(cli, inventory, tmp_path):
    r = cli("hosts", "import", str(inventory), db=False)
    assert r.code == 0, r
    assert (tmp_path / "home/.local/share/maas-lib/maas.db").exists()
    xdg = tmp_path / "xdg"
    assert (
        cli("hosts", "import", str(inventory), db=False, env={"XDG_DATA_HOME": str(xdg)}).code == 0
    )
    assert (xdg / "maas-lib/maas.db").exists()


def test_db_option_overrides_environment(cli_in_process, inventory, tmp_path, db_path):
    other = tmp_path / "other.db"
    assert cli_in_process("--db", f"sqlite:///{other}", "hosts", "import", str(inventory)).code == 0
    assert count(other, "hosts") == 11
    assert not db_path.exists()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "maasctl"
    import subprocess

    r = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "maasctl, version" in r.stdout


def test_top_level_cli_shim_runs(tmp_path):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, str(repo / "cli.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "submit" in r.stdout


def test_quarantined_host_is_refused_until_released(cli_in_process, imported, db_path):
    with maas_lib.open_fleet(db_path) as fleet:  # as a failed wipe would (the scheduler)
        fleet.store.set_host_status(
            "db01", maas_lib.HostStatus.QUARANTINED, "wipe failed", actor="scheduler"
        )
    row = next(h for h in cli_in_process("hosts", "list", "--json").json() if h["host"] == "db01")
    assert (row["status"], row["status_reason"]) == ("quarantined", "wipe failed")
    r = cli_in_process("submit", "reboot", "db01")
    assert r.code == 2 and "host db01 is quarantined" in r.err
    assert cli_in_process("hosts", "release", "db01").code == 0
    assert cli_in_process("submit", "reboot", "db01").code == 0
    again = cli_in_process("hosts", "release", "db01")
    assert again.code == 2 and "is active, not quarantined" in again.err
    with maas_lib.open_fleet(db_path) as fleet:
        fleet.store.set_host_status(
            "db02", maas_lib.HostStatus.DECOMMISSIONED, None, actor="scheduler"
        )
    gone = cli_in_process("hosts", "release", "db02")
    assert gone.code == 2 and "decommissioned and cannot be released" in gone.err
    assert cli_in_process("hosts", "release", "nope").code == 2


def test_dry_run_prints_the_plan_and_writes_nothing(cli_in_process, imported, db_path):
    # web pool: 8 hosts, standing budget 25% = 2 down at once. Request 1 holds web01/web02.
    cli_in_process("submit", "reboot", "web0[1-2]")
    with maas_lib.open_fleet(db_path) as fleet:
        start_as_scheduler(fleet.store, ["web01", "web02"], "sched")
    before = {t: count(db_path, t) for t in ("requests", "request_hosts", "events")}
    r = cli_in_process(
        "submit", "power-cycle", "web*", "--batch-size", "3", "--canary", "1", "--dry-run", "--json"
    )
    assert r.code == 0, r
    plan = r.json()
    assert plan["dry_run"] is True and plan["hosts"] == 8
    assert plan["dropped"] == {"web01": 1, "web02": 1}
    assert plan["pool_limits"]["web"] == 2 and plan["pool_down_now"] == {"web": 2}
    assert [b["hosts"] for b in plan["batches"]] == [
        ["web03"],
        ["web04", "web05", "web06"],
        ["web07", "web08"],
    ]
    assert plan["batches"][0]["canary"] is True
    # Two web hosts are already down fleet-wide: every batch would wait for the budget now.
    assert all(b["budget_waits"] == b["hosts"] for b in plan["batches"])
    assert {t: count(db_path, t) for t in before} == before
    human = cli_in_process("submit", "power-cycle", "web*", "--dry-run", "--on-overlap", "wait")
    assert human.code == 0 and "web01: waits, held by request 1" in human.out
    bad = cli_in_process("submit", "power-cycle", "web*", "--dry-run", "--batch-size", "0")
    assert bad.code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-url", "ftp://img/{image}.iso"], "--image-url: expected an http(s) URL"),
        (["--image-url", "https://img/x.iso"], "containing {image}"),
        (["--concurrency", "0"], "--concurrency: Input should be greater than or equal to 1"),
        (["--claim-ttl", "-1"], "--claim-ttl: Input should be greater than 0"),
        (["--endpoint-concurrency", "0"], "--endpoint-concurrency:"),
    ],
)
def test_run_rejects_bad_settings_before_claiming_anything(cli_in_process, imported, args, message):
    cli_in_process("submit", "reboot", "web*")
    r = cli_in_process("run", "--until-idle", *args)
    assert r.code == 2 and message in r.err and "Traceback" not in r.err
    assert cli_in_process("status", "1", "--json").json()["state"] == "accepted"


def test_run_until_idle_with_nothing_to_do_exits_at_once(cli_in_process, imported):
    r = cli_in_process("run", "--until-idle", "--json")
    assert r.code == 0
    assert r.json()["finished"] == {} and r.json()["errors"] == []


def test_status_watch_returns_when_the_request_has_ended_with_its_verdict(cli, imported):
    cli("submit", "reboot", "web*")
    cli("cancel", "1")
    r = cli("status", "1", "--watch", "--json")
    assert r.code == 1  # ended, but not every host succeeded
    summary = r.json()["summary"]
    assert summary["state"] == "cancelled" and summary["counts"] == {"cancelled": 8}
    assert cli("status", "99", "--watch").code == 2


def test_stats_on_a_quiet_fleet_and_bad_windows(cli_in_process, imported):
    r = cli_in_process("stats", "--json")
    assert r.code == 0
    assert r.json()["actions"] == [] and r.json()["fleet"]["hosts"] == 11
    assert cli_in_process("stats", "--since", "24h").code == 0
    bad = cli_in_process("stats", "--since", "yesterday")
    assert bad.code == 2 and "--since: expected a duration" in bad.err


def test_metrics_prints_the_prometheus_text_format(cli_in_process, imported):
    from prometheus_client.parser import text_string_to_metric_families

    cli_in_process("submit", "reboot", "web*")
    r = cli_in_process("metrics")
    assert r.code == 0
    families = {f.name: f for f in text_string_to_metric_families(r.out)}
    requests = {s.labels["state"]: s.value for s in families["maas_requests"].samples}
    assert requests["accepted"] == 1 and requests["running"] == 0
    assert cli_in_process("metrics", "--serve", "nohost").code == 2


def test_workers_lists_heartbeats_claims_and_leases(cli_in_process, imported, db_path):
    from maas_lib.store import open_store

    cli_in_process("submit", "reboot", "web01", "web02")
    store = open_store(db_path)
    try:
        store.heartbeat("w-alive", ttl=30)
        assert store.claim_request("w-alive", ttl=30) == 1
        began = store.begin_hosts(
            1, ["web01"], batch=0, action="reboot", holder="w-alive", limits={}
        )
        assert list(began.started) == ["web01"]
        store.heartbeat("w-idle", ttl=30)
    finally:
        store.close()
    r = cli_in_process("workers", "--json")
    assert r.code == 0, r
    rows = {w["id"]: w for w in r.json()}
    assert set(rows) == {"w-alive", "w-idle"}
    assert rows["w-alive"]["requests"] == [1] and rows["w-alive"]["hosts_leased"] == 1
    assert rows["w-idle"]["requests"] == [] and rows["w-idle"]["alive"] is True
    assert all(w["pid"] > 0 and w["heartbeat_age_s"] >= 0 for w in rows.values())
    time.sleep(0.3)
    dead = cli_in_process("workers", "--claim-ttl", "0.2", "--json").json()
    assert [w["alive"] for w in dead] == [False, False]
    table = cli_in_process("workers", "--claim-ttl", "0.2")
    assert table.code == 0 and "w-alive" in table.out and "dead" in table.out
    assert cli_in_process("workers", "--claim-ttl", "0").code == 2
