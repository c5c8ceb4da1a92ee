"""Hosts, pools and the install-completion path, in portable SQL (see `sql_base` for
the hooks it relies on)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from maas_lib.access.models import PoolGrant
from maas_lib.errors import NotFound
from maas_lib.models import HostRecord, HostSpec, HostStatus, InstallReport, PoolSpec
from maas_lib.patterns import PatternMatch
from maas_lib.store import host_reader
from maas_lib.store.sql_base import SqlBase
from maas_lib.timeutil import utc_now

_HOST_COLUMNS = [name for name in HostSpec.model_fields if name != "name"]
# Re-imports update every declared field but never `status` (a host's standing) or `created`.
_UPSERT_HOST_SQL = (
    f"INSERT INTO hosts (name, {', '.join(_HOST_COLUMNS)}, created, updated) "
    f"VALUES (:name, {', '.join(':' + c for c in _HOST_COLUMNS)}, :now, :now) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _HOST_COLUMNS)
    + ", updated = excluded.updated"
)
_UPSERT_POOL_SQL = (
    "INSERT INTO pools (name, max_unavailable, updated) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET max_unavailable = excluded.max_unavailable, "
    "updated = excluded.updated"
)


class SqlCatalog(SqlBase):
    # -- hosts ----------------------------------------------------------------------------

    def upsert_hosts(
        self, hosts: Sequence[HostSpec], pools: Sequence[PoolSpec], *, actor: str
    ) -> tuple[int, int]:
        now = utc_now()
        names = [h.name for h in hosts]
        with self._write():
            self._lock_intake()  # two imports at once still count added/updated exactly
            existing = dict(
                self._exec(
                    f"SELECT name, pool FROM hosts WHERE {self._in('name')}",
                    (self._list(names),),
                ).fetchall()
            )
            new = [h for h in hosts if h.name not in existing]
            old = [h for h in hosts if h.name in existing]
            self._many(
                _UPSERT_HOST_SQL,
                [
                    {**h.model_dump(mode="json"), "vars": json.dumps(h.vars), "now": now}
                    for h in hosts
                ],
            )
            self._many(
                _UPSERT_POOL_SQL,
                [
                    (p.name, None if p.max_unavailable is None else str(p.max_unavailable), now)
                    for p in pools
                ],
            )
            # Inventory `pool_owner`: non-destructive grants, written with the hosts.
            granted = self._grant_owners(  # type: ignore[attr-defined]  # SqlAccess, in SqlStore
                [PoolGrant(team=t, pool=p.name) for p in pools for t in p.owners], actor=actor
            )
            if new or granted or any(existing[h.name] != h.pool for h in old):
                self._access_changed()
            self._event(
                "hosts_imported",
                f"{len(new)} hosts added, {len(old)} updated",
                actor=actor,
                data={
                    "added": len(new),
                    "updated": len(old),
                    "pools": sorted({h.pool for h in hosts}),
                },
            )
        return len(new), len(old)

    def list_hosts(self, pool: str | None = None) -> list[HostRecord]:
        if pool is None:
            rows = self._rows("SELECT * FROM hosts ORDER BY name")
        else:
            rows = self._rows("SELECT * FROM hosts WHERE pool = ? ORDER BY name", (pool,))
        return [HostRecord.model_validate(r) for r in rows]

    def get_host(self, name: str) -> HostRecord:
        rows = self._rows("SELECT * FROM hosts WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"unknown host {name}")
        return HostRecord.model_validate(rows[0])

    def get_hosts(self, names: Sequence[str]) -> list[HostRecord]:
        return [HostRecord.model_validate(r) for r in host_reader.host_rows(self, names)]

    def set_host_status(
        self, name: str, status: HostStatus, reason: str | None, *, actor: str
    ) -> HostStatus:
        with self._write():
            row = self._exec(
                "SELECT status FROM hosts WHERE name = ?" + self._for("FOR NO KEY UPDATE"), (name,)
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown host {name}")
            self._exec(
                "UPDATE hosts SET status = ?, status_reason = ?, updated = ? WHERE name = ?",
                (str(status), reason, utc_now(), name),
            )
            self._event(
                "host_status",
                f"{row[0]} -> {status}" + (f": {reason}" if reason else ""),
                host=name,
                actor=actor,
            )
        return HostStatus(row[0])

    def list_pools(self) -> list[PoolSpec]:
        owners: dict[str, list[str]] = {}
        for team, pool in self._exec("SELECT team, pool FROM pool_owners ORDER BY pool, team"):
            owners.setdefault(pool, []).append(team)
        return [
            PoolSpec(
                name=r["name"],
                max_unavailable=r["max_unavailable"],
                owners=owners.get(r["name"], []),
            )
            for r in self._rows(
                "SELECT p.name, pl.max_unavailable FROM "
                "(SELECT DISTINCT pool AS name FROM hosts) p "
                "LEFT JOIN pools pl ON pl.name = p.name ORDER BY p.name"
            )
        ]

    def match_hosts(self, names: Sequence[str], globs: Sequence[str]) -> PatternMatch:
        return host_reader.match_hosts(self, names, globs)

    # -- install-completion path ----------------------------------------------------------

    def set_install_target(self, host: str, image: str, request_id: int | None) -> None:
        with self._write():
            self._exec(
                "INSERT INTO install_targets (host, image, request_id, set_at) VALUES (?,?,?,?) "
                "ON CONFLICT (host) DO UPDATE SET image = excluded.image, "
                "request_id = excluded.request_id, set_at = excluded.set_at",
                (host, image, request_id, utc_now()),
            )

    def install_target(self, host: str) -> tuple[str, int | None] | None:
        row = self._exec(
            "SELECT image, request_id FROM install_targets WHERE host = ?", (host,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def add_install_report(self, host: str, image: str, reason: str | None) -> InstallReport:
        now = utc_now()
        with self._write():
            target = self._exec(
                "SELECT image, request_id FROM install_targets WHERE host = ?"
                + self._for("FOR UPDATE"),
                (host,),
            ).fetchone()
            expected, request_id = target if target else (None, None)
            outcome = "failed" if reason is not None else "succeeded"
            (report_id,) = self._exec(
                "INSERT INTO install_reports (host, image, outcome, reason, request_id, "
                "expected_image, reported) VALUES (?,?,?,?,?,?,?) RETURNING id",
                (host, image, outcome, reason, request_id, expected, now),
            ).fetchall()[0]
            self._exec("DELETE FROM install_targets WHERE host = ?", (host,))
            self._event(
                "install_reported",
                f"install of {image} {outcome}" + (f": {reason}" if reason else ""),
                request_id=request_id,
                host=host,
            )
        return InstallReport(
            id=report_id,
            host=host,
            image=image,
            outcome=outcome,
            reason=reason,
            request_id=request_id,
            expected_image=expected,
            reported=now,
        )

    def last_install_report_id(self) -> int:
        return self._exec("SELECT COALESCE(MAX(id), 0) FROM install_reports").fetchone()[0]

    def install_reports(self, host: str | None = None, after_id: int = 0) -> list[InstallReport]:
        sql = "SELECT * FROM install_reports WHERE id > ?"
        params: list[Any] = [after_id]
        if host is not None:
            sql += " AND host = ?"
            params.append(host)
        return [InstallReport.model_validate(r) for r in self._rows(sql + " ORDER BY id", params)]
