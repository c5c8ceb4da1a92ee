"""IPMI peers for the IPMI client-trust tests: OpenIPMI's `ipmi_sim` (a C IPMI 2.0 LAN BMC
with a real session table) and an IPMI-1.5-only front for it.

`ipmi_sim` always offers RMCP+ (IPMI 2.0); a BMC that speaks only IPMI 1.5 is made by
`Ipmi15Front`, a UDP relay that answers as such a BMC does: its Get Channel Authentication
Capabilities reply carries no IPMI 2.0 support, and RMCP+ messages go unanswered. The
IPMI 1.5 sessions themselves (challenge, MD5-authenticated activation, commands) are
ipmi_sim's own; `ipmitool -I lan` works through the front, `-I lanplus` does not.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.simfleet import free_udp_base

IPMI_SIM = shutil.which("ipmi_sim")
IPMITOOL = shutil.which("ipmitool")
USER, PASSWORD = "admin", "trust-pw"

_CHASSIS = """#!/bin/sh
# ipmi_sim chassis control: <device> get parm... | <device> set parm value...
state="$(dirname "$0")/power"
shift
op="$1"; shift
if [ "$op" = get ]; then
  for p in "$@"; do
    case "$p" in
      power) echo "power:$(cat "$state" 2>/dev/null || echo 1)";;
      boot) echo "boot:default";;
    esac
  done
else
  while [ $# -gt 1 ]; do
    case "$1" in power) echo "$2" > "$state";; esac
    shift 2
  done
fi
"""


@dataclass
class IpmiSim:
    port: int
    directory: Path
    users: list[str]

    def ipmitool(self, *args: str, interface: str = "lanplus", port: int | None = None) -> str:
        """Run ipmitool against this BMC (or a front at `port`); its stdout."""
        cmd = [IPMITOOL or "ipmitool", "-I", interface, "-H", "127.0.0.1"]
        cmd += ["-p", str(port or self.port), "-U", USER, "-P", PASSWORD]
        if interface == "lanplus":
            cmd += ["-C", "3"]
        proc = subprocess.run(
            cmd + list(args), capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode:
            raise RuntimeError(f"ipmitool {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def active_sessions(self) -> int:
        """Sessions the BMC counts as active, as ipmitool reads them (its own excluded)."""
        out = self.ipmitool("session", "info", "active", interface="lan")
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "active sessions":
                return int(value) - 1
        raise RuntimeError(f"no session count in {out!r}")


@contextmanager
def ipmi_sim(directory: Path, *, extra_users: int = 0) -> Iterator[IpmiSim]:
    """One ipmi_sim on a free loopback UDP port, user `USER` (and `extra_users` more,
    `user3`..., same password: separate logins of one client process)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_udp_base(1, start=24000)
    chassis = directory / "chassis.sh"
    chassis.write_text(_CHASSIS)
    chassis.chmod(0o755)
    auths = "none md2 md5 straight"
    users = [USER] + [f"user{n}" for n in range(3, 3 + extra_users)]
    lines = [
        'name "trust"',
        "set_working_mc 0x20",
        "  startlan 1",
        f"    addr 127.0.0.1 {port}",
        "    priv_limit admin",
        *(f"    allowed_auths_{p} {auths}" for p in ("callback", "user", "operator", "admin")),
        "    guid a123456789abcdefa123456789abcdef",
        "  endlan",
        f'  chassis_control "{chassis} 0x20"',
        *(f'  user {n} true "{u}" "{PASSWORD}" admin 10 md5' for n, u in enumerate(users, 2)),
    ]
    (directory / "lan.conf").write_text("\n".join(lines) + "\n")
    (directory / "sim.emu").write_text(
        "mc_setbmc 0x20\n"
        "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
        "mc_enable 0x20\n"
    )
    proc = subprocess.Popen(
        [IPMI_SIM or "ipmi_sim", "-c", "lan.conf", "-f", "sim.emu", "-n", "-s", "state"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sim = IpmiSim(port, directory, users)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sim.ipmitool("chassis", "power", "status")
                break
            except RuntimeError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield sim
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rewrite_auth_caps(packet: bytes) -> bytes:
    """An IPMI 1.5 Get Channel Authentication Capabilities reply, minus IPMI 2.0 support."""
    data = bytearray(packet)
    # RMCP(4) authtype(1) seq(4) session id(4) length(1), then the message: rqAddr,
    # netFn/LUN, checksum, rsAddr, rqSeq/LUN, command, completion code, data..., checksum.
    if len(data) < 14 or data[4] != 0:
        return packet
    msg = 14
    if len(data) < msg + 9 or data[msg + 1] >> 2 != 7 or data[msg + 5] != 0x38:
        return packet
    if data[msg + 6] != 0:
        return packet
    first = msg + 7  # channel, then auth type support (bit 7: IPMI 2.0 extended data)
    data[first + 1] &= 0x7F
    if len(data) > first + 3:
        data[first + 3] = 0  # no IPMI 2.0 connections
    end = msg + data[13] - 1
    data[end] = (-sum(data[msg + 3 : end])) & 0xFF
    return bytes(data)


class Ipmi15Front:
    """A UDP relay at `port` in front of an IPMI BMC that makes it an IPMI-1.5-only BMC."""

    def __init__(self, backend_port: int):
        self.backend = ("127.0.0.1", backend_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.rmcpplus_dropped = 0
        self._upstream: dict[tuple[str, int], socket.socket] = {}
        self._clients: dict[socket.socket, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True, name="ipmi15-front")
        self._thread.start()

    def _relay(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *self._clients], [], [], 0.2)
            for sock in ready:
                try:
                    packet, addr = sock.recvfrom(4096)
                except OSError:
                    continue
                if sock is self.sock:
                    if len(packet) > 4 and packet[4] == 6:
                        self.rmcpplus_dropped += 1  # RMCP+ is IPMI 2.0: not spoken here
                        continue
                    up = self._upstream.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self._upstream[addr] = up
                        self._clients[up] = addr
                    up.sendto(packet, self.backend)
                else:
                    self.sock.sendto(_rewrite_auth_caps(packet), self._clients[sock])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in [self.sock, *self._clients]:
            s.close()


def have_ipmi_tools() -> bool:
    return bool(IPMI_SIM and IPMITOOL) and os.name == "posix"


def hold_sessions(port: int, users: list[str]) -> None:
    """Run in a process of its own (`python -c`): log in as each of `users` until the BMC
    refuses, print how many sessions are held, then on each stdin line log out of one
    (printing "released"); at EOF log out of all."""
    import sys

    from pyghmi.exceptions import IpmiException
    from pyghmi.ipmi.command import Command

    from maas_lib.bmc import pyghmi_fixes

    pyghmi_fixes.apply()
    held = []
    refusal = ""
    for user in users:
        try:
            cmd = Command(
                bmc="127.0.0.1", port=port, userid=user.encode(), password=PASSWORD.encode()
            )
        except IpmiException as exc:
            refusal = f"{exc} {getattr(exc, 'login_status', None)}"
            break
        held.append(cmd)
    print(f"held {len(held)} refused {refusal!r}", flush=True)
    for _line in sys.stdin:
        if held:
            held.pop().ipmi_session.logout()
        print("released", flush=True)
    for cmd in held:
        cmd.ipmi_session.logout()
