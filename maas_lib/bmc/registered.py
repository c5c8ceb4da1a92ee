"""`maasctl bmc status` of registered hosts on a lean start: hosts looked up without the
store's models (`store.host_reader`), settings without pydantic (`limits.BmcValues`), then
the one status path (`run_bmc`). Loading pydantic, the models, the store's interfaces and
the fleet took ~0.2 s of a ~0.7 s status of 200 IPMI BMCs (issue 12: at most 1.5x FreeIPMI's
`ipmipower --stat`): this is that time saved.

It takes only the case it can finish exactly as `Fleet.bmc_status` would: a SQLite store
ready to read, patterns that resolve, plain IPMI hosts. Anything else — bad input
included — returns None, and the caller runs `Fleet.bmc_status`, which reports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from maas_lib.bmc import run_bmc
from maas_lib.bmc.control import BmcResult
from maas_lib.bmc.limits import BmcValues
from maas_lib.errors import MaasError
from maas_lib.patterns import host_patterns, resolve_patterns
from maas_lib.store.host_reader import open_host_reader


def status_of_registered(
    url: str | None,
    patterns: Iterable[str],
    *,
    hosts_file: str | Path | None,
    settings: BmcValues | None,
) -> list[BmcResult] | None:
    """`Fleet.bmc_status` for the store at `url`, or None (see the module's doc). None
    `settings` (values `BmcValues.checked` refused) is None too: `BmcSettings` says why."""
    if settings is None:
        return None
    reader = open_host_reader(url)
    if reader is None:
        return None
    try:
        names, _ = resolve_patterns(host_patterns(patterns, hosts_file), reader.match_hosts)
        hosts = reader.ipmi_hosts(names)
    except (MaasError, sqlite3.Error):
        return None  # the store proper reports it, in its own words
    finally:
        reader.close()
    if hosts is None:
        return None
    # The hosts are HostRecord's attributes without the model (HostReader.ipmi_hosts).
    return run_bmc(hosts, "status", settings=settings)  # type: ignore[arg-type]
