"""A driver that tries a host's primary BMC path, then its secondary one.

The secondary is tried only when the primary is unreachable, times out, or does not support
the verb; an `auth`, `tls` or BMC-reported error on the primary is the answer (trying another
path would hide a real problem). `via` says which path acted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from maas_lib.bmc.base import BmcDriver, BootDevice, PowerAction, PowerReading
from maas_lib.bmc.deadline import run_with_deadline
from maas_lib.errors import BmcError, BmcTimeout, BmcUnreachable, BmcUnsupported

T = TypeVar("T")


class FallbackDriver(BmcDriver):
    def __init__(self, primary: BmcDriver, secondary: BmcDriver):
        self.primary = primary
        self.secondary = secondary
        self.timeout = max(primary.timeout, secondary.timeout)
        self.endpoint = primary.endpoint
        self._via = primary.via
        #: Why the primary was passed over on the last call, if it was.
        self.fallback_reason: str | None = None

    @property
    def via(self) -> str:
        return self._via

    @property
    def call_deadline(self) -> float:
        # Each path gets its own: a dead primary must leave the secondary its full time.
        return self.primary.call_deadline + self.secondary.call_deadline

    def deadline_error(self, what: str, seconds: float) -> BmcError:
        return self.secondary.deadline_error(what, seconds)

    def _try(self, call: Callable[[BmcDriver], T]) -> T:
        try:
            # The primary gets one timeout of its own, so the secondary still has time.
            deadline = self.primary.call_deadline
            result = run_with_deadline(
                lambda: call(self.primary),
                deadline,
                lambda: self.primary.deadline_error("primary path", deadline),
            )
            self._via, self.fallback_reason = self.primary.via, None
            return result
        except (BmcUnreachable, BmcTimeout, BmcUnsupported) as exc:
            self.fallback_reason = f"{exc.error_class} via {self.primary.via}: {exc}"
        try:
            result = call(self.secondary)
        except BmcError as exc:
            exc.args = (f"{exc} (after primary: {self.fallback_reason})",)
            raise
        self._via = self.secondary.via
        return result

    def power_state(self) -> PowerReading:
        return self._try(lambda d: d.power_state())

    def power(self, action: PowerAction) -> None:
        self._try(lambda d: d.power(action))

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        self._try(lambda d: d.set_boot(device, persistent=persistent))

    def insert_media(self, image_url: str) -> None:
        self._try(lambda d: d.insert_media(image_url))

    def eject_media(self) -> None:
        self._try(lambda d: d.eject_media())

    def identify(self, on: bool = True) -> None:
        self._try(lambda d: d.identify(on))
