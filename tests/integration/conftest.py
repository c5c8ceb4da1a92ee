"""One simulated fleet shared by the BMC integration tests (started once per session)."""

from __future__ import annotations

import pytest

from maas_lib.bmc import BmcSettings
from tests.conftest import patience
from tests.simfleet import running_sim

#: Short timeouts and generous retries: the simulator's flaky BMCs fail 30% of calls.
FAST = BmcSettings(timeout=patience(3), power_timeout=patience(20), poll_interval=0.1, retries=5)


@pytest.fixture(scope="session")
def simfleet(tmp_path_factory):
    with running_sim(
        tmp_path_factory.mktemp("bmcsim"),
        ipmi=6,
        redfish=6,
        dual=1,
        dead=1,
        wrong_creds=1,
        slow=1,
        flaky=1,
        power_delay=0.3,
        install_time=1.0,
        slow_latency=2.0,
        flaky_rate=0.3,
    ) as s:
        yield s


@pytest.fixture
def sim_env(simfleet, monkeypatch):
    for key, value in simfleet.env.items():
        monkeypatch.setenv(key, value)
    return simfleet.env


@pytest.fixture
def simfleet_api(simfleet, sim_env):
    with simfleet.fleet() as f:
        yield f
