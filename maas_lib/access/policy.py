"""Who may do what: pure functions of a principal, the pools involved and the pools'
ownership grants (no I/O; `guard` gathers the facts and writes the audit record).

The model is Ironic's node owners: pools have owner teams. A viewer reads. An operator
may also submit (and dry-run) when *every* host named is in a pool one of its teams
owns — destructive actions (wipe, decommission) need that team's destructive grant on
the pool — and may cancel its own requests, or any request touching a pool one of its
teams owns. An admin may do everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from maas_lib.access.models import PoolGrant, Role
from maas_lib.access.principal import Principal
from maas_lib.enums import Action
from maas_lib.errors import AccessDenied

#: Actions that destroy what is on a host (or the host's place in the fleet).
DESTRUCTIVE_ACTIONS = frozenset({Action.WIPE, Action.DECOMMISSION})
#: How many pools a refusal names before "and N more".
_SHOWN = 5


@dataclass(frozen=True)
class Decision:
    """An authorization decision: `allowed`, why (`reason`, one line), and the pools the
    principal lacks rights on (`pools`, sorted; empty when allowed or not pool-related)."""

    allowed: bool
    reason: str
    pools: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise `AccessDenied` if refused."""
        if not self.allowed:
            raise AccessDenied(self.reason, pools=self.pools)


def _allow(reason: str) -> Decision:
    return Decision(True, reason)


def _role_refusal(principal: Principal, what: str, needed: Role) -> Decision:
    return Decision(False, f"{principal.name} is a {principal.role}; {what} needs {needed}")


def _named(pools: Iterable[str]) -> str:
    names = sorted(pools)
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"pool{'s' if len(names) > 1 else ''} {shown}{more}"


def owned_pools(
    principal: Principal, grants: Iterable[PoolGrant], *, destructive: bool
) -> set[str]:
    """Pools one of the principal's teams owns (with the destructive grant, if asked)."""
    teams = set(principal.teams)
    return {g.pool for g in grants if g.team in teams and (g.destructive or not destructive)}


def may_read(principal: Principal) -> Decision:
    """Every role reads: requests, status, steps, hosts, stats, in flight, workers."""
    return _allow(f"{principal.role} may read")


def may_act(principal: Principal, verb: str) -> Decision:
    """Does the principal's role allow `verb` (submit, plan, cancel) at all, before any
    pool is looked at? Those need an operator."""
    if principal.at_least(Role.OPERATOR):
        return _allow(f"{principal.role} may {verb}")
    return _role_refusal(principal, verb, Role.OPERATOR)


def may_admin(principal: Principal, what: str = "this") -> Decision:
    """Admin-only calls (the audit log, tokens, grants)."""
    if principal.at_least(Role.ADMIN):
        return _allow("admin")
    return _role_refusal(principal, what, Role.ADMIN)


def may_submit(
    principal: Principal,
    action: Action | str,
    pools: Iterable[str],
    grants: Iterable[PoolGrant],
    *,
    verb: str = "submit",
) -> Decision:
    """May `principal` submit (or plan: `verb`) `action` on hosts in `pools`?"""
    act = Action(action)
    if principal.at_least(Role.ADMIN):
        return _allow("admin")
    if not principal.at_least(Role.OPERATOR):
        return _role_refusal(principal, verb, Role.OPERATOR)
    needed = set(pools)
    destructive = act in DESTRUCTIVE_ACTIONS
    grants = list(grants)
    missing = needed - owned_pools(principal, grants, destructive=False)
    if missing:
        return Decision(
            False,
            f"{principal.name} may not {verb} on {_named(missing)}: no team of its "
            f"({', '.join(principal.teams) or 'none'}) owns "
            f"{'them' if len(missing) > 1 else 'it'}",
            tuple(sorted(missing)),
        )
    if destructive:
        missing = needed - owned_pools(principal, grants, destructive=True)
        if missing:
            return Decision(
                False,
                f"{act} is destructive: {principal.name} needs the destructive grant on "
                f"{_named(missing)}",
                tuple(sorted(missing)),
            )
    return _allow(f"its teams own every pool ({_named(needed)})")


def may_cancel(
    principal: Principal,
    submitted_by: str,
    pools: Iterable[str],
    grants: Iterable[PoolGrant],
) -> Decision:
    """May `principal` cancel a request `submitted_by` someone, on hosts in `pools`?"""
    if principal.at_least(Role.ADMIN):
        return _allow("admin")
    if not principal.at_least(Role.OPERATOR):
        return _role_refusal(principal, "cancel", Role.OPERATOR)
    if submitted_by == principal.name:
        return _allow("its own request")
    touched = set(pools)
    shared = touched & owned_pools(principal, grants, destructive=False)
    if shared:
        return _allow(f"the request touches {_named(shared)}, which its teams own")
    return Decision(
        False,
        f"{principal.name} may not cancel a request of {submitted_by}: no team of its "
        f"owns any of its pools",
        tuple(sorted(touched)),
    )
