"""Open the job-queue store named by a URL or path."""

from __future__ import annotations

import os
from pathlib import Path

from maas_lib.errors import InputError, StoreError
from maas_lib.store.base import (
    CatalogStore,
    Event,
    LeaseStore,
    NewRequest,
    PatternMatch,
    QueueStore,
    StatsStore,
    StepStore,
    Store,
)

__all__ = [
    "CatalogStore",
    "Event",
    "LeaseStore",
    "NewRequest",
    "PatternMatch",
    "QueueStore",
    "StatsStore",
    "StepStore",
    "Store",
    "default_db_url",
    "open_store",
]


def default_db_url() -> str:
    """`MAAS_DB` if set, else a per-user data file (XDG data dir)."""
    env = os.environ.get("MAAS_DB")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "maas-lib" / "maas.db")


def open_store(url: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """Open (migrating if needed) the store at `url`. A missing store (no SQLite file; no
    maas-lib tables in the PostgreSQL schema) is created if `create` (a SQLite file mode
    0600), else refused with `StoreUnusable` naming it.

    Accepts a filesystem path, `sqlite:///path`, or a PostgreSQL URL
    (`postgresql://user:password@host:port/dbname?…`, also `postgres://`); `None` means
    `default_db_url()` (`MAAS_DB`). A PostgreSQL URL takes every libpq parameter, plus
    one of ours: `?schema=name` keeps the store in that schema, created if missing, by
    setting the connection's `search_path` to it (so several stores, e.g. tests, can
    share one database). libpq's own `options=-csearch_path=name` works too, but then
    the schema must exist already. A password in the URL never appears in `store.url`
    or in an error message.
    """
    target = str(url) if url is not None else default_db_url()
    if target.startswith(("postgresql://", "postgres://")):
        try:
            from maas_lib.store.postgres import PostgresStore  # psycopg: PostgreSQL only
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL stores need psycopg 3 (pip install 'psycopg[binary]'): {exc}"
            ) from None
        return PostgresStore(target, create=create)
    if target.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        target = target[len("sqlite:///") :]
    elif "://" in target:
        raise InputError(
            f"unsupported database URL {target!r} (use a path, sqlite:///path or postgresql://…)"
        )
    from maas_lib.store.sqlite import SqliteStore  # a backend loads when it is opened

    return SqliteStore(target, create=create)
