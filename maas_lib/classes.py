"""The two closed vocabularies every layer shares: how a host's step failed
(`ErrorClass`) and how a step ended (`StepOutcome`).

Their values are the strings stored in the `error_class` and `outcome` columns, shown by
`status`, `stats` and the report, and exported as Prometheus labels: a value never
changes once released (stored rows and dashboards keep their labels), new ones may be
added. The README's failure-class table lists every `ErrorClass`
(`tests/unit/test_classes.py` keeps the two in step). This module imports nothing from
maas-lib, so the lowest layers (errors, models, store) can use it.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """Why a host's step (or a direct BMC call) failed."""

    # The BMC (maas_lib.bmc): each is a BmcError subclass's class.
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    TIMEOUT = "timeout"
    POWER_UNKNOWN = "power_unknown"
    UNSUPPORTED = "unsupported"
    TLS = "tls"
    BMC_ERROR = "bmc_error"
    # Before the BMC: the host's credential name resolves to no secret.
    CREDENTIAL = "credential"
    # Installs (reimage, wipe).
    INSTALL_FAILED = "install_failed"
    INSTALL_TIMEOUT = "install_timeout"
    IMAGE_MISMATCH = "image_mismatch"
    # Pre/post hooks.
    HOOK_FAILED = "hook_failed"
    HOOK_TIMEOUT = "hook_timeout"
    # The scheduler itself.
    FENCED = "fenced"
    EXECUTOR = "executor"
    TASK_FAILED = "task_failed"
    INTERNAL = "internal"
    #: Only in stats, alerts and metrics: a failed host whose record names no class.
    UNKNOWN = "unknown"


#: Classes whose step ends with the outcome `timeout` rather than `failed`.
TIMEOUT_CLASSES = frozenset(
    {ErrorClass.TIMEOUT, ErrorClass.INSTALL_TIMEOUT, ErrorClass.HOOK_TIMEOUT}
)


class StepOutcome(StrEnum):
    """How one recorded step ended (`running` while it runs)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    #: The worker stopped (or crashed) mid-step; the next one retries the host.
    INTERRUPTED = "interrupted"
    #: A single step whose condition did not hold (the Ansible executor's step module);
    #: never stored.
    SKIPPED = "skipped"


def outcome_of(error_class: ErrorClass) -> StepOutcome:
    """The outcome of a step that failed with `error_class`: timeout or failed."""
    return StepOutcome.TIMEOUT if error_class in TIMEOUT_CLASSES else StepOutcome.FAILED
