"""The scheduler: claims accepted requests, resolves overlaps, runs batches of host
tasks as recorded steps against BMCs, and ends each request in a final state.

Names are loaded on first use, so importing `maas_lib.scheduler.settings` (as the CLI does
for its defaults) does not pull in the worker and everything it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas_lib.scheduler.settings import SchedulerSettings
    from maas_lib.scheduler.worker import RunReport, Worker

__all__ = ["RunReport", "SchedulerSettings", "Worker"]


def __getattr__(name: str) -> Any:
    # Each name loads its own module: the settings alone do not load the worker.
    if name == "SchedulerSettings":
        from maas_lib.scheduler.settings import SchedulerSettings

        return SchedulerSettings
    if name in ("RunReport", "Worker"):
        from maas_lib.scheduler import worker  # the BMC drivers and executors

        return getattr(worker, name)
    raise AttributeError(f"module 'maas_lib.scheduler' has no attribute {name!r}")
