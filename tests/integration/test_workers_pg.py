"""Active-active on PostgreSQL: three `maasctl run` workers share one queue against the
simulator; one is SIGKILLed mid-rollout and another takes over its request.

Judged by the simulator's own record (each machine's power history): no host was acted on
by two requests at once, and no host a request had completed was acted on again by it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

import maas_lib
from tests.conftest import patience
from tests.simfleet import run_args, running_sim

pytestmark = pytest.mark.slow

# At most two requests per worker, so that four requests need more than one worker.
ARGS = [*run_args(), "--claim-ttl", "3"]
ARGS += ["--max-requests", "2"]


def _ts(iso: str | None) -> float:
    if iso is None:
        return float("inf")
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "maas_lib", "run", "--until-idle", *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_three_workers_on_postgresql_survive_a_sigkill_without_double_actions(
    pg_url, tmp_path, monkeypatch
):
    with running_sim(tmp_path / "sim", ipmi=12, redfish=4, power_delay=0.3) as sim:
        for key, value in sim.env.items():
            monkeypatch.setenv(key, value)
        env = {**os.environ, "MAAS_DB": pg_url}
        ipmi = sim.hosts(kind="ipmi")
        redfish = sim.hosts(kind="redfish")
        with maas_lib.open_fleet(pg_url) as fleet:
            fleet.import_hosts([sim.info["inventory"]])
            assert all(r.ok for r in fleet.bmc_power("on", ipmi + redfish))
            since = time.time()
            # r1 holds ipmi 1-8; r2 overlaps it on 5-8 and waits for them; r3 overlaps
            # r1 on 1-2 and drops them (naming r1); r4 has two Redfish hosts alone.
            r1 = fleet.submit("power-cycle", ipmi[:8], batch_size="2").id
            r2 = fleet.submit("power-cycle", ipmi[4:], batch_size="2", on_overlap="wait").id
            r3 = fleet.submit("power-cycle", ipmi[:2] + redfish[:2], batch_size="1").id
            r4 = fleet.submit("power-cycle", redfish[2:], batch_size="1").id
            rids = [r1, r2, r3, r4]

            workers = [_worker(env) for _ in range(3)]
            try:
                # Kill a worker that holds a request some of whose hosts are done.
                deadline = time.monotonic() + patience(60)
                victim = None
                while victim is None:
                    assert time.monotonic() < deadline, "no request made progress in 60 s"
                    for w in fleet.store.list_workers(ttl=10):
                        done = [
                            r
                            for r in w.requests
                            if fleet.status(r).counts.get("succeeded", 0) >= 1
                            and fleet.status(r).counts.get("pending", 0) >= 1
                        ]
                        if done:
                            victim = (w, done[0])
                            break
                    time.sleep(0.05)
                info, held = victim
                os.kill(info.pid, signal.SIGKILL)
                done_at_kill = {h.host for h in fleet.status(held).hosts if h.state == "succeeded"}
                for w in workers:
                    if w.pid == info.pid:
                        w.wait(10)
                        continue
                    _, err = w.communicate(timeout=patience(240))
                    assert w.returncode == 0, err
            finally:
                for w in workers:
                    if w.poll() is None:
                        w.kill()
                        w.wait(10)

            states = {rid: fleet.status(rid) for rid in rids}
            assert {rid: str(st.state) for rid, st in states.items()} == dict.fromkeys(
                rids, "succeeded"
            ) | {r3: "partial"}, {rid: st.reason for rid, st in states.items()}
            r3_hosts = {h.host: h for h in states[r3].hosts}
            for h in ipmi[:2]:
                assert r3_hosts[h].state == "dropped" and r3_hosts[h].holder == r1
            # The dead worker's request was resumed by another worker.
            # The work spread: requests were claimed by more than one worker, and the
            # dead worker's request was resumed by another.
            events = [e for rid in rids for e in fleet.events(rid)]
            claimers = {e.actor for e in events if e.kind == "request_claimed"}
            assert len(claimers) >= 2, claimers
            resumers = {e.actor for e in fleet.events(held) if e.kind == "request_resumed"}
            assert resumers and info.id not in resumers

            # Every step interval, by host, with the request that ran it.
            intervals: dict[str, list[tuple[float, float, int, str, str]]] = {}
            for rid in rids:
                for s in fleet.steps(rid):
                    intervals.setdefault(s["host"], []).append(
                        (_ts(s["started"]), _ts(s["finished"]), rid, s["step"], s["outcome"])
                    )
            machines = sim.state()
            # A step's start is written before its BMC command and its end after the
            # change is confirmed, on the same clock as the simulator's record: the only
            # slack needed is the timestamps' rounding.
            slack = 0.002
            for host, spans in intervals.items():
                # Two requests' steps on one host never overlap in time ...
                spans.sort()
                for a, b in itertools.pairwise(spans):
                    if a[2] != b[2]:
                        assert a[1] <= b[0] + slack, (host, a, b)
                # ... and every power change the simulator saw falls within a step of
                # exactly one request.
                for t, power in machines[host]["power_history"]:
                    if t < since:
                        continue
                    owners = {
                        rid for start, end, rid, _, _ in spans if start - slack <= t <= end + slack
                    }
                    assert len(owners) == 1, (host, t, power, owners)
            # No host a request had completed was acted on again by that request: each
            # (request, host, step) succeeded once, and the hosts done before the kill
            # were powered off exactly once by that request.
            ok = [
                (rid, host, step)
                for host, spans in intervals.items()
                for _, _, rid, step, outcome in spans
                if outcome == "succeeded"
            ]
            assert len(ok) == len(set(ok))
            for host in done_at_kill:
                offs = [
                    t
                    for t, p in machines[host]["power_history"]
                    if p == "off"
                    and t >= since
                    and any(
                        rid == held and s - slack <= t <= e + slack
                        for s, e, rid, _, _ in intervals[host]
                    )
                ]
                assert len(offs) == 1, (host, offs)
            # Hosts shared by r1 and r2 were cycled by both, one after the other.
            for host in ipmi[4:8]:
                offs = [t for t, p in machines[host]["power_history"] if p == "off" and t >= since]
                assert len(offs) == 2, (host, offs)
