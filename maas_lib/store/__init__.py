"""Open the job-queue store named by a URL or path."""

from __future__ import annotations

import os
from pathlib import Path

from maas_lib.errors import InputError
from maas_lib.store.base import Event, LeaseResult, NewRequest, PatternMatch, Store

__all__ = [
    "Event",
    "LeaseResult",
    "NewRequest",
    "PatternMatch",
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


def open_store(url: str | os.PathLike[str] | None = None) -> Store:
    """Open (creating and migrating if needed) the store at `url`.

    Accepts a filesystem path or `sqlite:///path`; `None` means `default_db_url()`.
    """
    target = str(url) if url is not None else default_db_url()
    if target.startswith(("postgresql://", "postgres://")):
        raise InputError("PostgreSQL stores are not supported by this version of maas-lib yet")
    if target.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        target = target[len("sqlite:///") :]
    elif "://" in target:
        raise InputError(f"unsupported database URL {target!r} (use a path or sqlite:///path)")
    from maas_lib.store.sqlite import SqliteStore

    return SqliteStore(target)
