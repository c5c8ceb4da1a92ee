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
from maas_lib.errors import IdempotencyConflict, InputError, NotFound
from maas_lib.store.base import IdempotencyKey, NewRequest
from maas_lib.store.sql_base import SqlBase
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


_AUDIT_INSERT = (
    "INSERT INTO audit_log (at, principal, verb, target, decision, reason, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _audit_params(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        utc_now(),
        entry.principal,
        entry.verb,
        entry.target,
        str(entry.decision),
        entry.reason,
        json.dumps(entry.detail, sort_keys=True) if entry.detail else None,
    )


class SqlAccess(SqlBase):
    def _audit(self, entry: AuditEntry) -> None:
        """Append an audit record inside the caller's write (nothing is read back: in a
        batched write the intake lock's holder does not wait for it)."""
        self._exec(_AUDIT_INSERT, _audit_params(entry))

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
            self._changed(
                actor,
                "pools.grant",
                f"pool:{grant.pool}",
                detail={"team": grant.team, "destructive": grant.destructive},
            )

    def _grant_owners(self, grants: Sequence[PoolGrant], *, actor: str) -> None:
        """Inside a write: add non-destructive grants the inventory names (`pool_owner`),
        leaving existing grants as they are; audit each new one."""
        now = utc_now()
        for g in grants:
            added = self._exec(
                "INSERT INTO pool_owners (team, pool, destructive, granted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (team, pool) DO NOTHING",
                (g.team, g.pool, False, now),
            ).rowcount
            if added:
                self._changed(
                    actor,
                    "pools.grant",
                    f"pool:{g.pool}",
                    reason="inventory pool_owner",
                    detail={"team": g.team, "destructive": False},
                )

    def revoke_pool(self, team: str, pool: str, *, actor: str) -> None:
        with self._write():
            removed = self._exec(
                "DELETE FROM pool_owners WHERE team = ? AND pool = ?", (team, pool)
            ).rowcount
            if not removed:
                raise NotFound(f"team {team} does not own pool {pool}")
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
        names = (self._list(list(hosts)),)
        # Both sent before either is read (one round trip in PostgreSQL's pipeline).
        pools = self._exec(f"SELECT name, pool FROM hosts WHERE {self._in('name')}", names)
        grants = self._exec(
            "SELECT team, pool, destructive FROM pool_owners WHERE pool IN "
            f"(SELECT pool FROM hosts WHERE {self._in('name')}) ORDER BY pool, team",
            names,
        )
        return dict(pools.fetchall()), [
            PoolGrant(team=team, pool=pool, destructive=bool(destructive))
            for team, pool, destructive in grants.fetchall()
        ]

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
        row = self._exec(
            "SELECT request_id, body_hash FROM idempotency_keys WHERE principal = ? AND key = ?",
            (principal, key),
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def idempotent_request(self, principal: str, key: str) -> tuple[int, str] | None:
        return self._key_row(principal, key)

    def create_request_once(
        self,
        request: NewRequest,
        idempotency: IdempotencyKey | None = None,
        *,
        authorize: Callable[[], None] | None = None,
    ) -> tuple[int, bool]:
        # Batched: the lock's holder waits on the network once per result it reads (the
        # key, the hosts' pools, their grants, the request's id), and once to commit.
        with self._batched(), self._write():
            # Request creation is serialized (PostgreSQL: an advisory lock; SQLite: the
            # write lock), so a key read now cannot be written by anyone else before we
            # commit: two retries of one submission never both create a request. Host
            # imports take the same lock, so no host changes pool between `authorize`
            # and the commit.
            self._lock_intake()
            if idempotency is not None:
                found = self._key_row(idempotency.principal, idempotency.key)
                if found is not None:
                    if found[1] != idempotency.body_hash:
                        raise IdempotencyConflict(
                            "Idempotency-Key was used before for a different submission "
                            f"(request {found[0]})"
                        )
                    return found[0], False
            if authorize is not None:
                authorize()
            request_id = self._insert_and_audit(request, idempotency)
        return request_id, True

    def _insert_and_audit(self, request: NewRequest, idempotency: IdempotencyKey | None) -> int:
        """A checked request, its idempotency key and its audit record (inside the write)."""
        request_id = self._insert_request(request)
        if idempotency is not None:
            self._exec(
                "INSERT INTO idempotency_keys (principal, key, body_hash, request_id, "
                "created) VALUES (?, ?, ?, ?, ?)",
                (
                    idempotency.principal,
                    idempotency.key,
                    idempotency.body_hash,
                    request_id,
                    utc_now(),
                ),
            )
        self._audit(
            AuditEntry(
                principal=request.submitted_by,
                verb="submit",
                target=f"request:{request_id}",
                decision=_ALLOWED,
                detail={
                    "action": str(request.action),
                    "hosts": len(request.hosts),
                    "patterns": request.patterns[:20],
                    **({"image": request.image} if request.image else {}),
                },
            )
        )
        return request_id
