"""The job queue in portable SQL: workers, claims, overlaps, host tasks, leases, telemetry.

Correctness across processes rests on three things, whatever the backend:
  * a request is claimed by selecting its row with a row lock that other claimers skip
    (`_for`), so two workers never claim the same request;
  * `host_leases` has the host as its primary key, and a lease is taken with
    `INSERT … ON CONFLICT DO NOTHING`: a conflict means another request holds the host;
  * `begin_hosts` counts a pool's leases only after `_lock_pools` has serialized it with
    every other writer of those pools' budgets, and re-reads its claim under a row lock
    (claim fencing, like `end_task(holder=…)`).
On SQLite the locks are no-ops: `BEGIN IMMEDIATE` already makes every write exclusive.
"""

from __future__ import annotations

from maas_lib.store.sql_access import SqlAccess
from maas_lib.store.sql_catalog import SqlCatalog
from maas_lib.store.sql_leases import SqlLeases
from maas_lib.store.sql_queue import SqlQueue
from maas_lib.store.sql_stats import SqlStats
from maas_lib.store.sql_steps import SqlSteps


class SqlStore(SqlCatalog, SqlQueue, SqlLeases, SqlSteps, SqlStats, SqlAccess):
    """Every role of `Store` in portable SQL, one module per role; a backend adds only
    its dialect's hooks (`sql_base`)."""
