"""maas-lib: Metal as a Service for SRE teams that run their own bare-metal fleets.

import maas_lib
with maas_lib.open_fleet("sqlite:///fleet.db") as fleet:
    fleet.import_hosts(["inventory/example.yml"])
    req = fleet.submit("reimage", ["web*"], image="ubuntu-24.04", batch_size="25%")
    print(fleet.status(req.id).state)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas_lib.bmc.control import BmcResult, BmcSettings
    from maas_lib.classes import ErrorClass, StepOutcome
    from maas_lib.credentials import Credential, resolve_credential
    from maas_lib.errors import (
        BmcError,
        CredentialError,
        InputError,
        MaasError,
        NotFound,
        StoreError,
    )
    from maas_lib.fleet import Fleet, open_fleet
    from maas_lib.models import (
        Action,
        Amount,
        BatchPolicy,
        HostRecord,
        HostSpec,
        HostStatus,
        HostTaskState,
        ImportResult,
        InstallReport,
        Lease,
        OverlapMode,
        PoolSpec,
        RequestHost,
        RequestState,
        RequestStatus,
        RequestSummary,
        SubmitResult,
    )
    from maas_lib.store import default_db_url
    from maas_lib.telemetry.alerts import AlertSettings

#: Where each public name lives. Imported on first use (PEP 562), so that `maasctl` and
#: the Ansible modules, which import submodules of this package, pay only for what they use.
_HOMES = {
    "BmcResult": "maas_lib.bmc.control",
    "BmcSettings": "maas_lib.bmc.control",
    "ErrorClass": "maas_lib.classes",
    "StepOutcome": "maas_lib.classes",
    "Credential": "maas_lib.credentials",
    "resolve_credential": "maas_lib.credentials",
    **dict.fromkeys(
        ("BmcError", "CredentialError", "InputError", "MaasError", "NotFound", "StoreError"),
        "maas_lib.errors",
    ),
    "Fleet": "maas_lib.fleet",
    "open_fleet": "maas_lib.fleet",
    **dict.fromkeys(
        (
            "Action",
            "Amount",
            "BatchPolicy",
            "HostRecord",
            "HostSpec",
            "HostStatus",
            "HostTaskState",
            "ImportResult",
            "InstallReport",
            "Lease",
            "OverlapMode",
            "PoolSpec",
            "RequestHost",
            "RequestState",
            "RequestStatus",
            "RequestSummary",
            "SubmitResult",
        ),
        "maas_lib.models",
    ),
    "default_db_url": "maas_lib.store",
    "AlertSettings": "maas_lib.telemetry.alerts",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'maas_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"

__all__ = [
    "Action",
    "AlertSettings",
    "Amount",
    "BatchPolicy",
    "BmcError",
    "BmcResult",
    "BmcSettings",
    "Credential",
    "CredentialError",
    "ErrorClass",
    "Fleet",
    "HostRecord",
    "HostSpec",
    "HostStatus",
    "HostTaskState",
    "ImportResult",
    "InputError",
    "InstallReport",
    "Lease",
    "MaasError",
    "NotFound",
    "OverlapMode",
    "PoolSpec",
    "RequestHost",
    "RequestState",
    "RequestStatus",
    "RequestSummary",
    "StepOutcome",
    "StoreError",
    "SubmitResult",
    "default_db_url",
    "open_fleet",
    "resolve_credential",
]
