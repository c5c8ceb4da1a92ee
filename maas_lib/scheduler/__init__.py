"""The scheduler: claims accepted requests, resolves overlaps, runs batches of host
tasks as recorded steps against BMCs, and ends each request in a final state."""

from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.scheduler.worker import RunReport, Worker

__all__ = ["RunReport", "SchedulerSettings", "Worker"]
