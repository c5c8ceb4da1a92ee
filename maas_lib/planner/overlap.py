"""Overlapping hosts: a host held by an earlier in-flight request is not acted on twice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from maas_lib.models import OverlapMode


@dataclass(frozen=True)
class OverlapResult:
    free: list[str]  # may be acted on now, in request order
    dropped: dict[str, int] = field(default_factory=dict)  # host → holder request id
    waiting: dict[str, int] = field(default_factory=dict)  # host → holder request id


def resolve_overlaps(
    request_id: int,
    hosts: Sequence[str],
    holders: Mapping[str, int],
    mode: OverlapMode = OverlapMode.DROP,
) -> OverlapResult:
    """Split `hosts` by whether another request holds them (`holders`: host → request id).

    Requests are resolved in acceptance order, so only holders *older* than `request_id`
    can make a host drop or wait; a lease of this request itself counts as free. O(hosts).
    """
    free: list[str] = []
    blocked: dict[str, int] = {}
    for host in hosts:
        holder = holders.get(host)
        if holder is None or holder == request_id:
            free.append(host)
        else:
            blocked[host] = holder
    if mode is OverlapMode.DROP:
        return OverlapResult(free, dropped=blocked)
    return OverlapResult(free, waiting=blocked)
