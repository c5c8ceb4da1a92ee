"""The simulator process: machines, their IPMI and Redfish BMCs, and the files users need.

Besides the IPMI BMCs and sushy-tools' emulator it serves `--redfish-profile` hosts, each
behind a Redfish profile service (redfish_profile_server.py: plain HTTP on loopback).

`python -m maas_lib.sim.runner CONFIG.json` runs it in the foreground until SIGTERM;
`maasctl sim up` starts it in the background. It writes into its directory:
  inventory.yml    an Ansible inventory of the simulated hosts (import with maasctl)
  credentials.env  the credential env vars to use (`source` it); mode 0600
  hosts.json       every host with its protocol, port/system id and injected fault
  state.json       every machine's power, boot and installer state, refreshed each second
  ready.json       written once every BMC is listening: pid, ports, URL
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from maas_lib.errors import MaasError
from maas_lib.sim.config import SimConfig, SimHost, layout
from maas_lib.sim.machine import Machine, MachineConfig
from maas_lib.sim.redfish_profile_server import ROOT, RedfishService
from maas_lib.sim.redfish_profiles import Record, profile_named

log = logging.getLogger("maas_lib.sim")
USER = "admin"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _closed_port() -> int:
    """A loopback TCP port nothing listens on (a dead Redfish BMC)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InstallBridge:
    """The simulator's side of the install-completion path, over the fleet's database."""

    def __init__(self, db: str | None):
        self.db = db
        self._lock = threading.Lock()

    def lookup(self, host: str) -> str | None:
        from maas_lib.fleet import open_fleet  # the library: only when an installer reports

        try:
            with self._lock, open_fleet(self.db) as fleet:
                return fleet.install_target(host)
        except MaasError as exc:
            log.warning("install target lookup for %s failed: %s", host, exc)
            return None

    def report(self, host: str, image: str, reason: str | None) -> None:
        from maas_lib.fleet import open_fleet  # the library: only when an installer reports

        try:
            with self._lock, open_fleet(self.db) as fleet:
                fleet.report_install(host, image, reason)
            log.info("%s: install of %s %s", host, image, "failed" if reason else "succeeded")
        except MaasError as exc:
            log.warning("install report for %s failed: %s", host, exc)


def _profile_services(
    hosts: list[SimHost], password: str, power_delay: float
) -> dict[str, RedfishService]:
    """Host name -> its running profile service; a host whose system is its profile's first
    starts a new service, so a two-node blade's hosts share one BMC."""
    services: dict[str, RedfishService] = {}
    service = None
    for h in hosts:
        if h.profile is None:
            continue
        profile = profile_named(h.profile)
        if service is None or h.system_id == profile.systems[0]:
            service = RedfishService(profile.but(power_delay=power_delay), USER, password)
        services[h.name] = service
    return services


#: Redfish boot override targets in the words `sim status` uses for every other machine.
_BOOT_WORDS = {"Hdd": "disk", "BiosSetup": "bios"}


def _profile_snapshot(name: str, service: RedfishService, system: str) -> dict[str, Any]:
    """A profile host's row in state.json: the machine's own power, whatever the BMC says."""
    st = service.state
    with st.lock:
        machine = st.systems[system]
        machine.settle()
        return {
            "host": name,
            "power": machine.power.lower(),
            "boot_target": _BOOT_WORDS.get(machine.boot_target, machine.boot_target.lower()),
            "boot_persistent": machine.boot_enabled == "Continuous",
            "media_url": machine.media_image,
            "os": None,
            "installed_image": None,
            "installs": 0,
            "profile": st.profile.name,
        }


def _inventory(
    config: SimConfig,
    hosts: list[SimHost],
    redfish_url: str | None,
    ca: Path | None,
    dead_url: str,
    profile_urls: dict[str, str],
) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for h in hosts:
        if h.profile:
            # Ansible group names may not hold "-" (cray-ex -> sim_cray_ex).
            group = groups.setdefault(f"sim_{h.profile.replace('-', '_')}", {"hosts": {}})
            group["hosts"][h.name] = {
                "rack": h.rack,
                "bmc_credential": "sim",
                "bmc_protocol": "redfish",
                "bmc_address": profile_urls[h.name],  # http://: the services have no TLS
                "bmc_system": f"{ROOT}/Systems/{h.system_id}",
                "hw_model": f"sim-{h.profile}",
                "bmc_vendor": h.profile,
            }
            continue
        group = groups.setdefault(f"sim_{h.kind}", {"hosts": {}})
        cred = "sim-wrong" if h.fault == "wrong_creds" else "sim"
        hv: dict[str, Any] = {"rack": h.rack, "bmc_credential": cred}
        if h.kind in ("ipmi", "dual"):
            hv |= {"bmc_address": "127.0.0.1", "bmc_port": h.ipmi_port, "bmc_protocol": "ipmi"}
        if h.kind == "redfish":
            url = dead_url if h.fault == "dead" else redfish_url
            hv |= {"bmc_address": url, "bmc_protocol": "redfish"}
        if h.system_id:
            hv["bmc_system"] = f"/redfish/v1/Systems/{h.system_id}"
            if ca:
                hv["bmc_tls_ca"] = str(ca)
        if h.kind == "dual":
            hv |= {"bmc_fallback_protocol": "redfish", "bmc_fallback_address": redfish_url}
        if h.fault:
            hv["sim_fault"] = h.fault
        hv |= {"hw_model": "sim-1u", "bmc_vendor": "maas-lib-sim"}
        group["hosts"][h.name] = hv
    return {"all": {"children": groups}}


def run(config: SimConfig, stop: threading.Event | None = None) -> None:
    """Serve every simulated BMC until `stop` is set (or SIGTERM/SIGINT in the main thread)."""
    # The emulators (pyghmi, sushy-tools, flask) load in the simulator's process only.
    import yaml

    from maas_lib.sim import ipmi as sim_ipmi
    from maas_lib.sim.redfish import RedfishEmulator, RedfishFaults, write_htpasswd

    stop = stop or threading.Event()
    directory = config.directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready.json").unlink(missing_ok=True)
    hosts = layout(config)
    password, wrong = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    bridge = InstallBridge(config.db)
    machines: dict[str, Machine] = {}
    for h in hosts:
        if h.profile:
            continue  # its machine lives in its profile service
        delay = config.power_delay + (config.slow_latency if h.fault == "slow" else 0.0)
        machines[h.name] = Machine(
            h.name,
            MachineConfig(
                power_delay=delay,
                install_time=config.install_time,
                install_failure_rate=1.0
                if h.fault == "bad_install"
                else config.install_failure_rate,
                seed=config.seed,
            ),
            reporter=bridge.report,
            lookup=bridge.lookup,
        )

    rng = random.Random(config.seed)
    bmcs = []
    for h in hosts:
        if h.serves_ipmi:
            assert h.ipmi_port is not None
            bmcs.append(
                sim_ipmi.SimBmc(
                    machines[h.name],
                    {USER: password},
                    port=h.ipmi_port,
                    flaky_rate=config.flaky_rate if h.fault == "flaky" else 0.0,
                    rng=rng,
                )
            )

    emulator = None
    ca = None
    redfish_hosts = [h for h in hosts if h.serves_redfish]
    if redfish_hosts:
        cert = key = None
        if config.https:
            from maas_lib.sim.pki import make_pki  # cryptography: HTTPS only

            pki = make_pki(directory / "pki")
            ca, cert, key = pki["ca"], pki["cert"], pki["key"]
        faults = RedfishFaults(
            slow=frozenset(h.system_id for h in redfish_hosts if h.fault == "slow"),
            latency=config.slow_latency,
            flaky=frozenset(h.system_id for h in redfish_hosts if h.fault == "flaky"),
            flaky_rate=config.flaky_rate,
        )
        emulator = RedfishEmulator(
            {h.system_id: machines[h.name] for h in redfish_hosts if h.system_id},
            auth_file=write_htpasswd(directory / "htpasswd", {USER: password}),
            port=config.redfish_port,
            cert=cert,
            key=key,
            faults=faults,
            seed=config.seed,
        ).start()

    profile_services = _profile_services(hosts, password, config.power_delay)
    profile_systems = {h.name: h.system_id for h in hosts if h.profile and h.system_id}
    scheme = "https" if config.https else "http"
    dead_url = f"{scheme}://127.0.0.1:{_closed_port()}"
    inventory = _inventory(
        config,
        hosts,
        emulator.url if emulator else None,
        ca,
        dead_url,
        {name: svc.url for name, svc in profile_services.items()},
    )
    (directory / "inventory.yml").write_text(
        "# Written by the maas-lib fleet simulator.\n" + yaml.safe_dump(inventory, sort_keys=False)
    )
    _write_private(
        directory / "credentials.env",
        f"export MAAS_CRED_SIM_USERNAME={USER}\nexport MAAS_CRED_SIM_PASSWORD={password}\n"
        f"export MAAS_CRED_SIM_WRONG_USERNAME={USER}\n"
        f"export MAAS_CRED_SIM_WRONG_PASSWORD={wrong}\n",
    )
    _atomic_json(directory / "hosts.json", [h.__dict__ for h in hosts])

    ipmi_stats = {b.machine.name: b.stats for b in bmcs}

    def dump_state() -> None:
        for svc in set(profile_services.values()):
            # The record is for tests of one short call; a long-running simulator would
            # otherwise keep every request (and session token) it ever served.
            with svc.state.lock:
                svc.state.record = Record()
        _atomic_json(
            directory / "state.json",
            [{**m.snapshot(), "ipmi": dict(ipmi_stats.get(m.name, {}))} for m in machines.values()]
            + [
                _profile_snapshot(name, svc, profile_systems[name])
                for name, svc in profile_services.items()
            ],
        )

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    dump_state()
    _atomic_json(
        directory / "ready.json",
        {
            "pid": os.getpid(),
            "ipmi_ports": [b.port for b in bmcs],
            "redfish_url": emulator.url if emulator else None,
            "redfish_profiles": {name: svc.url for name, svc in profile_services.items()},
            "hosts": len(hosts),
        },
    )
    log.info(
        "simulating %d hosts (%d IPMI BMCs%s%s)",
        len(hosts),
        len(bmcs),
        f", Redfish at {emulator.url}" if emulator else "",
        f", {len(set(profile_services.values()))} Redfish profile BMCs" if profile_services else "",
    )
    try:
        last = 0.0
        sim_ipmi.prepare()
        while not stop.is_set():
            if bmcs:
                sim_ipmi.poll(0.5)
            else:
                stop.wait(0.5)
            if time.monotonic() - last >= 1.0:
                dump_state()
                last = time.monotonic()
    finally:
        if emulator:
            emulator.stop()
        for svc in set(profile_services.values()):
            svc.stop()
        for b in bmcs:
            b.serversocket.close()
        dump_state()
        (directory / "ready.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m maas_lib.sim.runner CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sim: %(message)s")
    config = SimConfig.model_validate_json(Path(args[0]).read_text())
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
