"""SQLite's statement hooks (`SqlBase`'s `_exec`, `_rows`, `_list`, `_in`) over a
connection: `SqliteStore` runs every query through them, and so does `HostReader`, which
reads hosts without loading the store (`host_reader`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any


class SqliteHooks:
    conn: sqlite3.Connection
    #: What a statement that breaks a constraint raises (`SqlBase.INTEGRITY_ERROR`).
    INTEGRITY_ERROR = sqlite3.IntegrityError

    def _exec(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def _rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur]

    # -- list parameters: one JSON array, read back with json_each ------------------------

    def _list(self, values: Sequence[Any]) -> str:
        return json.dumps(list(values))

    def _in(self, column: str, param: str = "?") -> str:
        return f"{column} IN (SELECT value FROM json_each({param}))"
