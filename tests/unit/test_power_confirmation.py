"""The controller's rule for power: only an explicit Off is off, only an explicit On is on.

These drive `BmcController` with a scripted driver — a BMC that answers with a given list of
power states — because the rule is the controller's, whatever the protocol. The same
behaviours against real Redfish services are in tests/integration/test_redfish_vendors.py.
"""

from __future__ import annotations

import pytest

from maas_lib.bmc import BmcController, BmcSettings, PowerAction, PowerState
from maas_lib.bmc.base import BmcDriver, BmcEndpoint, BootDevice, PowerReading
from maas_lib.errors import BmcPowerUnknown, BmcTimeout
from maas_lib.models import BmcProtocol

SETTINGS = BmcSettings(timeout=5, power_timeout=5, poll_interval=0.01, retries=0)


class ScriptedBmc(BmcDriver):
    """Answers power reads from `readings` (the last one repeats); records requests."""

    def __init__(self, *readings: PowerReading):
        self.endpoint = BmcEndpoint.build(BmcProtocol.REDFISH, "https://bmc.test", None)
        self.readings = list(readings)
        self.sent: list[PowerAction] = []

    def power_state(self) -> PowerReading:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def power(self, action: PowerAction) -> None:
        self.sent.append(action)

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        raise NotImplementedError

    def insert_media(self, image_url: str) -> None:
        raise NotImplementedError

    def eject_media(self) -> None:
        raise NotImplementedError

    def identify(self, on: bool = True) -> None:
        raise NotImplementedError


ON = PowerReading(PowerState.ON)
OFF = PowerReading(PowerState.OFF)
PAUSED = PowerReading(PowerState.UNKNOWN, "Paused")
ABSENT = PowerReading(PowerState.UNKNOWN, "absent")
POWERING_ON = PowerReading(PowerState.POWERING_ON, "PoweringOn")
POWERING_OFF = PowerReading(PowerState.POWERING_OFF, "PoweringOff")


@pytest.fixture
def controller() -> BmcController:
    return BmcController(SETTINGS)


@pytest.mark.parametrize("unknown", [PAUSED, ABSENT])
def test_power_off_is_not_confirmed_by_an_unknown_state(controller, unknown):
    bmc = ScriptedBmc(unknown)
    with pytest.raises(BmcPowerUnknown, match=f"BMC said {unknown.raw}"):
        controller.set_power(bmc, PowerAction.OFF)
    assert bmc.sent == [PowerAction.OFF]


def test_cycle_of_a_host_in_an_unknown_state_powers_it_off_first(controller):
    # Today's bug: unknown read as off, so the off was skipped and the host never went down.
    bmc = ScriptedBmc(PAUSED, OFF, OFF, ON)
    assert controller.set_power(bmc, PowerAction.CYCLE).state is PowerState.ON
    assert bmc.sent == [PowerAction.OFF, PowerAction.ON]


def test_cycle_that_cannot_confirm_off_never_powers_on(controller):
    bmc = ScriptedBmc(ON, ABSENT)
    with pytest.raises(BmcPowerUnknown):
        controller.set_power(bmc, PowerAction.CYCLE)
    assert bmc.sent == [PowerAction.OFF]


def test_transitions_are_polled_until_they_end(controller):
    bmc = ScriptedBmc(POWERING_ON, POWERING_ON, POWERING_ON, ON)
    assert controller.set_power(bmc, PowerAction.ON).state is PowerState.ON
    bmc = ScriptedBmc(POWERING_OFF, POWERING_OFF, OFF)
    assert controller.set_power(bmc, PowerAction.OFF).state is PowerState.OFF


def test_a_transition_that_never_ends_is_a_timeout():
    c = BmcController(SETTINGS.model_copy(update={"power_timeout": 0.2}))
    with pytest.raises(BmcTimeout, match="powering_on"):
        c.set_power(ScriptedBmc(POWERING_ON), PowerAction.ON)


def test_status_reports_unknown_with_what_the_bmc_said():
    from maas_lib.bmc.base import BmcTarget
    from maas_lib.credentials import Credential

    bmc = ScriptedBmc(PAUSED)
    c = BmcController(
        SETTINGS,
        resolve=lambda name: Credential(name, "u", "p"),
        driver_factory=lambda endpoint, credential, settings: bmc,
    )
    target = BmcTarget("h1", "cred", bmc.endpoint)
    r = c.status(target)
    assert (r.ok, r.power, r.power_raw) == (True, "unknown", "Paused")
    r = c.power(target, PowerAction.OFF)
    assert (r.ok, r.error_class) == (False, "power_unknown")
