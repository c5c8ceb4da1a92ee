"""Access control's tables in portable SQL: API tokens (their SHA-256 only), pool owners,
the audit log, and idempotent submissions (see `sql_base` for the hooks it relies on).

Every change writes its audit record in the same transaction, so no grant, token or
accepted API submission exists without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from maas_lib.access.models import AuditEntry, AuditRecord, Outcome, PoolGrant, TokenInfo
from maas_lib.errors import IdempotencyConflict, InputError, NotFound, StoreError
from maas_lib.store.base import Authorize, IdempotencyKey, NewRequest
from maas_lib.store.sql_base import Cursor, NewId, SqlBase
from maas_lib.timeutil import utc_now

_ALLOWED = Outcome.ALLOWED


def _token(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        name=row["name"],
        role=row["role"],
        teams=json.loads(row["teams"]),
        created=row["created"],
        expires=row["expires"],
        revoked=row["revoked"],
        last_used=row["last_used"],
    )


def _audit_insert(target: str = "?") -> str:
    """An audit record's INSERT; `target`: the SQL of its target's value."""
    return (
        "INSERT INTO audit_log (at, principal, verb, target, decision, reason, detail) "
        f"VALUES (?, ?, ?, {target}, ?, ?, ?)"
    )


_AUDIT_INSERT = _audit_insert()
#: The access version (`schema.ACCESS_GATE`): 0 until a pool or grant first changes.
_ACCESS_VERSION = "SELECT COALESCE(MAX(version), 0) FROM access_version"
#: How often a submission is decided again, on SQLite, when a host's pool or a pool's
#: grants keep changing between its reads and its write (PostgreSQL: `_run`'s retries).
_DECISIONS = 12


def _version(sent: Cursor) -> int:
    return int(sent.fetchall()[0][0])


class _AccessChanged(Exception):
    """A host's pool or a pool's grants changed after a submission was authorized."""


def _audit_params(entry: AuditEntry, target: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    return (
        utc_now(),
        entry.principal,
        entry.verb,
        *((entry.target,) if target is None else target),
        str(entry.decision),
        entry.reason,
        json.dumps(entry.detail, sort_keys=True) if entry.detail else None,
    )


class SqlAccess(SqlBase):
    def _audit(self, entry: AuditEntry, target: tuple[str, tuple[Any, ...]] | None = None) -> None:
        """Append an audit record inside the caller's write (nothing is read back: in a
        batched write the intake lock's holder does not wait for it). `target`: its
        target as SQL and parameters, instead of `entry.target`."""
        if target is None:
            self._exec(_AUDIT_INSERT, _audit_params(entry))
        else:
            self._exec(_audit_insert(target[0]), _audit_params(entry, target[1]))

    def _changed(
        self,
        actor: str,
        verb: str,
        target: str,
        *,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Audit an allowed change inside the caller's write."""
        self._audit(
            AuditEntry(
                principal=actor,
                verb=verb,
                target=target,
                decision=_ALLOWED,
                reason=reason,
                detail=detail or {},
            )
        )

    # -- tokens ---------------------------------------------------------------------------

    def add_token(self, token: TokenInfo, token_hash: str, *, actor: str) -> None:
        with self._write():
            inserted = self._exec(
                "INSERT INTO api_tokens (name, token_hash, role, teams, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (
                    token.name,
                    token_hash,
                    str(token.role),
                    json.dumps(token.teams),
                    token.created,
                    token.expires,
                ),
            ).rowcount
            if not inserted:
                raise InputError(f"a token named {token.name} exists already (tokens list)")
            self._changed(
                actor,
                "tokens.create",
                f"token:{token.name}",
                detail={"role": str(token.role), "teams": token.teams, "expires": token.expires},
            )

    def token_by_hash(self, token_hash: str) -> TokenInfo | None:
        rows = self._rows("SELECT * FROM api_tokens WHERE token_hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    def list_tokens(self) -> list[TokenInfo]:
        return [_token(r) for r in self._rows("SELECT * FROM api_tokens ORDER BY name")]

    def revoke_token(self, name: str, *, actor: str) -> TokenInfo:
        with self._write():
            rows = self._rows("SELECT * FROM api_tokens WHERE name = ?", (name,))
            if not rows:
                raise NotFound(f"unknown token {name}")
            if rows[0]["revoked"] is None:
                self._exec("UPDATE api_tokens SET revoked = ? WHERE name = ?", (utc_now(), name))
                self._changed(actor, "tokens.revoke", f"token:{name}")
            return _token(self._rows("SELECT * FROM api_tokens WHERE name = ?", (name,))[0])

    def touch_token(self, name: str, at: str) -> None:
        with self._write():
            self._exec("UPDATE api_tokens SET last_used = ? WHERE name = ?", (at, name))

    # -- pool owners ----------------------------------------------------------------------

    def grant_pool(self, grant: PoolGrant, *, actor: str) -> None:
        with self._write():
            # As host imports: serialized with submissions, which are authorized against
            # the access version this bumps (`create_request_once`).
            self._lock_intake()
            known = self._exec(
                "SELECT 1 FROM hosts WHERE pool = ? LIMIT 1", (grant.pool,)
            ).fetchall()
            if not known:
                raise NotFound(f"unknown pool {grant.pool} (no registered host is in it)")
            self._exec(
                "INSERT INTO pool_owners (team, pool, destructive, granted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (team, pool) DO UPDATE SET destructive = excluded.destructive, "
                "granted = excluded.granted",
                (grant.team, grant.pool, grant.destructive, utc_now()),
            )
            self._access_changed()
            self._changed(
                actor,
                "pools.grant",
                f"pool:{grant.pool}",
                detail={"team": grant.team, "destructive": grant.destructive},
            )

    def _grant_owners(self, grants: Sequence[PoolGrant], *, actor: str) -> int:
        """Inside a write: add non-destructive grants the inventory names (`pool_owner`),
        leaving existing grants as they are; audit each new one. How many were new."""
        now = utc_now()
        new = 0
        for g in grants:
            added = self._exec(
                "INSERT INTO pool_owners (team, pool, destructive, granted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (team, pool) DO NOTHING",
                (g.team, g.pool, False, now),
            ).rowcount
            if added:
                new += 1
                self._changed(
                    actor,
                    "pools.grant",
                    f"pool:{g.pool}",
                    reason="inventory pool_owner",
                    detail={"team": g.team, "destructive": False},
                )
        return new

    def revoke_pool(self, team: str, pool: str, *, actor: str) -> None:
        with self._write():
            self._lock_intake()  # as `grant_pool`
            removed = self._exec(
                "DELETE FROM pool_owners WHERE team = ? AND pool = ?", (team, pool)
            ).rowcount
            if not removed:
                raise NotFound(f"team {team} does not own pool {pool}")
            self._access_changed()
            self._changed(actor, "pools.revoke", f"pool:{pool}", detail={"team": team})

    def pool_grants(self, pools: Sequence[str] | None = None) -> list[PoolGrant]:
        sql = "SELECT team, pool, destructive FROM pool_owners"
        params: tuple[Any, ...] = ()
        if pools is not None:
            sql += f" WHERE {self._in('pool')}"
            params = (self._list(list(pools)),)
        return [
            PoolGrant(team=r["team"], pool=r["pool"], destructive=bool(r["destructive"]))
            for r in self._rows(sql + " ORDER BY pool, team", params)
        ]

    def host_pools(self, hosts: Sequence[str]) -> dict[str, str]:
        return dict(
            self._exec(
                f"SELECT name, pool FROM hosts WHERE {self._in('name')}",
                (self._list(list(hosts)),),
            ).fetchall()
        )

    def host_pools_and_grants(self, hosts: Sequence[str]) -> tuple[dict[str, str], list[PoolGrant]]:
        with self._batched():  # PostgreSQL: both results in one round trip
            read = self._read_access(hosts)
        return read()

    def _read_access(
        self, hosts: Sequence[str]
    ) -> Callable[[], tuple[dict[str, str], list[PoolGrant]]]:
        """Send what `host_pools_and_grants` reads; the function returned reads it. Both
        statements are sent before either is read (in PostgreSQL's pipeline: with
        whatever else is sent before the first result is read, in one round trip)."""
        names = (self._list(list(hosts)),)
        pools = self._exec(f"SELECT name, pool FROM hosts WHERE {self._in('name')}", names)
        grants = self._exec(
            "SELECT team, pool, destructive FROM pool_owners WHERE pool IN "
            f"(SELECT pool FROM hosts WHERE {self._in('name')}) ORDER BY pool, team",
            names,
        )
        return lambda: (
            dict(pools.fetchall()),
            [
                PoolGrant(team=team, pool=pool, destructive=bool(destructive))
                for team, pool, destructive in grants.fetchall()
            ],
        )

    def request_pools(self, request_id: int) -> tuple[str, list[str]]:
        row = self._exec("SELECT submitted_by FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown request id {request_id}")
        pools = [
            p
            for (p,) in self._exec(
                "SELECT DISTINCT h.pool FROM request_hosts rh JOIN hosts h ON h.name = rh.host "
                "WHERE rh.request_id = ? ORDER BY h.pool",
                (request_id,),
            )
        ]
        return row[0], pools

    # -- audit log ------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> int:
        with self._write():
            (audit_id,) = self._exec(
                _AUDIT_INSERT + " RETURNING id", _audit_params(entry)
            ).fetchall()[0]
            return int(audit_id)

    def audit(
        self,
        *,
        principal: str | None = None,
        decision: Outcome | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditRecord]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("principal = ?", principal),
            ("decision = ?", None if decision is None else str(decision)),
            ("id < ?", before_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [
            AuditRecord.model_validate({**r, "detail": json.loads(r["detail"] or "{}")})
            for r in rows
        ]

    # -- idempotent submissions -----------------------------------------------------------

    def _key_row(self, principal: str, key: str) -> tuple[int, str] | None:
        rows = self._exec(
            "SELECT request_id, body_hash FROM idempotency_keys WHERE principal = ? AND key = ?",
            (principal, key),
        ).fetchall()
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def idempotent_request(self, principal: str, key: str) -> tuple[int, str] | None:
        return self._key_row(principal, key)

    def create_request_once(
        self,
        request: NewRequest,
        idempotency: IdempotencyKey | None = None,
        *,
        authorize: Authorize | None = None,
    ) -> tuple[int, bool]:
        for _ in range(_DECISIONS):
            try:
                return self._create_once(request, idempotency, authorize)
            except _AccessChanged:
                continue  # decided again, on what the store holds now
        raise StoreError(
            f"database {self._label}: gave up after {_DECISIONS} attempts: pools or grants "
            "kept changing while the submission was authorized"
        )

    def _create_once(
        self,
        request: NewRequest,
        idempotency: IdempotencyKey | None,
        authorize: Authorize | None,
    ) -> tuple[int, bool]:
        # What `authorize` decides on, read before the intake lock (one round trip on
        # PostgreSQL). The access version is read before the hosts' pools and grants, so
        # a change committed after it is read bumps it past what the gate expects. (The
        # key is not read first: a caller reads it before checking the submission, as
        # GuardedFleet._replay does, and a key used since breaks the key's primary key.)
        authorized_at = None
        if authorize is not None:
            with self._batched():  # every result read after it
                version = self._exec(_ACCESS_VERSION)
                read_access = self._read_access(request.hosts)
            authorized_at = _version(version)
            authorize(*read_access())
        try:
            # Nothing is read back until COMMIT (PostgreSQL: BEGIN, the lock, the gate,
            # every write and COMMIT in one pipeline round trip), so the intake lock is
            # held for no client round trip. Request creation is serialized (PostgreSQL:
            # an advisory lock; SQLite: the write lock) so that ids follow commit order;
            # the writes that bump the access version take the same lock, so none
            # commits between the gate and this COMMIT.
            with self._write_batch():
                self._lock_intake()
                if authorized_at is not None:
                    self._gate_access(authorized_at)
                request_id = self._insert_and_audit(request, idempotency)
        except self.INTEGRITY_ERROR:
            # The key's primary key: the key was used before (a retry of the same
            # submission may have committed since the caller read it).
            if idempotency is None:
                raise
            found = self._key_row(idempotency.principal, idempotency.key)
            if found is None:
                raise
            return self._replayed(found, idempotency)
        return request_id.value(), True

    @staticmethod
    def _replayed(found: tuple[int, str], idempotency: IdempotencyKey) -> tuple[int, bool]:
        if found[1] != idempotency.body_hash:
            raise IdempotencyConflict(
                f"Idempotency-Key was used before for a different submission (request {found[0]})"
            )
        return found[0], False

    def _gate_access(self, version: int) -> None:
        """Inside the intake's write: stop (`_AccessChanged`, decided again) if a host's
        pool or a pool's grants changed since the access version was `version`."""
        if _version(self._exec(_ACCESS_VERSION)) != version:
            raise _AccessChanged

    def _insert_and_audit(self, request: NewRequest, idempotency: IdempotencyKey | None) -> NewId:
        """A checked request, its idempotency key and its audit record (inside the write)."""
        request_id = self._insert_request(request)
        if idempotency is not None:
            self._exec(
                "INSERT INTO idempotency_keys (principal, key, body_hash, request_id, "
                f"created) VALUES (?, ?, ?, {request_id.sql}, ?)",
                (
                    idempotency.principal,
                    idempotency.key,
                    idempotency.body_hash,
                    *request_id.params,
                    utc_now(),
                ),
            )
        self._audit(
            AuditEntry(
                principal=request.submitted_by,
                verb="submit",
                decision=_ALLOWED,
                detail={
                    "action": str(request.action),
                    "hosts": len(request.hosts),
                    "patterns": request.patterns[:20],
                    **({"image": request.image} if request.image else {}),
                },
            ),
            target=request_id.labelled("request:"),
        )
        return request_id
