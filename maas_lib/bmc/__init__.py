"""BMC control: IPMI (pyghmi) and Redfish (sushy) drivers, fallback, and the controller.

`run_bmc` is the one entry point the API uses: hosts in, one `BmcResult` per host out.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from maas_lib.bmc.base import BmcTarget, BootDevice, PowerAction, PowerState
from maas_lib.bmc.control import BmcController, BmcResult
from maas_lib.bmc.sessions import close_all_sessions
from maas_lib.credentials import Credential, resolve_credential
from maas_lib.errors import InputError

if TYPE_CHECKING:
    from maas_lib.bmc.limits import BmcValues
    from maas_lib.bmc.settings import BmcSettings
    from maas_lib.models import HostRecord, HostSpec

__all__ = [
    "BmcController",
    "BmcResult",
    "BmcSettings",
    "BmcTarget",
    "BootDevice",
    "PowerAction",
    "PowerState",
    "parse_choice",
    "run_bmc",
]

E = TypeVar("E", bound=StrEnum)


def __getattr__(name: str) -> Any:
    """`BmcSettings` on first use (pydantic: `maasctl bmc status` does without it)."""
    if name == "BmcSettings":
        from maas_lib.bmc.settings import BmcSettings  # pydantic: only when asked for

        return BmcSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_choice(kind: type[E], value: str | E, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(k.value for k in kind)
        raise InputError(f"unknown {what} {value!r} (choose from {choices})") from None


def run_bmc(
    hosts: Sequence[HostRecord | HostSpec],
    verb: str,
    *,
    action: PowerAction | None = None,
    device: BootDevice | None = None,
    persistent: bool = False,
    wait: bool = True,
    settings: BmcSettings | BmcValues | None = None,
    credential: Credential | None = None,
) -> list[BmcResult]:
    """Run one BMC verb (`status`, `power`, `boot`) on every host, bounded concurrency.

    `credential`, if given, is used for every host instead of each host's named one."""
    targets = [BmcTarget.from_host(h) for h in hosts]
    # Every credential must resolve before any BMC is touched: a typo is bad input, not
    # a hundred auth failures.
    names = sorted({t.credential for t in targets})
    creds = {n: credential or resolve_credential(n) for n in names}
    controller = BmcController(settings, resolve=creds.__getitem__)
    try:
        if verb == "status":
            return controller.status_many(targets)
        if verb == "power":
            assert action is not None
            return controller.fan_out(targets, lambda t: controller.power(t, action, wait=wait))
        if verb == "boot":
            assert device is not None
            return controller.fan_out(
                targets, lambda t: controller.boot(t, device, persistent=persistent)
            )
        raise InputError(f"unknown BMC verb {verb!r}")
    finally:
        # BMCs have few session slots and keep an abandoned session until their idle
        # timeout: log out now (sessions another call is using are left to it).
        close_all_sessions()
