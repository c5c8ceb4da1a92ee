"""The PostgreSQL job-queue store (psycopg 3): one database shared by schedulers on many
machines. The logic is `SqlStore`'s, shared with SQLite; this module is the dialect.

Isolation: READ COMMITTED with explicit locks, not SERIALIZABLE. Each statement sees what
other transactions committed before it began, so a lock taken *before* a statement
makes that statement see everything the previous lock holder wrote. The invariants
then rest on a few named locks instead of on retrying whole transactions whenever any
two schedulers touch the same tables (SERIALIZABLE would abort most concurrent claims
and `begin_hosts` calls of a busy fleet, and every retry re-runs BMC-free but
non-trivial work):
  * claims: `claim_request` selects its candidate `FOR NO KEY UPDATE SKIP LOCKED` (the
    weakest lock its own UPDATE takes: FK checks from other inserts do not make it skip
    a row), so two workers never claim the same request, and a request whose holder is
    in `begin_hosts`/`end_task` right now is simply skipped until the next poll;
  * claim fencing: `begin_hosts` and `end_task` re-read the claim `FOR SHARE`, which a
    takeover's UPDATE must wait for (and a claim in progress makes them wait), so a
    worker that lost the claim starts nothing and writes only its task row;
  * acceptance order: `create_request` holds a per-schema advisory lock until it
    commits, so request ids are given in commit order, and when a claim resolves
    overlaps every older request's hosts are already visible — as on SQLite (host
    imports take the same lock, so their added/updated counts are exact too);
  * leases: `host_leases` has the host as primary key and leases are inserted with
    `ON CONFLICT DO NOTHING` (a conflict = the host is held);
  * pool budgets: `begin_hosts` takes `pg_advisory_xact_lock` on every pool of its
    hosts, by key in ascending order (no deadlock between two such writers), before it
    counts the pools' leases; the count therefore includes every lease committed by
    whoever held a pool before, and no other `begin_hosts` leases in that pool until
    this one commits.
Deadlocks the lock order does not rule out (e.g. a worker finishing a request while
another takes it over) abort one transaction; `_run` retries the whole method, which is
safe because a method is one transaction and keeps no state outside it.

Threads: one connection (autocommit, explicit `BEGIN` per write) behind the store's
RLock, as on SQLite; a broken connection is replaced before the next call.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from maas_lib.errors import StoreError, StoreUnavailable, StoreUnusable
from maas_lib.store.pg_url import parse_pg_url
from maas_lib.store.schema import LATEST_VERSION
from maas_lib.store.sql import SqlStore
from maas_lib.store.sql_base import Cursor, NewId, Params

CONNECT_TIMEOUT_S = 10
#: How often a transaction that lost a deadlock (or serialization race) is run again.
RETRIES = 12
# Advisory lock namespaces (the first key of pg_advisory_xact_lock(int, int)): "MAAS"+n.
_NS_MIGRATE = 0x4D414101
_NS_INTAKE = 0x4D414102
_NS_POOL = 0x4D414103
# Milliseconds from the Julian day epoch to the Unix epoch (2440587.5 days).
_JD_UNIX_MS = 210866760000000

#: A transaction that lost one of these was rolled back, and is safe to run again.
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

_IN_TRANSACTION = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def to_pyformat(text: str) -> str:
    """`?` and `:name` placeholders (the portable SQL) as psycopg's `%s`/`%(name)s`."""
    return _NAMED.sub(r"%(\1)s", text.replace("%", "%%").replace("?", "%s"))


def _key(text: str) -> int:
    """A stable signed 32-bit advisory-lock key for `text` (same in every process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), signed=True)


def _jd_ms(ts: str) -> str:
    """SQLite's iJD for an ISO timestamp expression: ms since the Julian epoch, with the
    seconds rounded to ms exactly as SQLite does (in float8), so figures match it."""
    t = f"(CAST({ts} AS timestamptz) AT TIME ZONE 'UTC')"
    us = f"EXTRACT(MICROSECONDS FROM {t})"  # seconds within the minute, in µs
    seconds = (
        f"(CAST(FLOOR({us} / 1000000) AS float8) "
        f"+ CAST(MOD({us}, 1000000) AS float8) / CAST(1000000 AS float8))"
    )
    return (
        f"(CAST(EXTRACT(EPOCH FROM date_trunc('minute', {t})) AS bigint) * 1000 + {_JD_UNIX_MS}"
        f" + CAST(FLOOR({seconds} * CAST(1000 AS float8) + CAST(0.5 AS float8)) AS bigint))"
    )


class PostgresStore(SqlStore):
    ROW_ORDER = "seq"
    DIALECT = "postgresql"
    INTEGRITY_ERROR = psycopg.IntegrityError

    def __init__(self, url: str, *, create: bool = True):
        self._given_url = url
        self._create = create
        self._target = parse_pg_url(url)
        self.url = self._label = self._target.url
        self.schema = self._target.schema
        self._closed = False
        self._init_lock()
        self.conn = self._connect()
        try:
            self._migrate()
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"cannot use database {self.url}: {self._scrub(exc)}") from None
        except BaseException:
            self.conn.close()
            raise

    def child_url(self) -> str:
        # The URL as given, password included: for a child process's environment only.
        return self._given_url

    def _scrub(self, exc: BaseException) -> str:
        return self._target.scrub(exc)

    def _connect(self) -> psycopg.Connection[Any]:
        info = self._target.conninfo
        extra: dict[str, Any] = {}
        if "connect_timeout" not in info:
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in info:
            extra["application_name"] = "maas-lib"
        try:
            conn = psycopg.connect(info, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open database {self.url}: {self._scrub(exc)}") from None
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        if self.schema:
            # Valid before the schema exists: the first migration creates it.
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def close(self) -> None:
        self._closed = True
        self.conn.close()

    def schema_version(self) -> int:
        return self._version()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for attempt in range(1, RETRIES + 1):
            if (self.conn.broken or self.conn.closed) and not self._closed:
                try:
                    self.conn = self._connect()
                except StoreError as exc:  # e.g. the server is still restarting
                    raise StoreUnavailable(str(exc)) from None
            try:
                return fn(self, *args, **kwargs)
            except _RETRYABLE as exc:
                if attempt == RETRIES:
                    raise StoreError(
                        f"database {self.url}: gave up after {RETRIES} attempts: {self._scrub(exc)}"
                    ) from None
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))
            except psycopg.OperationalError as exc:  # connection lost, server shutting down
                # The next call reconnects (above); whether to make it is the caller's call.
                raise StoreUnavailable(f"database {self.url}: {self._scrub(exc)}") from None
        raise AssertionError("unreachable")

    # -- statements and transactions ------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    @contextmanager
    def _write_batch(self) -> Iterator[None]:
        # Not `conn.transaction()`: in a pipeline it waits for every result before it
        # sends COMMIT (one more round trip holding the transaction's locks). Here a
        # failing statement makes the server skip the rest, COMMIT included, until the
        # pipeline's Sync, whose answer raises the error; the transaction is then
        # still open (failed), and rolled back.
        try:
            with self.conn.pipeline():
                self.conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                yield
                self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.info.transaction_status in _IN_TRANSACTION and not self.conn.broken:
                with suppress(psycopg.Error):  # the error that got us here says more
                    self.conn.execute("ROLLBACK")
            raise

    def _exec(self, text: str, params: Params = ()) -> Cursor:
        if not params:
            return self.conn.execute(text)  # type: ignore[return-value]
        return self.conn.execute(to_pyformat(text), params)  # type: ignore[return-value, arg-type]

    def _many(self, text: str, rows: Sequence[Params]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(to_pyformat(text), rows)  # type: ignore[arg-type]

    def _batched(self) -> AbstractContextManager[Any]:
        return self.conn.pipeline()

    def _new_id(self, inserted: Cursor, table: str) -> NewId:
        # The sequence's value in this session: nothing is read back mid-transaction, so
        # the statements that follow go in the same pipeline round trip. A subquery, so
        # that it is evaluated once per statement, not per row (1,000 hosts' rows: 2.2 ms
        # instead of 6.7).
        return NewId(
            f"(SELECT currval(pg_get_serial_sequence('{table}', 'id')))",
            (),
            lambda: inserted.fetchall()[0][0],
        )

    def _insert_hosts(self, request_id: NewId, hosts: Sequence[str]) -> None:
        # One statement, not one per host; `seq` is given in the list's order.
        self._exec(
            f"INSERT INTO request_hosts (request_id, host) SELECT {request_id.sql}, t.host "
            "FROM unnest(CAST(? AS text[])) WITH ORDINALITY AS t(host, n) ORDER BY t.n",
            (*request_id.params, list(hosts)),
        )

    def _rows(self, text: str, params: Params = ()) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            if params:
                cur.execute(to_pyformat(text), params)  # type: ignore[arg-type]
            else:
                cur.execute(text)  # type: ignore[arg-type]
            return cur.fetchall()

    # -- list parameters: arrays ----------------------------------------------------------

    def _list(self, values: Sequence[Any]) -> list[Any]:
        return list(values)

    def _in(self, column: str, param: str = "?") -> str:
        return f"{column} = ANY({param})"

    def _each(self, param: str, alias: str) -> str:
        return f"unnest(CAST({param} AS text[])) AS {alias}(value)"

    @contextmanager
    def _pairs(self, pairs: Mapping[str, int], alias: str) -> Iterator[tuple[str, list[Any]]]:
        yield (
            f"unnest(CAST(? AS text[]), CAST(? AS bigint[])) AS {alias}(host, holder)",
            [list(pairs), list(pairs.values())],
        )

    # -- locks ----------------------------------------------------------------------------

    def _for(self, clause: str) -> str:
        return f" {clause}"

    def _advisory(self, namespace: int, key: int) -> None:
        self._exec(
            "SELECT pg_advisory_xact_lock(CAST(? AS integer), CAST(? AS integer))",
            (namespace, key),
        )

    def _lock_pools(self, pools: Sequence[str]) -> None:
        for key in sorted({_key(f"{self.schema or ''}\0{p}") for p in pools}):
            self._advisory(_NS_POOL, key)

    def _lock_intake(self) -> None:
        self._advisory(_NS_INTAKE, _key(self.schema or ""))

    def _gate_access(self, version: int) -> None:
        # Checked by the server (schema.ACCESS_GATE): a changed version raises SQLSTATE
        # 40001, which `_run` answers by running the whole submission again, its reads
        # and decision included. Nothing to read back before COMMIT.
        self._exec("SELECT maas_access_gate(CAST(? AS bigint))", (version,))

    # -- telemetry expressions: the same figures as SQLite's --------------------------------

    def _indexed_by(self, index: str) -> str:
        return ""

    def _epoch_s(self, ts: str) -> str:
        return f"({_jd_ms(ts)} / 1000 - {_JD_UNIX_MS // 1000})"

    def _seconds_between(self, later: str, earlier: str) -> str:
        day = "CAST(86400000 AS float8)"
        return (
            f"((CAST({_jd_ms(later)} AS float8) / {day} - CAST({_jd_ms(earlier)} AS float8) "
            f"/ {day}) * CAST(86400.0 AS float8))"
        )

    def _total(self, expr: str) -> str:
        return f"SUM({expr} ORDER BY {expr})"  # in index order, as SQLite's TOTAL adds

    # -- migrations -----------------------------------------------------------------------

    def _migrate(self) -> None:
        (exists,) = self._exec("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if exists:  # the common case: no lock, no DDL
            current = self._version()
            self._refuse_newer(current)
            if current == LATEST_VERSION:
                return
        elif not self._create:  # a mistyped ?schema= is not a new, unread queue
            raise StoreUnusable(
                f"no maas-lib store at {self.url} (`maasctl db init` or `maasctl hosts import` "
                "creates one)"
            )
        super()._migrate()

    def _column_types(self, table: str) -> dict[str, str]:
        rows = self._exec(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {name: str(kind).lower() for name, kind in rows}

    def _after_copy(self, table: str) -> None:
        # Ids were copied as they were: the identity must go on after the largest.
        if "id" in self._column_types(table):
            self._exec(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
            )

    def _prepare_migrations(self) -> None:
        # Several processes may open a fresh database at once: one migrates, the others
        # wait here and then find it done.
        self._advisory(_NS_MIGRATE, _key(self.schema or ""))
        if self.schema:
            self.conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        super()._prepare_migrations()
