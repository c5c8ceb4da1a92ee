"""Pool disruption budgets: how many hosts of a pool may be down at once, fleet-wide."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from maas_lib.models import Amount, PoolSpec


@dataclass(frozen=True)
class PoolLimits:
    """Hosts of each pool that may be unavailable at once (absent pool: no limit)."""

    limits: dict[str, int]

    def room(self, pool: str, down: int) -> int | None:
        limit = self.limits.get(pool)
        return None if limit is None else max(0, limit - down)


def pool_limits(
    pool_sizes: Mapping[str, int],
    standing: Mapping[str, Amount | None],
    requested: Amount | None = None,
) -> PoolLimits:
    """The tighter of a pool's standing budget (inventory) and the request's own.

    A share is of the pool's registered hosts, rounded down, but never below 1: a budget
    that allowed nothing would stall every request on that pool forever.
    """
    limits: dict[str, int] = {}
    for pool, size in pool_sizes.items():
        candidates = [a for a in (standing.get(pool), requested) if a is not None]
        if candidates:
            limits[pool] = max(1, min(a.floor_of(size) for a in candidates))
    return PoolLimits(limits)


def pool_limits_for(
    pool_of: Mapping[str, str], pools: Iterable[PoolSpec], requested: Amount | None
) -> PoolLimits:
    """A request's pool limits, from every registered host's pool (`pool_of`: host →
    pool), the pools' standing budgets and the request's `max_unavailable`."""
    sizes: dict[str, int] = {}
    for pool in pool_of.values():
        sizes[pool] = sizes.get(pool, 0) + 1
    return pool_limits(sizes, {p.name: p.max_unavailable for p in pools}, requested)


def admit(
    hosts: Sequence[str],
    pool_of: Mapping[str, str],
    down: Mapping[str, int],
    limits: PoolLimits,
) -> tuple[list[str], list[str]]:
    """Which of `hosts` may go down now without a pool exceeding its limit.

    `down` counts each pool's hosts already unavailable, across *all* in-flight requests.
    Returns (admitted, deferred), each in input order. The store admits a batch's hosts
    with this, under its pool locks; `submit --dry-run` shows what it would defer.
    """
    taken: dict[str, int] = {}
    admitted: list[str] = []
    deferred: list[str] = []
    for host in hosts:
        pool = pool_of[host]
        room = limits.room(pool, down.get(pool, 0) + taken.get(pool, 0))
        if room is None or room > 0:
            admitted.append(host)
            taken[pool] = taken.get(pool, 0) + 1
        else:
            deferred.append(host)
    return admitted, deferred
