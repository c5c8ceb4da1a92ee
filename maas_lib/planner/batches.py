"""Batches and the failure threshold."""

from __future__ import annotations

from collections.abc import Sequence

from maas_lib.models import BatchPolicy


def batch_size(policy: BatchPolicy, idx: int, total: int) -> int:
    """How many hosts batch `idx` of a request of `total` hosts takes: the canary count
    for the first batch of a canaried request, else the batch size.

    A share (`25%`) is of the request's hosts (`total`: those not dropped, including
    those waiting for another request), rounded up, and at least 1.
    """
    if idx == 0 and policy.canary:
        return policy.canary
    return max(1, policy.batch_size.ceil_of(total))


def next_batch(eligible: Sequence[str], policy: BatchPolicy, idx: int, total: int) -> list[str]:
    """The hosts of batch `idx`: the first of `eligible` (pending hosts nothing blocks, in
    request order), as many as `batch_size` allows. The scheduler cuts each batch with
    this, as the request goes; `plan_batches` cuts a whole plan with it."""
    return list(eligible[: batch_size(policy, idx, total)])


def plan_batches(
    hosts: Sequence[str], policy: BatchPolicy, total: int | None = None
) -> list[list[str]]:
    """`hosts` in order, cut as the scheduler would cut them if they were all free now: an
    optional canary batch, then batches of the batch size. `total`: the request's hosts
    (default: `hosts`; more when some of its hosts wait for another request)."""
    hosts = list(hosts)
    total = len(hosts) if total is None else total
    batches: list[list[str]] = []
    start = 0
    while start < len(hosts):
        size = batch_size(policy, len(batches), total)
        batches.append(hosts[start : start + size])
        start += size
    return batches


def failures_exceeded(failed: int, total: int, policy: BatchPolicy) -> bool:
    """True once failures are *greater than* the threshold (equal is still allowed).

    A share (`5%`) is of the request's hosts, rounded down: 5% of 10 hosts allows 0.
    """
    return failed > policy.max_failures.floor_of(total)
