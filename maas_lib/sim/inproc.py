"""An in-process, zero-latency BMC transport over simulated `Machine`s (benchmarks, tests).

No sockets, no protocol: `MachineDriver` calls the machine directly, so what a benchmark
measures on top of it is maas-lib's own work (scheduler, store, `BmcController`).

Which machine an endpoint reaches (`InProcessFleet.key`):
- the endpoint's `system` when it has one (a host's `bmc_system`): many hosts may sit
  behind one endpoint (a chassis manager, a Redfish aggregator), told apart by system;
- otherwise its address and port: one BMC per (address, port), e.g. every host on
  127.0.0.1 with a port of its own.

Calls in flight are counted per (address, port) — the key `BmcController` caps with
`BmcSettings.endpoint_concurrency` — and the highest count seen is kept in `max_in_flight`
(fleet-wide: `max_in_flight_total`, capped by `BmcSettings.concurrency`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from maas_lib.bmc.base import (
    BmcDriver,
    BmcEndpoint,
    BmcTarget,
    BootDevice,
    PowerAction,
    PowerReading,
    PowerState,
)
from maas_lib.bmc.control import BmcSettings
from maas_lib.credentials import Credential
from maas_lib.errors import BmcUnreachable, BmcUnsupported
from maas_lib.models import BmcProtocol, HostRecord, HostSpec
from maas_lib.sim.machine import BootTarget, Machine, MachineConfig

T = TypeVar("T")

#: Where the controller's per-endpoint cap applies: (address, port).
EndpointKey = tuple[str, int | None]


def zero_latency() -> MachineConfig:
    """Power changes and installs that complete at once."""
    return MachineConfig(power_delay=0.0, install_time=0.0)


class MachineDriver(BmcDriver):
    """A BMC driver acting on one in-process `Machine`."""

    def __init__(
        self, fleet: InProcessFleet, endpoint: BmcEndpoint, machine: Machine, timeout: float
    ):
        self.fleet = fleet
        self.endpoint = endpoint
        self.timeout = timeout  # one call is one request, as over IPMI
        self.machine = machine
        self._slot = (endpoint.address, endpoint.port)
        self._label = endpoint.label

    @property
    def via(self) -> str:
        return self._label

    def _call(self, fn: Callable[[], T]) -> T:
        with self.fleet.in_flight(self._slot):
            return fn()

    def power_state(self) -> PowerReading:
        return self._call(lambda: PowerReading(PowerState(self.machine.power_state())))

    def power(self, action: PowerAction) -> None:
        if action is PowerAction.ON:
            self._call(lambda: self.machine.request_power("on"))
        elif action in (PowerAction.OFF, PowerAction.SOFT):
            # The simulated OS shuts down at once when asked, as the IPMI simulator's does.
            self._call(lambda: self.machine.request_power("off"))
        else:
            raise BmcUnsupported(f"power {action}: composed by the controller", via=self.via)

    def set_boot(self, device: BootDevice, *, persistent: bool = False) -> None:
        self._call(lambda: self.machine.set_boot(BootTarget(device.value), persistent))

    def insert_media(self, image_url: str) -> None:
        self._call(lambda: self.machine.insert_media(image_url))

    def eject_media(self) -> None:
        self._call(self.machine.eject_media)

    def identify(self, on: bool = True) -> None:
        self._call(lambda: self.machine.set_identify(on))


class InProcessFleet:
    """Simulated machines reached through `driver_factory` (plug it into a `Worker`,
    `Fleet.worker(driver_factory=...)` or a `BmcController`).

    `latency` seconds are slept inside every call (while it counts as in flight), to make
    calls overlap in concurrency tests; 0 (the default) for benchmarks."""

    def __init__(self, *, config: MachineConfig | None = None, latency: float = 0.0):
        self.config = config or zero_latency()
        self.latency = latency
        #: Machines by `key(endpoint)`: system id, or "address:port".
        self.machines: dict[str, Machine] = {}
        self._lock = threading.Lock()
        self._current: dict[EndpointKey, int] = {}
        #: The most calls seen in flight at once, per (address, port).
        self.max_in_flight: dict[EndpointKey, int] = {}
        #: Calls made, per (address, port).
        self.calls: dict[EndpointKey, int] = {}
        self._total = 0
        #: The most calls seen in flight at once across every endpoint.
        self.max_in_flight_total = 0

    # -- building the fleet ---------------------------------------------------------------

    @staticmethod
    def key(endpoint: BmcEndpoint) -> str:
        """The machine an endpoint reaches: its system if it names one, else address:port."""
        if endpoint.system:
            return endpoint.system
        return f"{endpoint.address}:{endpoint.port}"

    def add(
        self,
        name: str,
        *,
        address: str = "127.0.0.1",
        port: int | None = None,
        system: str | None = None,
        protocol: BmcProtocol = BmcProtocol.IPMI,
        power: str = "off",
    ) -> Machine:
        """A machine reached at (address, port), or by `system` behind a shared endpoint."""
        endpoint = BmcEndpoint.build(protocol, address, port, system=system)
        return self._add(name, [endpoint], power)

    def add_host(self, host: HostSpec | HostRecord, *, power: str = "off") -> Machine:
        """A machine for an inventory host, reached by its primary and fallback endpoints."""
        target = BmcTarget.from_host(host)
        endpoints = [target.primary] + ([target.fallback] if target.fallback else [])
        return self._add(host.name, endpoints, power)

    def _add(self, name: str, endpoints: list[BmcEndpoint], power: str) -> Machine:
        machine = Machine(name, config=self.config, power=power)
        for endpoint in endpoints:
            key = self.key(endpoint)
            if key in self.machines:
                raise ValueError(f"{name}: endpoint {key} already reaches {self.machines[key]}")
            self.machines[key] = machine
        return machine

    def by_name(self) -> dict[str, Machine]:
        """Every machine once, by host name."""
        return {m.name: m for m in self.machines.values()}

    # -- the transport --------------------------------------------------------------------

    def driver_factory(
        self, endpoint: BmcEndpoint, credential: Credential, settings: BmcSettings
    ) -> MachineDriver:
        """A `DriverFactory`: (endpoint, credential, settings) → driver."""
        machine = self.machines.get(self.key(endpoint))
        if machine is None:
            raise BmcUnreachable(
                f"no simulated machine at {self.key(endpoint)}", via=endpoint.label
            )
        return MachineDriver(self, endpoint, machine, settings.timeout)

    @contextmanager
    def in_flight(self, slot: EndpointKey) -> Iterator[None]:
        """Count one call in flight to `slot` for as long as the block runs."""
        with self._lock:
            n = self._current.get(slot, 0) + 1
            self._current[slot] = n
            self.calls[slot] = self.calls.get(slot, 0) + 1
            if n > self.max_in_flight.get(slot, 0):
                self.max_in_flight[slot] = n
            self._total += 1
            if self._total > self.max_in_flight_total:
                self.max_in_flight_total = self._total
        try:
            if self.latency > 0:
                time.sleep(self.latency)
            yield
        finally:
            with self._lock:
                self._current[slot] -= 1
                self._total -= 1
