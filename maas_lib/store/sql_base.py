"""The plumbing every SQL backend shares, and the hooks where the dialects differ.

The store's logic lives once, in `SqlCatalog` and `SqlStore`, written in SQL that SQLite
and PostgreSQL both accept: `?` (or `:name`) placeholders, `INSERT … ON CONFLICT`,
`UPDATE … FROM`, `RETURNING`. A backend supplies only what cannot be portable: how to
run a statement, a transaction, a list parameter (`json_each(?)` or `= ANY(?)`), the
column that keeps `request_hosts` in insertion order, row locks, and a few expressions
the telemetry SQL needs. SQLite needs no row locks (one writer at a time), so the lock
hooks do nothing there.

Every public method of a subclass runs under the store's lock (one connection shared by
many threads) and through `_run`, where a backend may retry a transaction that lost a
deadlock or a serialization race.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar, Protocol

from maas_lib.errors import StoreError
from maas_lib.store import schema
from maas_lib.store.base import Store
from maas_lib.timeutil import utc_now

Params = Sequence[Any] | Mapping[str, Any]


class Cursor(Protocol):
    """What `_exec` returns: the DB-API cursor subset both drivers share."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class NewId:
    """The id of a row its transaction just inserted, as the statements after it take it:
    `sql` stands for it in a statement, with `params` (SQLite: `?` and the id, read back
    at once; PostgreSQL: its sequence's `currval`, so that a batched transaction reads
    nothing back before its COMMIT). `value()` is the id (on PostgreSQL read with the
    transaction's other results, once they are in)."""

    __slots__ = ("_read", "_value", "params", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...], read: Callable[[], int]):
        self.sql = sql
        self.params = params
        self._read = read
        self._value: int | None = None

    def value(self) -> int:
        if self._value is None:
            self._value = int(self._read())
        return self._value

    def labelled(self, prefix: str) -> tuple[str, tuple[Any, ...]]:
        """`prefix` followed by the id, as text (an audit record's `request:<id>`)."""
        return f"CAST(? AS TEXT) || {self.sql}", (prefix, *self.params)


def id_sql(row_id: int | NewId | None) -> tuple[str, tuple[Any, ...]]:
    """A statement's SQL and parameters for an id column's value."""
    if isinstance(row_id, NewId):
        return row_id.sql, row_id.params
    return "?", (row_id,)


def _serialized(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def locked(self: SqlBase, *args: Any, **kwargs: Any) -> Any:
        return self._call(fn, args, kwargs)

    locked.__serialized__ = True  # type: ignore[attr-defined]
    return locked


class SqlBase(Store):
    """Connection plumbing, migrations and events; the dialect hooks are abstract."""

    #: The `request_hosts` column that orders a request's hosts as they were submitted.
    ROW_ORDER: ClassVar[str]
    #: Which DDL `schema` generates for this backend.
    DIALECT: ClassVar[schema.Dialect]

    #: How error messages name the database (a path, or a URL without its password).
    _label: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Serialize every public method a subclass defines: one connection, many threads."""
        super().__init_subclass__(**kwargs)
        for name, fn in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            if not getattr(fn, "__serialized__", False):
                setattr(cls, name, _serialized(fn))

    def _init_lock(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            if self._depth:  # a public method calling another: already inside `_run`
                return fn(self, *args, **kwargs)
            self._depth += 1
            try:
                return self._run(fn, args, kwargs)
            finally:
                self._depth -= 1

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one public method (holding the lock); a backend may retry it here."""
        return fn(self, *args, **kwargs)

    # -- dialect hooks: statements and transactions ---------------------------------------

    @abstractmethod
    def _exec(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement (`?` or `:name` placeholders); rows come back as tuples."""

    @abstractmethod
    def _many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement once per parameter row."""

    @abstractmethod
    def _rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run a query; rows come back as dicts keyed by column name."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[None]:
        """One short write transaction: committed on exit, rolled back on an exception."""

    # -- dialect hooks: list parameters ---------------------------------------------------

    @abstractmethod
    def _list(self, values: Sequence[Any]) -> Any:
        """`values` as the one parameter that `_in` and `_each` take."""

    @abstractmethod
    def _in(self, column: str, param: str = "?") -> str:
        """A condition: `column` is one of the list parameter `param`."""

    @abstractmethod
    def _each(self, param: str, alias: str) -> str:
        """A FROM item named `alias` with one row (column `value`) per text in `param`."""

    @abstractmethod
    def _pairs(
        self, pairs: Mapping[str, int], alias: str
    ) -> AbstractContextManager[tuple[str, list[Any]]]:
        """A FROM item named `alias` with columns (host, holder) holding `pairs`; yields
        (the FROM item's SQL, its positional parameters)."""

    #: What the driver raises when a statement breaks a constraint (a unique key, …).
    INTEGRITY_ERROR: ClassVar[type[Exception]]

    def _new_id(self, inserted: Cursor, table: str) -> NewId:
        """The id of the row `inserted` (an `INSERT INTO table … RETURNING id`) wrote, for
        the statements after it (here read back at once)."""
        (row_id,) = inserted.fetchall()[0]
        return NewId("?", (row_id,), lambda: row_id)

    def _batched(self) -> AbstractContextManager[Any]:
        """Around statements: sent together where the dialect can (PostgreSQL's
        pipeline: one round trip for all those sent before a result is read, BEGIN and
        COMMIT included), so a reader or a transaction holding a lock waits on the
        network less."""
        return nullcontext()

    @contextmanager
    def _write_batch(self) -> Iterator[None]:
        """`_write`, for a transaction that reads no statement's result before it ends:
        where the dialect can (PostgreSQL), BEGIN, its statements and COMMIT are sent
        together and answered in one round trip, so a lock it takes is held for no wait
        on the client. A statement that fails rolls it back, and its error is raised."""
        with self._batched(), self._write():
            yield

    # -- dialect hooks: locks (SQLite holds the whole database's write lock instead) ------

    def _for(self, clause: str) -> str:
        """A row-locking clause (`FOR SHARE`, …) to append to a SELECT, if the dialect has
        row locks."""
        return ""

    def _lock_pools(self, pools: Sequence[str]) -> None:
        """Inside a write: serialize with every other writer counting leases in `pools`."""

    def _lock_intake(self) -> None:
        """Inside a write: serialize request creation (so ids are given in commit order)
        and host imports."""

    # -- dialect hooks: telemetry expressions ---------------------------------------------

    @abstractmethod
    def _indexed_by(self, index: str) -> str:
        """An index hint after a table name, or ''."""

    @abstractmethod
    def _epoch_s(self, ts: str) -> str:
        """Whole Unix seconds of the ISO timestamp expression `ts` (SQLite's unixepoch)."""

    @abstractmethod
    def _seconds_between(self, later: str, earlier: str) -> str:
        """Seconds from `earlier` to `later` (both ISO timestamps), as a float."""

    @abstractmethod
    def _total(self, expr: str) -> str:
        """The float sum of `expr` over a group (SQLite's TOTAL, summed in order)."""

    # -- migrations -----------------------------------------------------------------------

    def _prepare_migrations(self) -> None:
        """Inside the migration's write: make sure `schema_migrations` exists."""
        self._exec(schema.migrations_table(self.DIALECT))

    def _migrate(self) -> None:
        with self._write():
            self._prepare_migrations()
            current = self._version()
            self._refuse_newer(current)
            for version, statements in schema.migrations(self.DIALECT, current):
                for statement in statements:
                    self._exec(statement)
                self._exec(
                    "INSERT INTO schema_migrations (version, applied) VALUES (?, ?)",
                    (version, utc_now()),
                )

    def _refuse_newer(self, current: int) -> None:
        if current > schema.LATEST_VERSION:
            raise StoreError(
                f"database {self._label} has schema version {current}, newer than this "
                f"maas-lib understands ({schema.LATEST_VERSION}); upgrade maas-lib"
            )

    def _version(self) -> int:
        row = self._exec("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    # -- bulk copy: `maas_lib.store.copy` owns the copy, these are what it asks of a store -

    def table_rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Every row of `table`, ordered by `order_by` (columns)."""
        return self._rows(f"SELECT * FROM {table} ORDER BY {order_by}")

    def row_count(self, table: str) -> int:
        (n,) = self._exec(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(n)

    def column_types(self, table: str) -> dict[str, str]:
        """`table`'s columns and their declared types (lower case)."""
        return self._column_types(table)

    def bulk_write(self) -> AbstractContextManager[None]:
        """One write transaction around `insert_rows` calls: all or nothing."""
        return self._write()

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        """Insert `rows` into `table` as they are, ids included (inside `bulk_write`)."""
        self._many(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})",
            rows,
        )

    def after_insert_rows(self, table: str) -> None:
        """After rows with explicit ids were inserted into `table` (e.g. move a sequence)."""
        self._after_copy(table)

    @abstractmethod
    def _column_types(self, table: str) -> dict[str, str]:
        """`table`'s columns and their declared types (lower case)."""

    def _after_copy(self, table: str) -> None:
        """After rows with explicit ids were copied into `table` (e.g. move a sequence)."""

    # -- events (written inside the caller's transaction) ---------------------------------

    def _event(
        self,
        kind: str,
        message: str,
        *,
        request_id: int | NewId | None = None,
        host: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        request_sql, request_params = id_sql(request_id)
        self._exec(
            "INSERT INTO events (ts, kind, request_id, host, actor, message, data) "
            f"VALUES (?, ?, {request_sql}, ?, ?, ?, ?)",
            (
                utc_now(),
                kind,
                *request_params,
                host,
                actor,
                message,
                json.dumps(data) if data else None,
            ),
        )

    def _access_changed(self) -> None:
        """Inside a write that changes a host's pool, adds a host or changes a pool's
        grants (holding the intake lock): a submission authorized before it is decided
        again (`SqlAccess.create_request_once`)."""
        self._exec(
            "INSERT INTO access_version (id, version) VALUES (1, 1) ON CONFLICT (id) "
            "DO UPDATE SET version = access_version.version + 1"
        )
