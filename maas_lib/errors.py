"""One exception hierarchy for the whole library.

The CLI maps `InputError` (and its subclasses) to exit code 2 with a one-line message,
any other `MaasError` to exit code 1. An error that fails a host's step carries its
`ErrorClass` (`error_class`), which status, stats and metrics use; `error_class_of` is
the one mapping from an exception to its class.
"""

from __future__ import annotations

from maas_lib.classes import ErrorClass


class MaasError(Exception):
    """Base class of every error maas-lib raises on purpose."""

    #: How a host's step that raised this failed; None: no class of its own, so a step
    #: that raises it fails `internal` (see `error_class_of`).
    error_class: ErrorClass | None = None


class InputError(MaasError):
    """The caller asked for something invalid; nothing was written (exit code 2)."""


class NotFound(InputError):
    """An unknown host, request or credential was named."""


class StoreError(MaasError):
    """The job-queue store cannot be opened or is in an unexpected state."""


class StoreUnavailable(StoreError):
    """A store call failed for a reason that may pass (disk full, I/O error, a lock held
    too long, a lost or restarted database connection): the call may be tried again."""


class StoreFailing(StoreError):
    """The store kept failing past the worker's retry bound (`store_retry_s`): the worker
    stops, leaving its requests to be resumed."""


class StoreUnusable(StoreError, InputError):
    """The named database does not exist (and may not be created here), or is not a usable
    database: a directory, a corrupt or non-SQLite file (exit code 2)."""


class IdempotencyConflict(InputError):
    """An idempotency key was used again with a different submission (HTTP 409); nothing
    was written."""


class AuthenticationError(MaasError):
    """A credential (API token, JWT) is missing, unknown, garbled, expired or revoked
    (HTTP 401). `reason` says which, for the audit log; it never holds the secret."""

    def __init__(self, reason: str, *, principal: str | None = None):
        super().__init__(reason)
        self.reason = reason
        #: Who the credential claimed to be, when that is known (a revoked token's name).
        self.principal = principal


class AccessDenied(MaasError):
    """The authenticated principal may not do this (HTTP 403); nothing was written.
    `pools` names the pools it lacks rights on, if that is why."""

    def __init__(self, reason: str, *, pools: tuple[str, ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.pools = pools


class CredentialError(InputError):
    """A credential name could not be resolved to a secret."""

    error_class = ErrorClass.CREDENTIAL


class StepError(MaasError):
    """A host's step failed for a reason that is not a BMC error (an install, a hook, a
    step that ran out of time); `error_class` names the kind."""

    def __init__(self, error_class: ErrorClass, message: str):
        super().__init__(message)
        self.error_class = ErrorClass(error_class)


class Interrupted(MaasError):
    """The worker is stopping: a step or a wait for an install report gave up, and the
    next worker retries the host. Not a failure: the step is recorded `interrupted`."""


class BmcError(MaasError):
    """A BMC operation failed; `error_class` says how, for every consumer downstream."""

    error_class: ErrorClass = ErrorClass.BMC_ERROR

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        via: str | None = None,
        transient: bool = False,
    ):
        super().__init__(message)
        self.host = host
        self.via = via
        #: Worth retrying after a short backoff (a busy or flaky BMC), unlike e.g. `auth`.
        self.transient = transient


class BmcUnreachable(BmcError):
    error_class = ErrorClass.UNREACHABLE


class BmcAuthError(BmcError):
    error_class = ErrorClass.AUTH


class BmcTimeout(BmcError):
    error_class = ErrorClass.TIMEOUT


class BmcUnsupported(BmcError):
    error_class = ErrorClass.UNSUPPORTED


class BmcTlsError(BmcError):
    error_class = ErrorClass.TLS


class BmcPowerUnknown(BmcError):
    """The BMC answered, but not with a power state we can act on (absent, null, Paused,
    an unrecognised value, a garbled reply) while a step needed to confirm one."""

    error_class = ErrorClass.POWER_UNKNOWN


def error_class_of(exc: BaseException) -> ErrorClass:
    """The failure class of a step or BMC call that raised `exc`: a maas-lib error's own
    class; anything else (a bug, or a maas-lib error with no class) is `internal`."""
    found = exc.error_class if isinstance(exc, MaasError) else None
    return found or ErrorClass.INTERNAL
