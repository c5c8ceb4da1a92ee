"""Registered hosts, read without the store's models: the host lookup of `maasctl bmc
status`, whose start-up would otherwise be most of its run (the store's interfaces load
pydantic and every model, which alone take longer than reading a few BMCs).

`match_hosts` and `host_rows` are the hosts queries of every store (`SqlCatalog` runs
them too). `HostReader` runs them on a SQLite store that needs nothing done before it is
read: an existing file, in WAL mode, at the latest schema version. For anything else
(PostgreSQL, no file, an older schema, any SQLite error) `open_host_reader` says None and
the caller opens the store as usual, which creates, migrates or refuses it and says why.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Protocol

from maas_lib.enums import BmcProtocol, HostStatus
from maas_lib.errors import InputError
from maas_lib.patterns import PatternMatch, glob_matches, literal_prefix
from maas_lib.store import schema
from maas_lib.store.sqlite_hooks import SqliteHooks
from maas_lib.store.urls import default_db_url, is_postgres_url, sqlite_path

#: Seconds a read waits for SQLite's lock (a WAL reader seldom does); then the store
#: proper, with its own wait, takes over.
_BUSY_TIMEOUT_S = 1.0


class HostQueries(Protocol):
    """The statement hooks the hosts queries use (`SqlBase`'s)."""

    def _exec(self, sql: str, params: Any = ()) -> Any: ...

    def _rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]: ...

    def _list(self, values: Sequence[Any]) -> Any: ...

    def _in(self, column: str, param: str = "?") -> str: ...


def _prefix_upper_bound(prefix: str) -> str:
    # Every string that starts with `prefix` sorts below prefix + U+10FFFF.
    return prefix + "\U0010ffff"


def match_hosts(db: HostQueries, names: Sequence[str], globs: Sequence[str]) -> PatternMatch:
    """Resolve exact names and shell-style globs against registered hosts."""
    status: dict[str, HostStatus] = {}
    if names:
        for name, st in db._exec(
            f"SELECT name, status FROM hosts WHERE {db._in('name')}", (db._list(names),)
        ):
            status[name] = HostStatus(st)
    hits: dict[str, list[str]] = {}
    for pattern in globs:
        prefix = literal_prefix(pattern)
        if prefix:
            rows = db._exec(
                "SELECT name, status FROM hosts WHERE name >= ? AND name < ? ORDER BY name",
                (prefix, _prefix_upper_bound(prefix)),
            ).fetchall()
        else:
            rows = db._exec("SELECT name, status FROM hosts ORDER BY name").fetchall()
        candidates = dict(rows)
        hits[pattern] = glob_matches(pattern, candidates)
        status.update((n, HostStatus(candidates[n])) for n in hits[pattern])
    return PatternMatch(status=status, glob_hits=hits)


def host_rows(db: HostQueries, names: Sequence[str]) -> list[dict[str, Any]]:
    """The named hosts' rows in the order given (unknown names are left out)."""
    rows = {
        r["name"]: r
        for r in db._rows(f"SELECT * FROM hosts WHERE {db._in('name')}", (db._list(names),))
    }
    return [rows[n] for n in names if n in rows]


class HostReader(SqliteHooks):
    """Hosts read from a SQLite store's file (see the module's doc)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def match_hosts(self, names: Sequence[str], globs: Sequence[str]) -> PatternMatch:
        return match_hosts(self, names, globs)

    def ipmi_hosts(self, names: Sequence[str]) -> list[SimpleNamespace] | None:
        """The named hosts as the attributes `BmcTarget.from_host` reads, typed as a
        `HostRecord` has them, if every one is a plain IPMI host (no fallback BMC: what
        the stored row holds is what the model would say); otherwise None, and the
        caller reads them as `HostRecord`s."""
        hosts = []
        for row in host_rows(self, names):
            if (
                row.get("bmc_protocol") != BmcProtocol.IPMI
                or row.get("bmc_fallback_protocol") is not None
                or row.get("bmc_fallback_address") is not None
            ):
                return None
            text = row.get("vars")
            try:
                host_vars = json.loads(text) if isinstance(text, str) else text or {}
            except ValueError:
                return None
            if not isinstance(host_vars, dict):
                return None
            hosts.append(
                SimpleNamespace(
                    **{
                        **row,
                        "bmc_protocol": BmcProtocol.IPMI,
                        "bmc_tls_verify": bool(row.get("bmc_tls_verify", True)),
                        "vars": host_vars,
                    }
                )
            )
        return hosts


def open_host_reader(url: str | None = None) -> HostReader | None:
    """A reader of the SQLite store at `url` (`maas_lib.store.open_store`'s names; None:
    `MAAS_DB`), or None where the store must be opened as usual (see the module's doc)."""
    target = url if url is not None else default_db_url()
    if is_postgres_url(target):
        return None
    try:
        path = sqlite_path(target)
    except InputError:
        return None
    conn: sqlite3.Connection | None = None
    try:
        # A file URI, read-only: a reader never creates or changes a database.
        conn = sqlite3.connect(
            f"file:{_uri_path(path)}?mode=ro",
            uri=True,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        if wal and version == schema.LATEST_VERSION:
            return HostReader(conn)
    except sqlite3.Error:
        pass
    if conn is not None:
        conn.close()
    return None


def _uri_path(path: str) -> str:
    """A path as a SQLite URI's path ('?', '#' and '%' escaped)."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
