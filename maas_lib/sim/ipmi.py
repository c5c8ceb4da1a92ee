"""Simulated IPMI BMCs: pyghmi's own `pyghmi.ipmi.bmc.Bmc` server, one UDP port per BMC.

One process serves them all: pyghmi keeps every socket in one module-level list served by
one IO thread (with `maas_lib.bmc.pyghmi_fixes` applied), so one `Session.wait_for_rsp`
loop dispatches packets for every BMC (up to ~1,000 per process: select() is capped at
FD_SETSIZE). Run it in a process of its own: pyghmi's client and server share routing
tables, so they must not share a process.

Three fixes to pyghmi 1.6.19's server, each a behaviour a real BMC has:
- it implements cipher suite 3 only, yet accepts the client's SHA-256 proposal (suite 17)
  and the client then crashes: refuse any other proposal with RMCP+ status 0x11 ("no cipher
  suite match") so the client falls back to suite 3;
- it drops RAKP1 for an unknown user, and the client retries forever: answer RAKP2 with
  status 0x0D ("unauthorized name");
- a new login from a client address deletes that client's sessions with *every* BMC of the
  process: drop only this BMC's entry.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as constants
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession
from pyghmi.ipmi.command import boot_devices

from maas_lib.bmc import pyghmi_fixes
from maas_lib.sim.machine import BootTarget, Machine

pyghmi_fixes.apply()

# (authentication, integrity, confidentiality) algorithms of cipher suite 3, the only one
# pyghmi's server implements: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
SUITE_3 = (1, 1, 1)
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_UNAUTHORIZED_NAME = 0x0D
NODE_BUSY = 0xC0
NOT_IN_PRESENT_STATE = 0xD5

_TO_TARGET = {
    "network": BootTarget.PXE,
    "hd": BootTarget.DISK,
    "optical": BootTarget.CD,
    "setup": BootTarget.BIOS,
    "default": BootTarget.NONE,
}
_FROM_TARGET = {v: k for k, v in _TO_TARGET.items()}


class Sha1OnlyServerSession(serversession.ServerSession):
    """A server session that refuses what pyghmi's server cannot honour."""

    bmc: SimBmc

    def create_open_session_response(self, request: Any) -> Any:
        # Open Session Request (IPMI 2.0 table 13-9) after the 16-byte header: three
        # 8-byte algorithm payloads, algorithm numbers at offsets 12, 20, 28.
        request = bytearray(request)
        proposed = tuple(request[i] & 0x3F for i in (12, 20, 28)) if len(request) >= 32 else None
        if proposed != SUITE_3:
            self.bmc.stats["refused_cipher"] += 1
            return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)

    def _got_rakp1(self, data: Any) -> Any:
        namelen = data[27] if len(data) > 27 else 0
        name = bytes(data[28 : 28 + namelen]).decode("utf-8", "replace")
        if not namelen or self.authdata.get(name) is None:
            self.bmc.stats["bad_user"] += 1
            sid = getattr(self, "clientsessionid", bytearray(4))
            self.send_payload(
                bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0]) + sid,
                constants.payload_types["rakp2"],
                retry=False,
            )
            return None
        return super()._got_rakp1(data)

    def _handle_ipmi_packet(self, data: Any, sockaddr: Any = None, qent: Any = None) -> Any:
        # A sessionless packet from a client that has a session here means a new login.
        if data[4] in (0, 2) and len(data) >= 13 and bytes(data[5:13]) == bytes(8):
            handlers = ipmisession.Session.bmc_handlers.get(sockaddr, {})
            if handlers.get(self.bmc.port) is self:
                del handlers[self.bmc.port]
                if not handlers:
                    ipmisession.Session.bmc_handlers.pop(sockaddr, None)
            self.bmc.sessionless_data(data, sockaddr)
            return None
        return super()._handle_ipmi_packet(data, sockaddr, qent)


class SimBmc(pyghmi_bmc.Bmc):
    """One simulated IPMI BMC in front of a `Machine`."""

    def __init__(
        self,
        machine: Machine,
        authdata: dict[str, str],
        port: int,
        address: str = "127.0.0.1",
        flaky_rate: float = 0.0,
        rng: random.Random | None = None,
    ):
        super().__init__(authdata, port=port, address=address)
        self.serversocket.setblocking(False)  # see pyghmi_fixes: never block the IO thread
        self.machine = machine
        self.flaky_rate = flaky_rate
        self._rng = rng or random.Random()
        self.stats = {"refused_cipher": 0, "bad_user": 0, "busy": 0, "commands": 0}

    def sessionless_data(self, data: Any, sockaddr: Any) -> Any:
        # Route RMCP+ Open Session requests to the refusing session class.
        if (
            len(data) >= 22
            and data[0] == 6
            and bytes(data[2:4]) == b"\xff\x07"
            and data[4] == 6
            and (data[5] & 0x3F) == 0x10
        ):
            Sha1OnlyServerSession(
                self.authdata,
                self.kg,
                sockaddr,
                self.serversocket,
                bytearray(data)[16:],
                self.uuid,
                bmc=self,
            )
            return None
        return super().sessionless_data(data, sockaddr)

    def send_device_id(self, session: Any) -> Any:
        # Spec-shaped Get Device ID (3-byte manufacturer, 2-byte product id).
        data = [
            self.deviceid,
            self.revision,
            self.firmwaremajor,
            self.firmwareminor,
            0x02,
            self.additionaldevices,
        ]
        data += list(struct.pack("<I", self.mfgid)[:3]) + list(struct.pack("<H", self.prodid))
        session.send_ipmi_response(data=data)

    def handle_raw_request(self, request: Any, session: Any) -> Any:
        self.stats["commands"] += 1
        if request["netfn"] == 0 and self.flaky_rate and self._rng.random() < self.flaky_rate:
            self.stats["busy"] += 1
            return session.send_ipmi_response(code=NODE_BUSY)
        if request["netfn"] == 0 and request["command"] == 4:  # Chassis Identify
            data = request["data"]
            # data[0]: seconds (0 = off; default 15), data[1] bit 0: force on.
            on = bool(data[1] & 1) if len(data) > 1 else (data[0] if data else 15) > 0
            self.machine.set_identify(on)
            return session.send_ipmi_response()
        return super().handle_raw_request(request, session)

    # -- chassis --------------------------------------------------------------------------
    def get_power_state(self) -> str:
        return self.machine.power_state()

    def power_on(self) -> int:
        self.machine.request_power("on")
        return 0

    def power_off(self) -> int:
        self.machine.request_power("off")
        return 0

    def power_shutdown(self) -> int:
        self.machine.request_power("off")
        return 0

    def power_reset(self) -> int:
        if self.machine.power_state() != "on":
            return NOT_IN_PRESENT_STATE
        self.machine.reset()
        return 0

    def power_cycle(self) -> int:
        if self.machine.power_state() != "on":
            return NOT_IN_PRESENT_STATE
        self.machine.reset()
        return 0

    def pulse_diag(self) -> int:
        return 0

    def cold_reset(self) -> int:
        return 0

    def is_active(self) -> bool:
        return False

    def get_system_guid(self) -> Any:
        return self.uuid

    # -- boot device ----------------------------------------------------------------------
    def get_boot_device(self) -> str:
        return _FROM_TARGET.get(self.machine.boot_target, "default")

    def set_boot_device(self, bootdevice: str) -> None:  # pragma: no cover - see below
        self.machine.set_boot(_TO_TARGET.get(bootdevice, BootTarget.NONE))

    def set_system_boot_options(self, request: Any, session: Any) -> Any:
        data = request["data"]
        if data[0] != 5:
            return super().set_system_boot_options(request, session)
        device = boot_devices.get((data[2] >> 2) & 0b1111)
        if device is None and data[2] != 0:
            return session.send_ipmi_response(code=0xCC)
        persistent = bool(data[1] & 0x40)
        self.machine.set_boot(_TO_TARGET.get(device or "default", BootTarget.NONE), persistent)
        return session.send_ipmi_response()


def prepare() -> None:
    """pyghmi wakes its IO thread by sending to this address; match the IPv4 servers."""
    ipmisession.myself = "127.0.0.1"


def poll(timeout: float) -> None:
    """Dispatch packets for every SimBmc of this process for up to `timeout` seconds."""
    ipmisession.Session.wait_for_rsp(timeout)
