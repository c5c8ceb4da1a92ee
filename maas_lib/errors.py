"""One exception hierarchy for the whole library.

The CLI maps `InputError` (and its subclasses) to exit code 2 with a one-line message;
every BMC failure carries an `error_class` string that status, stats and metrics use.
"""

from __future__ import annotations


class MaasError(Exception):
    """Base class of every error maas-lib raises on purpose."""


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


class CredentialError(InputError):
    """A credential name could not be resolved to a secret."""


class BmcError(MaasError):
    """A BMC operation failed; `error_class` says how, for every consumer downstream."""

    error_class = "bmc_error"

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
    error_class = "unreachable"


class BmcAuthError(BmcError):
    error_class = "auth"


class BmcTimeout(BmcError):
    error_class = "timeout"


class BmcUnsupported(BmcError):
    error_class = "unsupported"


class BmcTlsError(BmcError):
    error_class = "tls"


class BmcPowerUnknown(BmcError):
    """The BMC answered, but not with a power state we can act on (absent, null, Paused,
    an unrecognised value, a garbled reply) while a step needed to confirm one."""

    error_class = "power_unknown"
