"""Simulated Redfish BMCs: sushy-tools' emulator with its fake driver, backed by `Machine`s.

One emulator serves every simulated Redfish system under `/redfish/v1/Systems/<id>`.
The stock fake driver keeps its own power state (with random 1-11 s delays, in an SQLite
file under /tmp shared by every emulator); here power, boot override and virtual media act
on the simulator's machines instead, so the installer model and fault injection apply.
"""

from __future__ import annotations

import collections.abc
import copy
import importlib.util
import json
import logging
import random
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas_lib.sim.machine import BootTarget, Machine

log = logging.getLogger(__name__)

_TO_TARGET = {
    "Pxe": BootTarget.PXE,
    "Hdd": BootTarget.DISK,
    "Cd": BootTarget.CD,
    "BiosSetup": BootTarget.BIOS,
    "None": BootTarget.NONE,
}
_FROM_TARGET = {v: k for k, v in _TO_TARGET.items()}


class _MemDict(collections.abc.MutableMapping):
    """In-memory stand-in for sushy-tools' SQLite-backed PersistentDict (copy in, copy out:
    the emulator mutates what it reads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._d: dict[Any, Any] = {}
        self._lock = threading.RLock()

    def __getitem__(self, k: Any) -> Any:
        with self._lock:
            return copy.deepcopy(self._d[k])

    def __setitem__(self, k: Any, v: Any) -> None:
        with self._lock:
            self._d[k] = copy.deepcopy(v)

    def __delitem__(self, k: Any) -> None:
        with self._lock:
            del self._d[k]

    def __iter__(self) -> Any:
        with self._lock:
            return iter(list(self._d))

    def __len__(self) -> int:
        return len(self._d)


@dataclass
class RedfishFaults:
    slow: frozenset[str] = frozenset()  # system ids answering after `latency` seconds
    latency: float = 2.0
    flaky: frozenset[str] = frozenset()  # system ids failing `flaky_rate` of calls with 503
    flaky_rate: float = 0.0


def _systems_driver(machines: dict[str, Machine]) -> type:
    # sushy-tools, flask and werkzeug (~0.3 s) only when a Redfish emulator starts.
    from sushy_tools import error as fishy_error
    from sushy_tools.emulator.resources.systems import fakedriver

    class MachineSystemsDriver(fakedriver.FakeDriver):
        """The fake driver's bookkeeping, with power and boot acting on Machines."""

        def __init__(self) -> None:
            super().__init__()
            self.boot_enabled: dict[str, str] = {}

        def machine(self, identity: str) -> Machine:
            return machines[self.uuid(identity)]

        def get_power_state(self, identity: str) -> str:
            return "On" if self.machine(identity).power_state() == "on" else "Off"

        def set_power_state(self, identity: str, state: str) -> None:
            m = self.machine(identity)
            if state in ("On", "ForceOn"):
                m.request_power("on")
            elif state in ("ForceOff", "GracefulShutdown"):
                m.request_power("off")
            elif state in ("ForceRestart", "GracefulRestart"):
                if m.power_state() != "on":
                    raise fishy_error.Conflict("system is powered off")
                m.reset()
            else:
                raise fishy_error.NotSupportedError(f"Reset type {state} is not supported")

        def get_boot_device(self, identity: str) -> str:
            return _FROM_TARGET.get(self.machine(identity).boot_target, "None")

        def set_boot_device(self, identity: str, boot_source: str) -> None:
            if boot_source not in _TO_TARGET:
                raise fishy_error.BadRequest(f"unknown boot source {boot_source}")
            enabled = self.boot_enabled.get(self.uuid(identity), "Once")
            target = _TO_TARGET[boot_source] if enabled != "Disabled" else BootTarget.NONE
            self.machine(identity).set_boot(target, persistent=enabled == "Continuous")

        def get_boot_enabled(self, identity: str) -> str:
            m = self.machine(identity)
            if m.boot_target is BootTarget.NONE:
                return "Disabled"
            return "Continuous" if m.boot_persistent else "Once"

        def set_boot_enabled(self, identity: str, enabled: str) -> None:
            if enabled not in ("Once", "Continuous", "Disabled"):
                raise fishy_error.BadRequest(f"invalid BootSourceOverrideEnabled {enabled}")
            uuid = self.uuid(identity)
            self.boot_enabled[uuid] = enabled
            m = machines[uuid]
            if enabled == "Disabled":
                m.set_boot(BootTarget.NONE)
            else:
                m.set_boot(m.boot_target, persistent=enabled == "Continuous")

    return MachineSystemsDriver


def _handler_class() -> type:
    from werkzeug.serving import WSGIRequestHandler  # see _systems_driver

    class NoDelayHandler(WSGIRequestHandler):
        # werkzeug writes headers and body as separate TLS records; with Nagle on, every
        # HTTPS response waits for a delayed ACK (~12 ms).
        disable_nagle_algorithm = True
        timeout = 30

        def handle(self) -> None:
            # The TLS handshake happens here, in the connection's own thread, so one
            # silent client cannot stall accept() for everyone.
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError) as exc:
                    log.debug("TLS handshake with %s failed: %s", self.client_address, exc)
                    return
            super().handle()

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return NoDelayHandler


def _private_emulator_module() -> Any:
    """A private copy of sushy_tools.emulator.main: its `app` is a module-level singleton."""
    import sushy_tools.emulator.main as canonical  # see _systems_driver

    name = f"maas_lib_sim_sushy_emulator_{id(object())}"
    spec = importlib.util.spec_from_file_location(name, canonical.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Flask resolves its root path through sys.modules
    spec.loader.exec_module(module)
    return module


class RedfishEmulator:
    """sushy-tools' emulator serving `machines` (system id → Machine) on one port."""

    def __init__(
        self,
        machines: dict[str, Machine],
        *,
        auth_file: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        cert: Path | None = None,
        key: Path | None = None,
        faults: RedfishFaults | None = None,
        seed: int | None = None,
    ):
        # See _systems_driver.
        import flask
        from sushy_tools.emulator import memoize
        from werkzeug.serving import make_server

        memoize.PersistentDict = _MemDict  # no state files under /tmp
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        module = _private_emulator_module()
        app = module.app
        app.configure(
            extra_config={
                "SUSHY_EMULATOR_FAKE_DRIVER": True,
                "SUSHY_EMULATOR_FAKE_SYSTEMS": [
                    {"uuid": ident, "name": m.name, "power_state": "Off", "nics": []}
                    for ident, m in machines.items()
                ],
                "SUSHY_EMULATOR_FEATURE_SET": "full",
                "SUSHY_EMULATOR_AUTH_FILE": str(auth_file),
            }
        )
        driver = _systems_driver(machines).initialize(app.config, app.logger)()
        module.Application.systems = property(lambda self: driver)
        self.driver = driver
        faults = faults or RedfishFaults()
        rng = random.Random(seed)

        # Virtual media: no download of the image; the machine sees what is inserted.
        vmedia = app.vmedia
        vmedia._get_image = lambda url, *a, **kw: (url.rsplit("/", 1)[-1] or "image.iso", url)
        insert, eject = vmedia.insert_image, vmedia.eject_image

        def insert_image(identity: str, device: str, image_url: str, *a: Any, **kw: Any) -> Any:
            result = insert(identity, device, image_url, *a, **kw)
            if device == "Cd" and identity in machines:
                machines[identity].insert_media(image_url)
            return result

        def eject_image(identity: str, device: str) -> Any:
            result = eject(identity, device)
            if device == "Cd" and identity in machines:
                machines[identity].eject_media()
            return result

        vmedia.insert_image, vmedia.eject_image = insert_image, eject_image

        def system_id() -> str | None:
            args = flask.request.view_args or {}
            ident = args.get("identity")
            if ident is None:
                return None
            try:
                return driver.uuid(ident)
            except Exception:
                return None

        @app.before_request
        def _faults_and_boot_enabled() -> Any:
            ident = system_id()
            if ident in faults.slow:
                time.sleep(faults.latency)
            if ident in faults.flaky and rng.random() < faults.flaky_rate:
                return flask.Response(
                    json.dumps(
                        {
                            "error": {
                                "code": "Base.1.0.GeneralError",
                                "message": "simulated BMC hiccup",
                            }
                        }
                    ),
                    status=503,
                    content_type="application/json",
                )
            # The stock emulator ignores BootSourceOverrideEnabled: honour it here.
            if flask.request.method == "PATCH" and flask.request.endpoint == "system_resource":
                body = flask.request.get_json(silent=True) or {}
                if "IndicatorLED" in body and ident in machines:
                    machines[ident].set_identify(body["IndicatorLED"] != "Off")
                boot = body.get("Boot") or {}
                if "BootSourceOverrideEnabled" in boot:
                    driver.set_boot_enabled(ident, boot["BootSourceOverrideEnabled"])
                    rest = {k for k in boot if k != "BootSourceOverrideEnabled"}
                    if not rest and "IndicatorLED" not in body:
                        return flask.Response(status=204)
            return None

        @app.after_request
        def _report_boot_enabled(resp: Any) -> Any:
            if (
                flask.request.method == "GET"
                and resp.status_code == 200
                and flask.request.endpoint == "system_resource"
            ):
                data = json.loads(resp.get_data())
                data["Boot"]["BootSourceOverrideEnabled"] = driver.get_boot_enabled(
                    flask.request.view_args["identity"]
                )
                data["Boot"]["BootSourceOverrideEnabled@Redfish.AllowableValues"] = [
                    "Once",
                    "Continuous",
                    "Disabled",
                ]
                resp.set_data(json.dumps(data))
            return resp

        self.server = make_server(host, port, app, threaded=True, request_handler=_handler_class())
        # Clients keep connections alive; their handler threads must not hold up exit.
        self.server.daemon_threads = True
        self.server.block_on_close = False
        scheme = "http"
        if cert and key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
            self.server.socket = ctx.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.server.ssl_context = ctx
            scheme = "https"
        self.url = f"{scheme}://{host}:{self.server.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="redfish-sim",
            daemon=True,
        )

    def start(self) -> RedfishEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """bcrypt htpasswd (the only scheme sushy-tools accepts); cost 4, checked per request."""
    import bcrypt  # only for a Redfish emulator with users

    lines = [
        f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
        for u, p in users.items()
    ]
    path.write_text("".join(lines))
    path.chmod(0o600)
    return path
