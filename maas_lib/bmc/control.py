"""BMC operations with deadlines, retries and state polling, fanned out across hosts.

Every call to a BMC runs under a hard deadline (a hung BMC costs one timeout, never a
stalled batch), transient failures are retried with exponential backoff (tenacity), and
power changes are confirmed by polling the BMC — never assumed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from maas_lib.bmc.base import (
    BmcDriver,
    BmcEndpoint,
    BmcTarget,
    BootDevice,
    PowerAction,
    PowerReading,
    PowerState,
)
from maas_lib.bmc.deadline import run_with_deadline
from maas_lib.bmc.fallback import FallbackDriver
from maas_lib.credentials import Credential, resolve_credential
from maas_lib.enums import BmcProtocol
from maas_lib.errors import (
    BmcError,
    BmcPowerUnknown,
    BmcTimeout,
    CredentialError,
)

if TYPE_CHECKING:
    from maas_lib.bmc.limits import BmcValues
    from maas_lib.bmc.settings import BmcSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def __getattr__(name: str) -> Any:
    """`BmcSettings`, imported on first use: it needs pydantic, which `maasctl bmc status`
    does without (it passes `BmcValues`)."""
    if name == "BmcSettings":
        from maas_lib.bmc.settings import BmcSettings  # pydantic: only when asked for

        return BmcSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _said(reading: PowerReading) -> str:
    """'PowerState "Paused"' — the BMC's own word for an unusable state, for messages."""
    if reading.raw is None:
        return str(reading.state)
    return f"{reading.state} (BMC said {reading.raw})"


#: Hosts worked on side by side in one fan-out (each mostly waits on its BMC).
MAX_WORKERS = 1024
#: Seconds from a power command to the first look at the BMC's power state, and how the
#: pause between looks grows (up to `BmcSettings.poll_interval`).
FIRST_POLL_S = 0.1
POLL_BACKOFF = 1.5


@dataclass
class BmcResult:
    """The outcome of one operation on one host, as every front end reports it."""

    host: str
    ok: bool
    #: on, off, powering_on, powering_off or unknown (never a guess: see PowerReading).
    power: str | None = None
    error_class: str | None = None
    error: str | None = None
    via: str | None = None
    elapsed_s: float = 0.0
    #: What the BMC said when it was not a plain on/off (e.g. "Paused", "absent").
    power_raw: str | None = None

    def public(self) -> dict[str, Any]:
        # Flat fields: a plain dict (dataclasses.asdict deep-copies; ~30 ms for 200 hosts).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


def _succeeded(
    target: BmcTarget, reading: PowerReading | None, via: str, elapsed_s: float
) -> BmcResult:
    return BmcResult(
        target.host,
        True,
        power=str(reading.state) if reading else None,
        power_raw=reading.raw if reading and reading.raw is not None else None,
        via=via,
        elapsed_s=elapsed_s,
    )


def _failed(target: BmcTarget, exc: BmcError, via: str, elapsed_s: float) -> BmcResult:
    log.info("host %s: %s via %s: %s", target.host, exc.error_class, via, exc)
    return BmcResult(
        target.host,
        False,
        error_class=exc.error_class,
        error=str(exc),
        via=via,
        elapsed_s=elapsed_s,
    )


def make_driver(endpoint: BmcEndpoint, credential: Credential, settings: BmcSettings) -> BmcDriver:
    # Each protocol's driver is imported when a host uses it: pyghmi (with cryptography)
    # and sushy (with requests) cost start-up time that a one-protocol fleet need not pay.
    if endpoint.protocol is BmcProtocol.IPMI:
        from maas_lib.bmc.ipmi import IpmiDriver

        return IpmiDriver(endpoint, credential, timeout=settings.timeout)
    from maas_lib.bmc.redfish import RedfishDriver  # sushy: as above

    return RedfishDriver(
        endpoint,
        credential,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        deadline=settings.operation_deadline,
    )


class BmcController:
    """Operations on hosts' BMCs. Thread-safe; one instance serves a whole fan-out."""

    def __init__(
        self,
        settings: BmcSettings | BmcValues | None = None,
        resolve: Callable[[str], Credential] = resolve_credential,
        driver_factory: Callable[[BmcEndpoint, Credential, BmcSettings], BmcDriver] | None = None,
    ):
        if settings is None:
            from maas_lib.bmc.settings import BmcSettings  # pydantic: see __getattr__

            settings = BmcSettings()
        self.settings = settings
        self._resolve = resolve
        # Tests and benchmarks may plug in another transport (e.g. an in-process machine).
        self._make_driver = driver_factory or make_driver
        # Bounds BMC calls in flight, not hosts: a host waiting for its power to change
        # holds no slot, so a slow power-off does not hold up the rest of the fleet.
        self._slots = threading.BoundedSemaphore(self.settings.concurrency)
        # BMCs hang under bursts; several hosts may sit behind one endpoint (a chassis
        # manager, a Redfish aggregator), so each endpoint gets its own, smaller cap.
        self._endpoint_slots: dict[tuple[str, int | None], threading.BoundedSemaphore] = {}
        self._endpoint_lock = threading.Lock()

    # -- building blocks ------------------------------------------------------------------

    def endpoint_slots(self, endpoint: BmcEndpoint) -> threading.BoundedSemaphore:
        """The semaphore bounding calls in flight to `endpoint` (shared by its hosts)."""
        key = (endpoint.address, endpoint.port)
        with self._endpoint_lock:
            slots = self._endpoint_slots.get(key)
            if slots is None:
                slots = threading.BoundedSemaphore(self.settings.endpoint_concurrency)
                self._endpoint_slots[key] = slots
            return slots

    def driver(self, target: BmcTarget, credential: Credential | None = None) -> BmcDriver:
        cred = credential or self._resolve(target.credential)
        primary = self._make_driver(target.primary, cred, self.settings)
        if target.fallback is None:
            return primary
        return FallbackDriver(primary, self._make_driver(target.fallback, cred, self.settings))

    def call(self, driver: BmcDriver, fn: Callable[[BmcDriver], T], what: str) -> T:
        """One BMC call under a deadline, retried with backoff while the error is transient."""
        s = self.settings
        deadline = driver.call_deadline

        endpoint_slots = self.endpoint_slots(driver.endpoint)

        def guarded() -> T:
            # The slots are released by the thread that made the call, when the call has
            # really ended: a call we stopped waiting for still counts against the caps.
            try:
                return fn(driver)
            finally:
                self._slots.release()
                endpoint_slots.release()

        def attempt() -> T:
            # The endpoint's slot first: a host queued behind a busy endpoint must not
            # hold one of the fleet-wide slots while it waits.
            endpoint_slots.acquire()
            self._slots.acquire()
            return run_with_deadline(
                guarded, deadline, lambda: driver.deadline_error(what, deadline)
            )

        started = time.monotonic()
        try:
            # Most calls succeed first time: no retry machinery for them.
            return attempt()
        except BmcError as exc:
            if not exc.transient or s.retries == 0:
                raise
        budget = deadline * (s.retries + 1) - (time.monotonic() - started)
        if budget <= 0:
            return attempt()
        time.sleep(min(0.2, budget))
        # Imported here: most calls never retry, and a CLI call should not pay for it.
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential,
        )

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, BmcError) and e.transient),
            stop=stop_after_attempt(s.retries) | stop_after_delay(budget),
            wait=wait_exponential(multiplier=0.2, min=0.4, max=2.0),
            reraise=True,
        )
        return retrying(attempt)

    def read_power(self, driver: BmcDriver) -> PowerReading:
        return self.call(driver, lambda d: d.power_state(), "read power state")

    def wait_power(
        self, driver: BmcDriver, want: PowerState, started: float, timeout: float | None = None
    ) -> PowerReading:
        """Poll until the BMC reports exactly `want`, or fail: `timeout` after `timeout`
        seconds (default: power_timeout), `power_unknown` as soon as the BMC answers with a
        state that is neither on, off nor a transition — a guess is never a confirmation.

        The first look comes FIRST_POLL_S after the command (a BMC seldom reports the new
        state in the same instant, and every read costs the BMC and us a round trip), then
        the pause grows by POLL_BACKOFF up to `poll_interval`: most BMCs settle within a
        second or two, and a fast first look saves a full interval per host."""
        s = self.settings
        limit = s.power_timeout if timeout is None else timeout
        pause = min(FIRST_POLL_S, s.poll_interval)
        while True:
            waited = time.monotonic() - started
            time.sleep(min(pause, max(0.0, limit - waited)))
            pause = min(pause * POLL_BACKOFF, s.poll_interval)
            reading = self.read_power(driver)
            if reading.state is want:
                return reading
            if reading.state is PowerState.UNKNOWN:
                raise BmcPowerUnknown(
                    f"cannot confirm power {want}: BMC reports {_said(reading)}", via=driver.via
                )
            waited = time.monotonic() - started
            if waited >= limit:
                raise BmcTimeout(
                    f"power still {reading} {waited:.0f}s after requesting {want}",
                    via=driver.via,
                )

    def set_power(
        self, driver: BmcDriver, action: PowerAction, *, wait: bool = True
    ) -> PowerReading:
        """Request a power action; with `wait`, return only once the BMC confirms it."""
        if action is PowerAction.CYCLE:
            # Off, confirmed off, on, confirmed on: the host was really down in between.
            # Only an explicit Off skips the off: an unknown or transitional state may be a
            # running host.
            if self.read_power(driver).state is not PowerState.OFF:
                started = time.monotonic()
                self.call(driver, lambda d: d.power(PowerAction.OFF), "power off")
                self.wait_power(driver, PowerState.OFF, started)
            action = PowerAction.ON
        started = time.monotonic()
        self.call(driver, lambda d: d.power(action), f"power {action}")
        # A reset reboots a running host: it is confirmed by the host still being on.
        want = PowerState.ON if action in (PowerAction.ON, PowerAction.RESET) else PowerState.OFF
        if wait:
            return self.wait_power(driver, want, started)
        return self.read_power(driver)

    # -- per-host operations returning results -------------------------------------------

    def _run(self, target: BmcTarget, op: Callable[[BmcDriver], PowerReading | None]) -> BmcResult:
        started = time.monotonic()
        driver: BmcDriver | None = None
        try:
            driver = self.driver(target)
            reading = op(driver)
            return _succeeded(target, reading, driver.via, time.monotonic() - started)
        except BmcError as exc:
            via = exc.via or (driver.via if driver else target.primary.label)
            return _failed(target, exc, via, time.monotonic() - started)
        except CredentialError as exc:
            return BmcResult(
                target.host,
                False,
                error_class=exc.error_class,
                error=str(exc),
                via=target.primary.label,
                elapsed_s=time.monotonic() - started,
            )

    def status(self, target: BmcTarget) -> BmcResult:
        return self._run(target, self.read_power)

    def status_many(self, targets: Sequence[BmcTarget]) -> list[BmcResult]:
        """`status` of every target, in input order. Hosts reached over IPMI only are read
        side by side from this thread (`ipmi_batch`: a quarter of the CPU of a thread per
        host); the rest, and whatever that batch leaves to the per-host path (transient
        failures, sessions this process already holds), go through `status`."""
        results: list[BmcResult | None] = [None] * len(targets)
        batched = self._ipmi_status_jobs(targets)
        if batched:
            from maas_lib.bmc.ipmi_batch import DEFERRED, read_power_many  # pyghmi: see make_driver

            jobs = [job for _, job in batched]
            outcomes = read_power_many(
                jobs,
                concurrency=self.settings.concurrency,
                endpoint_concurrency=self.settings.endpoint_concurrency,
            )
            for (index, job), (outcome, elapsed) in zip(batched, outcomes, strict=True):
                if isinstance(outcome, PowerReading):
                    results[index] = _succeeded(targets[index], outcome, job.via, elapsed)
                elif isinstance(outcome, BmcError):
                    results[index] = _failed(targets[index], outcome, job.via, elapsed)
                else:
                    assert outcome is DEFERRED
        rest = [i for i, r in enumerate(results) if r is None]
        done = self.fan_out([targets[i] for i in rest], self.status)
        for index, result in zip(rest, done, strict=True):
            results[index] = result
        return [r for r in results if r is not None]

    def _ipmi_status_jobs(self, targets: Sequence[BmcTarget]) -> list[tuple[int, Any]]:
        """(index, StatusJob) for each target `status_many` may read in one batch: IPMI with
        no fallback, the standard transport, a credential that resolves, and no session
        to its BMC held in this process."""
        if self._make_driver is not make_driver:
            return []
        # pyghmi only now, as in make_driver.
        from maas_lib.bmc.ipmi import IpmiDriver
        from maas_lib.bmc.ipmi_batch import StatusJob

        jobs: list[tuple[int, Any]] = []
        for index, target in enumerate(targets):
            if target.fallback is not None or target.primary.protocol is not BmcProtocol.IPMI:
                continue
            try:
                credential = self._resolve(target.credential)
            except CredentialError:
                continue  # the per-host path reports it
            driver = self._make_driver(target.primary, credential, self.settings)
            assert isinstance(driver, IpmiDriver)
            if driver.has_session():
                continue
            jobs.append(
                (index, StatusJob(target.primary, credential, driver.call_deadline, driver.via))
            )
        return jobs

    def power(self, target: BmcTarget, action: PowerAction, *, wait: bool = True) -> BmcResult:
        return self._run(target, lambda d: self.set_power(d, action, wait=wait))

    def boot(self, target: BmcTarget, device: BootDevice, *, persistent: bool = False) -> BmcResult:
        def op(d: BmcDriver) -> None:
            self.call(d, lambda x: x.set_boot(device, persistent=persistent), f"boot {device}")

        return self._run(target, op)

    def fan_out(
        self, targets: Sequence[BmcTarget], op: Callable[[BmcTarget], BmcResult]
    ) -> list[BmcResult]:
        """Run `op` for every target; results in input order.

        Every host gets a worker (up to MAX_WORKERS) so hosts wait for their BMCs side by
        side; `concurrency` bounds the BMC calls actually in flight."""
        if not targets:
            return []
        workers = min(len(targets), max(MAX_WORKERS, self.settings.concurrency))
        from concurrent.futures import ThreadPoolExecutor  # a status of IPMI hosts needs none

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bmc") as pool:
            return list(pool.map(op, targets))
