"""Where a store is: `MAAS_DB` or the default file, and which backend a URL names."""

from __future__ import annotations

import os
from pathlib import Path

from maas_lib.errors import InputError


def default_db_url() -> str:
    """`MAAS_DB` if set, else a per-user data file (XDG data dir)."""
    env = os.environ.get("MAAS_DB")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "maas-lib" / "maas.db")


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def sqlite_path(target: str) -> str:
    """The file of a SQLite store named by a path or `sqlite:///path` (not PostgreSQL)."""
    if target.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        return target[len("sqlite:///") :]
    if "://" in target:
        raise InputError(
            f"unsupported database URL {target!r} (use a path, sqlite:///path or postgresql://…)"
        )
    return target
