"""Open the job-queue store named by a URL or path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from maas_lib.errors import StoreError
from maas_lib.store.urls import default_db_url, is_postgres_url, sqlite_path

if TYPE_CHECKING:
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
#: The interfaces (`maas_lib.store.base`, with the models) load on first use (PEP 562): a
#: reader that needs none of them (`host_reader`) does not pay for pydantic.
_BASE_NAMES = frozenset(__all__) - {"default_db_url", "open_store"}


def __getattr__(name: str) -> Any:
    if name not in _BASE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from maas_lib.store import base  # the models: on first use, see _BASE_NAMES

    return getattr(base, name)


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
    if is_postgres_url(target):
        try:
            from maas_lib.store.postgres import PostgresStore  # psycopg: PostgreSQL only
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL stores need psycopg 3 (pip install 'psycopg[binary]'): {exc}"
            ) from None
        return PostgresStore(target, create=create)
    path = sqlite_path(target)
    from maas_lib.store.sqlite import SqliteStore  # a backend loads when it is opened

    return SqliteStore(path, create=create)
