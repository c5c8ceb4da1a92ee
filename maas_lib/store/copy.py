"""Copy a whole job-queue store into an empty one: moving from SQLite to PostgreSQL.

Everything an SRE would miss is carried over, ids included: hosts with their standing
(a quarantined host stays quarantined), pools and their budgets, every request with its
hosts, batches, tasks, steps and events, install targets and reports, API tokens (their
hashes), pool owners, the audit log and idempotency keys. Not carried: the `workers`
table (the old schedulers are gone) and the schema version rows (the target has its own,
which must be the same version).

The copy is one transaction on the target, so it is all or nothing. The source must be
drained first: a running request belongs to a scheduler of the old database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maas_lib.errors import InputError
from maas_lib.models import RequestState
from maas_lib.store import schema

if TYPE_CHECKING:
    from maas_lib.store.sql_base import SqlBase

#: In foreign-key order (as `schema` declares them); not the workers.
TABLES = tuple(t.name for t in schema.TABLES if t.name != "workers")

#: Rows written per statement batch.
CHUNK = 5000


def copy_store(source: SqlBase, target: SqlBase) -> dict[str, int]:
    """Copy every table of `source` into the empty store `target`; rows copied per table.

    Raises `InputError` if the target is not empty, the schema versions differ, or a
    request is still running in the source."""
    if source.schema_version() != target.schema_version():
        raise InputError(
            f"schema versions differ: {source.schema_version()} (source) and "
            f"{target.schema_version()} (target); upgrade both to the same maas-lib"
        )
    running = source.list_requests([RequestState.RUNNING], limit=1)
    if running:
        raise InputError(
            f"request {running[0].id} is running in the source: let it finish or cancel "
            "it, and stop its schedulers, before copying"
        )
    copied: dict[str, int] = {}
    with target.bulk_write():
        check_empty(target)
        for table in TABLES:
            copied[table] = _copy_table(source, target, table)
    return copied


def _copy_table(source: SqlBase, target: SqlBase, table: str) -> int:
    types = target.column_types(table)
    rows = rows_in_order(source, table)
    if not rows:
        return 0
    # `seq` (PostgreSQL's request_hosts order): the target numbers its own rows.
    columns = [c for c in rows[0] if c in types and c != "seq"]
    bools = {c for c in columns if types[c] == "boolean"}
    values = [
        [bool(r[c]) if c in bools and r[c] is not None else r[c] for c in columns] for r in rows
    ]
    for start in range(0, len(values), CHUNK):
        target.insert_rows(table, columns, values[start : start + CHUNK])
    target.after_insert_rows(table)
    return len(rows)


def rows_in_order(source: SqlBase, table: str) -> list[dict]:
    """Every row of `table`, in the order that keeps ids and submission order."""
    order = {
        "hosts": "name",
        "pools": "name",
        "request_hosts": f"request_id, {source.ROW_ORDER}",
        "batches": "request_id, idx",
        "install_targets": "host",
        "host_leases": "host",
        "api_tokens": "name",
        "pool_owners": "pool, team",
        "idempotency_keys": "principal, key",
    }.get(table, "id")
    return source.table_rows(table, order)


def check_empty(target: SqlBase) -> None:
    for table in ("hosts", "requests"):
        if n := target.row_count(table):
            raise InputError(
                f"the target database is not empty ({n} rows in {table}); copy into a new one"
            )
