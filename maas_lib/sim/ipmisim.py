"""OpenIPMI's `ipmi_sim` as a second IPMI peer: N independent C BMCs on loopback.

This module owns, for each instance: its generated configuration (lan.conf: one admin user
with a password and a session limit; the .emu command file that creates the BMC), its
chassis-control hook (a bash script holding power and boot-device state in files), its
process (a process group of its own), readiness, state readback and teardown.

`ipmi_sim` (Debian package `openipmi`, 2.0.33) is a C implementation of an IPMI 1.5/2.0 LAN
BMC. What it does, as measured against it with ipmitool:
- RMCP+ cipher suites 0, 1, 2, 3 and 6 (RAKP-HMAC-SHA1/MD5, AES-CBC-128); no SHA-256 (15-17),
  so clients proposing 17 fall back. The set is fixed in the binary: lan.conf has no
  cipher-suite setting.
- IPMI 1.5 only: without a `guid` in the LAN section it does not advertise RMCP+ in Get
  Channel Authentication Capabilities and refuses RMCP+ sessions ("Unable to establish
  IPMI v2 / RMCP+ session"), while `ipmitool -I lan` (1.5, MD5) works: `ipmi15_only=True`.
- Sessions: 63 at most per BMC (compile-time MAX_SESSIONS; the 64th login gets RMCP+
  status "insufficient resources for session"), idle ones closed after 30 s. The user's
  `max-sessions` field in lan.conf is parsed but not enforced, so a smaller
  `session_limit` is made by holding the other slots: `IpmiSim.hold_sessions(n)` keeps n
  sessions open (ipmitool shells, kept alive) for as long as it is entered.
- Power and boot device through `chassis_control "<program>"`: ipmi_sim runs
  `<program> get power` for every Get Chassis Status, `<program> set power 0|1` for Chassis
  Control off/on (cycle = off, then on one second later from its own timer), `set reset 1`,
  `set shutdown 1` (soft off), `set boot none|pxe|default|cdrom|bios` and `get boot`.
  It runs the program through popen() and blocks its whole loop until it exits, so the hook
  never sleeps: a power change takes effect `power_delay` seconds later by timestamp (the
  BMC reports the previous state until then), like a host that takes a moment to change.
  The persistent/one-time bit of a boot override is ignored by ipmi_sim.

Usage (tests and benches)::

    with running_ipmi_sims(3, options=IpmiSimOptions(power_delay=0.2)) as sims:
        sims.write_inventory(tmp / "inv.yml")       # for `maasctl hosts import`
        env = os.environ | sims.env()               # MAAS_CRED_IPMISIM_USERNAME/PASSWORD
        sims[0].ipmitool("chassis", "power", "status")
        sims[0].state()                             # {"power": "off", "boot": "none", ...}

The passwords are test secrets of a simulated BMC: they live in the instances' lan.conf
(a private temporary directory, removed on exit) and in `env()`, never in logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
DEFAULT_CREDENTIAL = "ipmisim"
#: ipmi_sim's fixed number of session slots per BMC (MAX_SESSIONS in its lanserv).
MAX_SESSIONS = 63
#: Held sessions send a command this often: ipmi_sim closes a session idle for 30 s.
KEEPALIVE_S = 10.0
_BAD_CHARS = set('"\\\n\r\t ')

# The chassis-control hook. Arguments: <state-dir> <delay-us> get|set <parm> [<value>] ...
# Files in <state-dir>: power ("<previous> <target> <effective-at-us>"), boot, and counters
# power_ons, power_offs, resets. Builtins only (no fork): ipmi_sim waits for every call.
HOOK = r"""#!/bin/bash
set -u
dir=$1 delay=$2 op=$3
shift 3
now=${EPOCHREALTIME:-}
now=${now//[!0-9]/}
[[ -n $now ]] || now=$(date +%s%6N)  # bash < 5 has no EPOCHREALTIME
prev=0 target=0 at=0
read -r prev target at < "$dir/power"
if (( now >= at )); then power=$target; else power=$prev; fi

bump() {
    local n=0
    read -r n < "$dir/$1"
    echo $((n + 1)) > "$dir/$1"
}

set_power() {
    # Asking for the state it is in, or already heading to, changes nothing.
    [[ $1 == "$target" ]] && return 0
    if [[ $1 == "$power" ]]; then
        echo "$power $1 0" > "$dir/power"
    else
        echo "$power $1 $((now + delay))" > "$dir/power"
        if [[ $1 == 1 ]]; then bump power_ons; else bump power_offs; fi
    fi
    target=$1
}

case $op in
get)
    for parm in "$@"; do
        case $parm in
        power) echo "power:$power" ;;
        boot) read -r boot < "$dir/boot"; echo "boot:${boot:-none}" ;;
        *) echo "unsupported get $parm" >&2; exit 1 ;;
        esac
    done
    ;;
set)
    while (( $# >= 2 )); do
        case $1 in
        power) set_power "$(( $2 ? 1 : 0 ))" ;;
        shutdown) set_power 0 ;;
        reset) bump resets ;;
        boot) echo "$2" > "$dir/boot" ;;
        identify) ;;
        *) echo "unsupported set $1" >&2; exit 1 ;;
        esac
        shift 2
    done
    ;;
*) echo "unknown operation $op" >&2; exit 1 ;;
esac
"""

# The BMC management controller at IPMB 0x20 (the values of OpenIPMI's sample ipmisim1.emu).
EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


def ipmi_sim_path() -> str | None:
    return shutil.which("ipmi_sim")


@dataclass(frozen=True)
class IpmiSimOptions:
    """How one simulated BMC behaves. Clients are always given `username`/`password`."""

    username: str = "admin"
    password: str = "ipmisim-secret"
    #: Free session slots; the rest (of 63) are held open from the start (slow: one
    #: ipmitool process and one login per held slot).
    session_limit: int = MAX_SESSIONS
    #: No RMCP+ (IPMI 2.0): only IPMI 1.5 sessions, as old BMCs.
    ipmi15_only: bool = False
    #: The BMC's password differs from the one clients are given (auth failure).
    wrong_password: bool = False
    #: The BMC knows no user by the name clients are given (auth failure).
    wrong_user: bool = False
    #: Seconds between accepting a power change and reporting it (0: immediate).
    power_delay: float = 0.2
    power_on: bool = False

    def __post_init__(self) -> None:
        for value, limit in ((self.username, 16), (self.password, 20)):
            if not value or len(value.encode()) > limit or _BAD_CHARS & set(value):
                raise ValueError(f"ipmi_sim user names and passwords: 1..{limit} plain bytes")
        if not 0 <= self.session_limit <= MAX_SESSIONS:
            raise ValueError(f"session_limit must be within 0..{MAX_SESSIONS}")
        if self.power_delay < 0:
            raise ValueError("power_delay must be >= 0")

    @property
    def bmc_username(self) -> str:
        return f"x{self.username}"[:16] if self.wrong_user else self.username

    @property
    def bmc_password(self) -> str:
        return f"x{self.password}"[:20] if self.wrong_password else self.password


@dataclass
class IpmiSim:
    """One running ipmi_sim instance."""

    name: str
    port: int
    directory: Path
    options: IpmiSimOptions
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = HOST

    @property
    def state_dir(self) -> Path:
        return self.directory / "chassis"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def state(self) -> dict[str, Any]:
        """Power and boot state as the hook holds it, and how often each changed."""
        prev, target, at = _read_words(self.state_dir / "power", 3)
        now_us = time.time_ns() // 1000
        power = target if now_us >= int(at) else prev
        return {
            "power": "on" if power == "1" else "off",
            "target": "on" if target == "1" else "off",
            "boot": (_read_words(self.state_dir / "boot", 1)[0] or "none"),
            "power_ons": int(_read_words(self.state_dir / "power_ons", 1)[0] or 0),
            "power_offs": int(_read_words(self.state_dir / "power_offs", 1)[0] or 0),
            "resets": int(_read_words(self.state_dir / "resets", 1)[0] or 0),
        }

    def ipmitool_argv(
        self, *args: str, lanplus: bool = True, username: str | None = None
    ) -> list[str]:
        """ipmitool's command line; the password goes through the environment (-E)."""
        iface = ["-I", "lanplus", "-C", "3"] if lanplus else ["-I", "lan"]
        user = username or self.options.username
        return [
            "ipmitool", *iface, "-H", self.host, "-p", str(self.port), "-U", user, "-E",
            "-N", "1", "-R", "3", *args,
        ]  # fmt: skip

    def ipmitool(
        self,
        *args: str,
        lanplus: bool = True,
        password: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run ipmitool (the reference client) against this BMC."""
        env = os.environ | {"IPMI_PASSWORD": password or self.options.password}
        return subprocess.run(
            self.ipmitool_argv(*args, lanplus=lanplus),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        """Stop this BMC: its port no longer answers (a dead BMC)."""
        _stop([self])

    @contextmanager
    def hold_sessions(self, count: int, timeout: float = 60.0) -> Iterator[None]:
        """Keep `count` sessions open on this BMC while entered (fills its slots)."""
        holder = SessionHolder(self, count)
        try:
            holder.open(time.monotonic() + timeout)
            yield
        finally:
            holder.close()


class SessionHolder:
    """Open sessions held by `ipmitool shell` processes, kept alive by a thread."""

    def __init__(self, sim: IpmiSim, count: int) -> None:
        self.sim = sim
        self.count = count
        self.shells: list[subprocess.Popen[str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _command(self, shell: subprocess.Popen[str], deadline: float) -> None:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write("chassis power status\n")
        shell.stdin.flush()
        while time.monotonic() < deadline:
            line = shell.stdout.readline()
            if not line:
                raise RuntimeError("ipmitool shell exited")
            if "Chassis Power is" in line:
                return
            if "rror" in line:
                raise RuntimeError(f"held session {len(self.shells)} refused: {line.strip()}")
        raise RuntimeError("held session: no answer in time")

    def open(self, deadline: float) -> None:
        env = os.environ | {"IPMI_PASSWORD": self.sim.options.password}
        for _ in range(self.count):
            shell = subprocess.Popen(
                self.sim.ipmitool_argv("shell"),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self.shells.append(shell)
            self._command(shell, deadline)  # ipmitool logs in at its first command
        self._thread = threading.Thread(target=self._keepalive, daemon=True)
        self._thread.start()

    def _keepalive(self) -> None:
        while not self._stop.wait(KEEPALIVE_S):
            for shell in self.shells:
                with suppress(OSError, RuntimeError):
                    self._command(shell, time.monotonic() + KEEPALIVE_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for shell in self.shells:
            shell.kill()  # its session then times out on the BMC, as a crashed client's
            shell.wait()
            for stream in (shell.stdin, shell.stdout):
                if stream is not None:
                    stream.close()
        self.shells.clear()


def _read_words(path: Path, n: int) -> list[str]:
    # The hook rewrites files in place: a read may see an empty file for an instant.
    for _ in range(50):
        try:
            words = path.read_text().split()
        except FileNotFoundError:
            words = []
        if len(words) >= n or (n == 1 and path.exists() and path.stat().st_size == 0):
            break
        time.sleep(0.002)
    return (words + [""] * n)[:n]


@dataclass
class IpmiSimFleet:
    """Running ipmi_sim instances and what a client needs to reach them."""

    sims: list[IpmiSim]
    directory: Path
    credential: str = DEFAULT_CREDENTIAL
    startup_s: float = 0.0

    def __len__(self) -> int:
        return len(self.sims)

    def __iter__(self) -> Iterator[IpmiSim]:
        return iter(self.sims)

    def __getitem__(self, key: int | str) -> IpmiSim:
        if not isinstance(key, str):
            return self.sims[key]
        for s in self.sims:
            if s.name == key:
                return s
        raise KeyError(key)

    def env(self) -> dict[str, str]:
        """MAAS_CRED_<NAME>_USERNAME/PASSWORD for the credential every host uses (the first
        instance's username/password: give every spec the same ones)."""
        key = "MAAS_CRED_" + self.credential.upper().replace("-", "_")
        opts = self.sims[0].options if self.sims else IpmiSimOptions()
        return {f"{key}_USERNAME": opts.username, f"{key}_PASSWORD": opts.password}

    def inventory(self) -> dict[str, Any]:
        hosts = {
            s.name: {
                "bmc_address": s.host,
                "bmc_port": s.port,
                "bmc_protocol": "ipmi",
                "bmc_credential": self.credential,
            }
            for s in self.sims
        }
        return {"all": {"children": {"ipmisim": {"hosts": hosts}}}}

    def write_inventory(self, path: Path) -> Path:
        """An Ansible YAML inventory of these BMCs (for `maasctl hosts import`)."""
        import yaml  # PyYAML only when an inventory is written

        path.write_text(yaml.safe_dump(self.inventory(), sort_keys=False))
        return path


def _lan_conf(sim: IpmiSim, hook: Path) -> str:
    o = sim.options
    # RMCP+ needs a GUID (ipmi_sim refuses RMCP+ without one): omitting it is 1.5-only.
    guid = "" if o.ipmi15_only else f"  guid {os.urandom(16).hex()}\n"
    delay_us = int(o.power_delay * 1_000_000)
    return (
        f'name "{sim.name}"\n'
        "set_working_mc 0x20\n"
        "startlan 1\n"
        f"  addr {sim.host} {sim.port}\n"
        "  priv_limit admin\n"
        "  allowed_auths_callback md2 md5 straight\n"
        "  allowed_auths_user md2 md5 straight\n"
        "  allowed_auths_operator md2 md5 straight\n"
        "  allowed_auths_admin md2 md5 straight\n"
        f"{guid}"
        "endlan\n"
        f'chassis_control "/bin/bash {hook} {sim.state_dir} {delay_us}"\n'
        f'user 2 true "{o.bmc_username}" "{o.bmc_password}" admin {MAX_SESSIONS} '
        "md2 md5 straight\n"
    )


def _prepare(sim: IpmiSim, hook: Path) -> None:
    sim.state_dir.mkdir(parents=True, exist_ok=True)
    (sim.directory / "persist").mkdir(exist_ok=True)
    on = "1" if sim.options.power_on else "0"
    (sim.state_dir / "power").write_text(f"{on} {on} 0\n")
    (sim.state_dir / "boot").write_text("none\n")
    for counter in ("power_ons", "power_offs", "resets"):
        (sim.state_dir / counter).write_text("0\n")
    conf = sim.directory / "lan.conf"
    conf.write_text(_lan_conf(sim, hook))
    conf.chmod(0o600)
    (sim.directory / "bmc.emu").write_text(EMU)


def _spawn(sim: IpmiSim, binary: str) -> None:
    d = sim.directory
    with open(d / "ipmi_sim.log", "ab") as log:
        sim.process = subprocess.Popen(
            [
                binary,
                "-n",
                "-c",
                str(d / "lan.conf"),
                "-f",
                str(d / "bmc.emu"),
                "-s",
                str(d / "persist"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=d,
            # Its own group: teardown also ends hook children caught mid-call.
            start_new_session=True,
        )


def _free_udp_ports(count: int) -> list[int]:
    """`count` distinct free loopback UDP ports, all held until every one is chosen."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bound_udp_ports() -> set[int]:
    """UDP ports bound on 127.0.0.1, from /proc (no packet sent, one read for all)."""
    ports: set[int] = set()
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return ports
    for line in lines:
        local = line.split()[1]
        addr, _, port = local.partition(":")
        if addr == "0100007F":
            ports.add(int(port, 16))
    return ports


def _wait_ready(sims: Sequence[IpmiSim], deadline: float) -> list[IpmiSim]:
    """Wait until each instance has bound its port; the ones whose process died."""
    pending = list(sims)
    dead: list[IpmiSim] = []
    while pending:
        bound = _bound_udp_ports()
        still = []
        for s in pending:
            if s.port in bound and s.alive:
                continue
            if not s.alive:
                dead.append(s)
            else:
                still.append(s)
        pending = still
        if not pending:
            break
        if time.monotonic() > deadline:
            names = ", ".join(s.name for s in pending[:5])
            raise RuntimeError(f"ipmi_sim did not bind its port in time: {names}")
        time.sleep(0.02)
    return dead


def _stop(sims: Sequence[IpmiSim], grace: float = 5.0) -> None:
    # Only unreaped ones: a reaped process's id (and group id) may belong to another by now.
    running = [s for s in sims if s.process is not None and s.process.poll() is None]
    for s in running:
        assert s.process is not None
        # The group: the process, and a hook child if one is running.
        with suppress(ProcessLookupError):
            os.killpg(s.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for s in running:
        assert s.process is not None
        try:
            s.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # Not reaped yet, so the group id is still ours to signal.
            with suppress(ProcessLookupError):
                os.killpg(s.process.pid, signal.SIGKILL)
            s.process.wait()


def start_ipmi_sims(
    specs: Sequence[IpmiSimOptions],
    directory: Path,
    *,
    names: Sequence[str] | None = None,
    ports: Sequence[int] | None = None,
    ready_timeout: float | None = None,
) -> list[IpmiSim]:
    """Configure and start one ipmi_sim per spec under `directory`; wait until all listen.

    Ports are chosen free unless given. An instance that could not bind (another process
    took a free port in between) is restarted on a new port, twice at most."""
    binary = ipmi_sim_path()
    if binary is None:
        raise FileNotFoundError("ipmi_sim is not installed (Debian package openipmi)")
    names = list(names or [f"ipmisim-{i + 1:04d}" for i in range(len(specs))])
    chosen = list(ports or _free_udp_ports(len(specs)))
    if len(names) != len(specs) or len(chosen) != len(specs):
        raise ValueError("one name and one port per spec")
    hook = directory / "chassis-control"
    hook.write_text(HOOK)
    hook.chmod(0o700)
    sims = [
        IpmiSim(name=n, port=p, directory=directory / n, options=o)
        for n, p, o in zip(names, chosen, specs, strict=True)
    ]
    timeout = ready_timeout or 10.0 + 0.05 * len(sims)
    try:
        for s in sims:
            _prepare(s, hook)
            _spawn(s, binary)
        todo = sims
        for attempt in range(3):
            dead = _wait_ready(todo, time.monotonic() + timeout)
            if not dead:
                break
            if ports is not None or attempt == 2:
                log = (dead[0].directory / "ipmi_sim.log").read_text(errors="replace")
                raise RuntimeError(f"ipmi_sim {dead[0].name} exited: {log.strip()[-500:]}")
            for s, p in zip(dead, _free_udp_ports(len(dead)), strict=True):
                s.port = p
                _prepare(s, hook)
                _spawn(s, binary)
            todo = dead
    except BaseException:
        _stop(sims)
        raise
    return sims


@contextmanager
def running_ipmi_sims(
    count_or_specs: int | Sequence[IpmiSimOptions],
    *,
    options: IpmiSimOptions | None = None,
    directory: Path | None = None,
    names: Sequence[str] | None = None,
    ports: Sequence[int] | None = None,
    credential: str = DEFAULT_CREDENTIAL,
) -> Iterator[IpmiSimFleet]:
    """Run ipmi_sim instances for the duration of the block; stop every one afterwards.

    `count_or_specs`: a number of identical BMCs (`options`), or one `IpmiSimOptions` each.
    Without `directory` a private temporary directory is used and removed afterwards."""
    if isinstance(count_or_specs, int):
        specs = [options or IpmiSimOptions()] * count_or_specs
    else:
        specs = list(count_or_specs)
    with ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ipmisim-")))
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        started = time.monotonic()
        sims = start_ipmi_sims(specs, directory, names=names, ports=ports)
        stack.callback(_stop, sims)
        for s in sims:
            if s.options.session_limit < MAX_SESSIONS:
                stack.enter_context(s.hold_sessions(MAX_SESSIONS - s.options.session_limit))
        yield IpmiSimFleet(sims, directory, credential, time.monotonic() - started)
