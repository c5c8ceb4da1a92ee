"""Batch plans and the failure threshold."""

from __future__ import annotations

from collections.abc import Sequence

from maas_lib.models import BatchPolicy


def plan_batches(hosts: Sequence[str], policy: BatchPolicy) -> list[list[str]]:
    """Hosts in order, cut into an optional canary batch and then batches of batch_size.

    A share (`25%`) is of the request's hosts, rounded up, and at least 1.
    """
    hosts = list(hosts)
    if not hosts:
        return []
    size = max(1, policy.batch_size.ceil_of(len(hosts)))
    canary = min(policy.canary, len(hosts))
    batches = [hosts[:canary]] if canary else []
    rest = hosts[canary:]
    batches += [rest[i : i + size] for i in range(0, len(rest), size)]
    return batches


def failures_exceeded(failed: int, total: int, policy: BatchPolicy) -> bool:
    """True once failures are *greater than* the threshold (equal is still allowed).

    A share (`5%`) is of the request's hosts, rounded down: 5% of 10 hosts allows 0.
    """
    return failed > policy.max_failures.floor_of(total)
