"""The scheduler's pure core: overlaps, batches, failure thresholds, disruption budgets.

No I/O here: every function takes plain data and returns plain data, so the properties
that keep a fleet safe (no host twice, budgets never exceeded, order stable) are checked
with hypothesis in tests/unit/test_planner.py.
"""

from maas_lib.planner.batches import batch_size, failures_exceeded, next_batch, plan_batches
from maas_lib.planner.budgets import PoolLimits, admit, pool_limits, pool_limits_for
from maas_lib.planner.overlap import OverlapResult, resolve_overlaps

__all__ = [
    "OverlapResult",
    "PoolLimits",
    "admit",
    "batch_size",
    "failures_exceeded",
    "next_batch",
    "plan_batches",
    "pool_limits",
    "pool_limits_for",
    "resolve_overlaps",
]
