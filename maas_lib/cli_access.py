"""`maasctl tokens`, `maasctl pools` and `maasctl audit`: access control for the HTTPS
API (docs/service.md), administered with direct database access. Each command is one
`Fleet` call; the changes are audited as `local:<OS user>`. Registered in `cli.py`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from maas_lib.output import emit_json, emit_table

_ROLES = ("viewer", "operator", "admin")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _fleet() -> Any:
    """The fleet of `maasctl --db` (the `_Ctx` the main group put on the context)."""
    return click.get_current_context().find_root().obj.fleet()


# -- tokens -----------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """API tokens for the HTTPS API (secrets are shown once, at creation)."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(_ROLES), help="What it may do.")
@click.option(
    "--team", "teams", multiple=True, metavar="TEAM", help="A team it acts for (repeatable)."
)
@click.option(
    "--expires",
    metavar="30d|YYYY-MM-DD",
    help="When it stops working: 12h, 30d, 2w from now, or the end of a day (UTC) "
    "[default: 90d; at most 3650d].",
)
@_JSON
def tokens_create(
    name: str, role: str, teams: tuple[str, ...], expires: str | None, as_json: bool
) -> None:
    """Create token NAME; print its secret (on stdout, this once: keep it now)."""
    created = _fleet().create_token(name, role, teams=teams, expires=expires)
    if as_json:
        emit_json(created)
        return
    t = created.token
    click.echo(created.secret)
    click.echo(
        f"token {t.name}: {t.role}, teams {', '.join(t.teams) or '(none)'}, expires "
        f"{t.expires}; the secret above is shown only now",
        err=True,
    )


def _standing(t: Any, now: str) -> str:
    if t.revoked:
        return "revoked"
    return "expired" if t.expires <= now else "active"


def _token_row(t: Any, now: str) -> list[Any]:
    teams = ", ".join(t.teams)
    return [t.name, t.role, teams, _standing(t, now), t.created, t.expires, t.last_used or "never"]


@tokens.command("list")
@_JSON
def tokens_list(as_json: bool) -> None:
    """List tokens (never their secrets)."""
    found = _fleet().tokens()
    if as_json:
        emit_json(found)
        return
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    emit_table(
        None,
        ["token", "role", "teams", "standing", "created", "expires", "last used"],
        [_token_row(t, now) for t in found],
    )


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke token NAME now: it authenticates no more."""
    t = _fleet().revoke_token(name)
    click.echo(f"token {t.name} revoked ({t.revoked})")


# -- pools ------------------------------------------------------------------------------


@click.group()
def pools() -> None:
    """Pool ownership: which teams' operators may act on which pools."""


@pools.command("grant")
@click.argument("team")
@click.argument("pool")
@click.option("--destructive", is_flag=True, help="Also wipe and decommission (a separate grant).")
def pools_grant(team: str, pool: str, destructive: bool) -> None:
    """Make TEAM an owner of POOL (granting again sets --destructive as given)."""
    g = _fleet().grant_pool(team, pool, destructive=destructive)
    extra = ", destructive actions included" if g.destructive else ""
    click.echo(f"team {g.team} owns pool {g.pool}{extra}")


@pools.command("revoke")
@click.argument("team")
@click.argument("pool")
def pools_revoke(team: str, pool: str) -> None:
    """Take TEAM's ownership of POOL away."""
    _fleet().revoke_pool(team, pool)
    click.echo(f"team {team} no longer owns pool {pool}")


@pools.command("owners")
@_JSON
def pools_owners(as_json: bool) -> None:
    """Which teams own which pools."""
    grants = _fleet().pool_owners()
    if as_json:
        emit_json(grants)
        return
    emit_table(
        None,
        ["pool", "team", "destructive"],
        [[g.pool, g.team, "yes" if g.destructive else "no"] for g in grants],
    )


# -- audit ------------------------------------------------------------------------------


@click.command()
@click.option("--principal", metavar="NAME", help="Only this principal's records.")
@click.option("--decision", type=click.Choice(["allowed", "refused"]), help="Only these.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="At most this many records.",
)
@_JSON
def audit(principal: str | None, decision: str | None, limit: int, as_json: bool) -> None:
    """The audit log, newest first: API calls that changed something, every refusal,
    tokens and grants."""
    records = _fleet().audit(principal=principal, decision=decision, limit=limit)
    if as_json:
        emit_json(records)
        return
    emit_table(
        None,
        ["id", "at", "principal", "verb", "target", "decision", "reason"],
        [[r.id, r.at, r.principal, r.verb, r.target, r.decision, r.reason] for r in records],
    )


COMMANDS = (tokens, pools, audit)
