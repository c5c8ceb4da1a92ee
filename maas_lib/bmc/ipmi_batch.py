"""The power state of many IPMI BMCs, read from one thread.

A status of a whole fleet is one short exchange per BMC (log in, Get Chassis Status, log
out). Done by a thread per host, most of the CPU goes to pyghmi handing packets between
threads (~2 ms per BMC, four times FreeIPMI's `ipmipower`). Here every login and command
is asynchronous (pyghmi's `onlogon` and command callbacks; see pyghmi_fixes, fix 12) and
the calling thread runs pyghmi's packet loop itself (fix 13) until every BMC has answered,
failed or run out of time: under 1 ms of CPU per BMC, so a status of 200 BMCs takes
about as long as the BMCs themselves need.

This is the happy path only. Whatever it cannot finish for certain is handed back as
`DEFERRED` for the per-host path (`BmcController.status`), which retries and classifies:
a transient failure (a BMC out of session slots), and a BMC that already has a session
in this process (pyghmi would hand that one out; it belongs to its caller).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyghmi.exceptions import IpmiException
from pyghmi.ipmi.private.session import Session

from maas_lib.bmc import pyghmi_fixes
from maas_lib.bmc.base import BmcEndpoint, PowerReading
from maas_lib.bmc.ipmi import classify_ipmi_error, reading_from_chassis_status
from maas_lib.credentials import Credential
from maas_lib.errors import BmcError, BmcUnreachable

#: Longest the pumping thread sleeps in pyghmi's loop before it looks at deadlines again.
PUMP_S = 0.05
#: Get Chassis Status (IPMI 2.0 table 28-3): netfn chassis, command 1.
_CHASSIS = {"netfn": 0x00, "command": 0x01}


class _Deferred:
    """Marker result: hand this BMC to the per-host path."""

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = _Deferred()
Outcome = PowerReading | BmcError | _Deferred


@dataclass(frozen=True)
class StatusJob:
    """One BMC to read: where, as whom, and how long it may take in all."""

    endpoint: BmcEndpoint
    credential: Credential
    deadline_s: float
    via: str


@dataclass(eq=False)
class _Flight:
    index: int
    job: StatusJob
    started: float
    session: Any = None
    owned: bool = False
    done: bool = False
    outcome: Outcome | None = None
    elapsed_s: float = 0.0


@dataclass
class _Batch:
    jobs: Sequence[StatusJob]
    concurrency: int
    endpoint_concurrency: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    flights: list[_Flight] = field(default_factory=list)
    per_endpoint: dict[tuple[str, int | None], int] = field(default_factory=dict)
    results: dict[int, tuple[Outcome, float]] = field(default_factory=dict)
    #: id() of the sessions this batch's flights in the air own.
    sessions: set[int] = field(default_factory=set)


def read_power_many(
    jobs: Sequence[StatusJob], *, concurrency: int, endpoint_concurrency: int
) -> list[tuple[Outcome, float]]:
    """Each job's outcome (a reading, a final error, or DEFERRED) and its seconds, in the
    order of `jobs`; at most `concurrency` BMCs (and `endpoint_concurrency` per endpoint)
    in flight at once."""
    if not jobs:
        return []
    batch = _Batch(jobs, concurrency, endpoint_concurrency)
    waiting = list(range(len(jobs)))
    with pyghmi_fixes.own_packet_loop() as loop:
        while waiting or batch.flights:
            waiting = _start_more(batch, waiting, Session)
            loop.pump(PUMP_S)
            _sweep(batch)
    return [batch.results[i] for i in range(len(jobs))]


def _key(endpoint: BmcEndpoint) -> tuple[str, int | None]:
    return endpoint.address, endpoint.port


def _start_more(batch: _Batch, waiting: list[int], session_cls: Any) -> list[int]:
    """Log in to waiting BMCs while the limits allow; returns those still waiting."""
    left: list[int] = []
    for index in waiting:
        job = batch.jobs[index]
        key = _key(job.endpoint)
        busy = batch.per_endpoint.get(key, 0)
        if len(batch.flights) >= batch.concurrency or busy >= batch.endpoint_concurrency:
            left.append(index)
            continue
        batch.per_endpoint[key] = busy + 1
        flight = _Flight(index, job, time.monotonic())
        batch.flights.append(flight)
        _login(batch, flight, session_cls)
    return left


def _login(batch: _Batch, flight: _Flight, session_cls: Any) -> None:
    job = flight.job
    try:
        with pyghmi_fixes.pinned_cipher_suite(job.endpoint.ipmi_cipher_suite):
            session = session_cls(
                job.endpoint.address,
                job.credential.username.encode(),
                job.credential.password.encode(),
                port=job.endpoint.port,
                onlogon=lambda response: _logged_on(batch, flight, response),
                keepalive=False,
                # Reading power needs User level only: no Set Session Privilege Level.
                privlevel=pyghmi_fixes.USER_PRIVILEGE,
            )
    except Exception as exc:
        _finish(batch, flight, classify_ipmi_error(exc, job.via))
        return
    flight.session = session
    # pyghmi hands out the session it already has for this BMC and user (one another
    # caller logged in synchronously, or another host of this batch behind the same
    # endpoint): it is its holder's. The per-host path waits for it properly.
    shared = not session.async_ or id(session) in batch.sessions
    if shared:
        _finish(batch, flight, DEFERRED)
    else:
        flight.owned = True
        batch.sessions.add(id(session))


def _logged_on(batch: _Batch, flight: _Flight, response: dict[str, Any]) -> None:
    if flight.done:
        return
    if "error" in response:
        _finish(batch, flight, _login_error(flight, response["error"]))
        return
    session = flight.session
    if session is None:  # answered before the constructor returned: not ours to use
        _finish(batch, flight, DEFERRED)
        return
    session.raw_command(**_CHASSIS, callback=lambda reply: _answered(batch, flight, reply))


def _answered(batch: _Batch, flight: _Flight, reply: dict[str, Any]) -> None:
    session = flight.session
    session.incommand = False  # pyghmi's contract for a command with a callback
    while session.evq:
        session.evq.popleft().set()
    if "error" in reply or reply.get("code"):
        error = IpmiException(reply.get("error") or "Get Chassis Status failed", reply.get("code"))
        _finish(batch, flight, classify_ipmi_error(error, flight.job.via))
        return
    _finish(batch, flight, reading_from_chassis_status(reply.get("data", b"")))


def _login_error(flight: _Flight, message: Any) -> BmcError:
    """A failed asynchronous login, classified as the per-host path classifies it: by the
    failing step's code (pyghmi_fixes, fix 7), its text as a last resort."""
    error = IpmiException(str(message))
    session = flight.session
    error.login_status = getattr(session, "login_status", None)  # type: ignore[attr-defined]
    return classify_ipmi_error(error, flight.job.via)


def _finish(batch: _Batch, flight: _Flight, outcome: Outcome) -> None:
    with batch.lock:
        if flight.done:
            return
        flight.done = True
    if isinstance(outcome, BmcError) and outcome.transient:
        outcome = DEFERRED  # the per-host path retries with backoff
    flight.outcome = outcome
    flight.elapsed_s = time.monotonic() - flight.started
    session = flight.session
    if flight.owned and session is not None and not session.broken:
        try:
            session.logout()  # Close Session, not waited for: frees the BMC's slot now
        except Exception:  # logging out is best effort; the BMC times the session out
            session.broken = True


def _sweep(batch: _Batch) -> None:
    """Retire finished flights; end those past their deadline or whose session broke
    without telling us (an error while handling its packet: pyghmi_fixes, fix 4)."""
    now = time.monotonic()
    still: list[_Flight] = []
    for flight in batch.flights:
        session = flight.session
        if not flight.done:
            if session is not None and session.broken and flight.owned:
                message = getattr(session, "dispatch_error", None) or session.errormsg
                _finish(batch, flight, _login_error(flight, message))
            elif now - flight.started > flight.job.deadline_s:
                seconds = flight.job.deadline_s
                error = f"read power state: no answer within {seconds:g}s"
                if session is not None and flight.owned:
                    # Nothing more will be answered: the logout must not wait for the
                    # command in flight (it would hold up this thread, and every BMC).
                    session.incommand = False
                _finish(batch, flight, BmcUnreachable(error, via=flight.job.via))
                if session is not None and flight.owned:
                    session._mark_broken(error)  # and forget its retry timers
        if flight.done:
            key = _key(flight.job.endpoint)
            batch.per_endpoint[key] -= 1
            if flight.owned:
                batch.sessions.discard(id(session))
            assert flight.outcome is not None
            batch.results[flight.index] = (flight.outcome, flight.elapsed_s)
        else:
            still.append(flight)
    batch.flights = still
