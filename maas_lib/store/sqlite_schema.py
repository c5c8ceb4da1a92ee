"""SQLite schema, as numbered migrations applied in order inside one transaction each.

Table definitions go through sqlite-utils so column types, defaults and foreign keys are
declared once as data. A migration is never edited after release: add a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a migration runs (see maas_lib.store.sqlite)
    import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["hosts"].create(
        {
            "name": str,
            "pool": str,
            "rack": str,
            "bmc_address": str,
            "bmc_port": int,
            "bmc_protocol": str,
            "bmc_system": str,
            "bmc_credential": str,
            "bmc_tls_ca": str,
            "bmc_tls_verify": int,
            "bmc_fallback_protocol": str,
            "bmc_fallback_address": str,
            "bmc_fallback_port": int,
            "hw_model": str,
            "bmc_vendor": str,
            "status": str,
            "status_reason": str,
            "created": str,
            "updated": str,
        },
        pk="name",
        not_null={
            "pool",
            "bmc_address",
            "bmc_protocol",
            "bmc_credential",
            "status",
            "bmc_tls_verify",
            "created",
            "updated",
        },
        defaults={"status": "active", "bmc_credential": "default", "bmc_tls_verify": 1},
    )
    db["hosts"].create_index(["pool"])

    db["pools"].create(
        {"name": str, "max_unavailable": str, "updated": str},
        pk="name",
        not_null={"updated"},
    )

    db["requests"].create(
        {
            "id": int,
            "action": str,
            "state": str,
            "policy": str,
            "patterns": str,
            "image": str,
            "submitted_by": str,
            "os_user": str,
            "host_count": int,
            "cancel_requested": int,
            "cancelled_by": str,
            "claimed_by": str,
            "claim_expires": str,
            "reason": str,
            "created": str,
            "updated": str,
            "started": str,
            "finished": str,
        },
        pk="id",
        not_null={
            "action",
            "state",
            "policy",
            "patterns",
            "submitted_by",
            "os_user",
            "host_count",
            "cancel_requested",
            "created",
            "updated",
        },
        defaults={"cancel_requested": 0},
    )
    db["requests"].create_index(["state", "id"])

    db["request_hosts"].create(
        {
            "request_id": int,
            "host": str,
            "state": str,
            "reason": str,
            "error_class": str,
            "batch": int,
            "holder_request": int,
            "started": str,
            "finished": str,
        },
        pk=("request_id", "host"),
        not_null={"state"},
        defaults={"state": "pending"},
        foreign_keys=[("request_id", "requests", "id"), ("host", "hosts", "name")],
    )
    db["request_hosts"].create_index(["host", "state"])

    db["batches"].create(
        {
            "request_id": int,
            "idx": int,
            "state": str,
            "size": int,
            "started": str,
            "finished": str,
        },
        pk=("request_id", "idx"),
        not_null={"state", "size"},
        foreign_keys=[("request_id", "requests", "id")],
    )

    db["host_tasks"].create(
        {
            "id": int,
            "request_id": int,
            "host": str,
            "action": str,
            "attempt": int,
            "state": str,
            "via": str,
            "error_class": str,
            "error": str,
            "started": str,
            "finished": str,
        },
        pk="id",
        not_null={"request_id", "host", "action", "attempt", "state"},
        defaults={"attempt": 1},
        foreign_keys=[("request_id", "requests", "id"), ("host", "hosts", "name")],
    )
    db["host_tasks"].create_index(["request_id", "host"])

    db["step_results"].create(
        {
            "id": int,
            "task_id": int,
            "request_id": int,
            "host": str,
            "action": str,
            "step": str,
            "outcome": str,
            "error_class": str,
            "error": str,
            "via": str,
            "started": str,
            "finished": str,
            "duration_s": float,
        },
        pk="id",
        not_null={"task_id", "request_id", "host", "action", "step", "outcome", "started"},
        foreign_keys=[("task_id", "host_tasks", "id"), ("request_id", "requests", "id")],
    )
    db["step_results"].create_index(["action", "step"])
    db["step_results"].create_index(["request_id"])

    db["host_leases"].create(
        {"host": str, "request_id": int, "holder": str, "acquired": str},
        pk="host",
        not_null={"request_id", "holder", "acquired"},
        foreign_keys=[("host", "hosts", "name"), ("request_id", "requests", "id")],
    )
    db["host_leases"].create_index(["request_id"])

    db["events"].create(
        {
            "id": int,
            "ts": str,
            "kind": str,
            "request_id": int,
            "host": str,
            "actor": str,
            "message": str,
            "data": str,
        },
        pk="id",
        not_null={"ts", "kind", "message"},
    )
    db["events"].create_index(["request_id", "id"])


def _v2(db: sqlite_utils.Database) -> None:
    """The install-completion path: what a host should install, and what installers said."""
    db["install_targets"].create(
        {"host": str, "image": str, "request_id": int, "set_at": str},
        pk="host",
        not_null={"image", "set_at"},
        foreign_keys=[("host", "hosts", "name"), ("request_id", "requests", "id")],
    )
    db["install_reports"].create(
        {
            "id": int,
            "host": str,
            "image": str,
            "outcome": str,
            "reason": str,
            "request_id": int,
            "expected_image": str,
            "reported": str,
        },
        pk="id",
        not_null={"host", "image", "outcome", "reported"},
        foreign_keys=[("host", "hosts", "name"), ("request_id", "requests", "id")],
    )
    db["install_reports"].create_index(["host", "id"])


def _v3(db: sqlite_utils.Database) -> None:
    """Scheduler workers and their heartbeats (several may share one database)."""
    db["workers"].create(
        {"id": str, "hostname": str, "pid": int, "started": str, "heartbeat": str},
        pk="id",
        not_null={"hostname", "pid", "started", "heartbeat"},
    )
    db["requests"].create_index(["claimed_by"])


def _v4(db: sqlite_utils.Database) -> None:
    """Request options (pre/post hooks) and hosts' inventory vars (what hooks see)."""
    db["requests"].add_column("options", str)
    db["hosts"].add_column("vars", str)


def _v5(db: sqlite_utils.Database) -> None:
    """Telemetry: each task and step carries its host's pool (and the task its hardware
    model and BMC vendor) as they were when it ran, and covering indexes let `stats`
    answer from indexes alone over millions of step records."""
    for column in ("pool", "hw_model", "bmc_vendor"):
        db["host_tasks"].add_column(column, str)
    db["step_results"].add_column("pool", str)
    db.execute(
        "UPDATE host_tasks SET pool = h.pool, hw_model = h.hw_model, bmc_vendor = h.bmc_vendor "
        "FROM hosts h WHERE h.name = host_tasks.host"
    )
    db.execute(
        "UPDATE step_results SET pool = t.pool FROM host_tasks t WHERE t.id = step_results.task_id"
    )
    db.execute("DROP INDEX IF EXISTS idx_step_results_action_step")
    db.execute("DROP INDEX IF EXISTS idx_step_results_request_id")
    db["step_results"].create_index(
        ["action", "step", "duration_s", "started", "outcome", "pool"],
        index_name="idx_step_results_stats",
    )
    db["step_results"].create_index(["request_id", "started"])
    db["host_tasks"].create_index(
        ["action", "state", "error_class", "pool", "hw_model", "bmc_vendor", "started"],
        index_name="idx_host_tasks_stats",
    )


MIGRATIONS: list[tuple[int, Callable[[sqlite_utils.Database], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (5, _v5),
]
LATEST_VERSION = MIGRATIONS[-1][0]
