"""maas-lib: Metal as a Service for SRE teams that run their own bare-metal fleets.

import maas_lib
with maas_lib.open_fleet("sqlite:///fleet.db") as fleet:
    fleet.import_hosts(["inventory/example.yml"])
    req = fleet.submit("reimage", ["web*"], image="ubuntu-24.04", batch_size="25%")
    print(fleet.status(req.id).state)
"""

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

__version__ = "0.1.0"

__all__ = [
    "Action",
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
