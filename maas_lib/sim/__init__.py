"""The fleet simulator: try maas-lib without hardware, and the integration tests' peer.

`start`/`stop` manage a background simulator process; `runner` is that process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from maas_lib.errors import InputError, MaasError
from maas_lib.sim.config import SimConfig
from maas_lib.validation import option_error

__all__ = ["SimConfig", "default_sim_dir", "sim_config", "start", "state", "stop"]


def default_sim_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "maas-lib" / "sim"


def sim_config(**fields: Any) -> SimConfig:
    """Validate simulator settings; errors name the option as the CLI spells it."""
    try:
        return SimConfig.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise option_error(exc) from None


def _pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "sim.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(config: SimConfig, *, wait: float = 60.0) -> dict[str, Any]:
    """Start the simulator in the background; return its ready.json once it is serving."""
    directory = config.directory.resolve()
    if _pid(directory):
        raise InputError(f"a simulator is already running in {directory} (maasctl sim down)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready.json").unlink(missing_ok=True)
    cfg_path = directory / "sim.json"
    cfg_path.write_text(config.model_copy(update={"directory": directory}).model_dump_json())
    with (directory / "sim.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maas_lib.sim.runner", str(cfg_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (directory / "sim.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ready = directory / "ready.json"
        if ready.exists():
            return {
                **json.loads(ready.read_text()),
                "directory": str(directory),
                "inventory": str(directory / "inventory.yml"),
                "credentials_env": str(directory / "credentials.env"),
            }
        if proc.poll() is not None:
            tail = (directory / "sim.log").read_text().strip().splitlines()[-1:] or ["no output"]
            raise MaasError(f"simulator exited with {proc.returncode}: {tail[0]}")
        time.sleep(0.1)
    proc.terminate()
    raise MaasError(f"simulator not ready after {wait:g}s (see {directory / 'sim.log'})")


def stop(directory: Path, *, wait: float = 15.0) -> bool:
    """Stop the simulator running in `directory`; False if none was running."""
    pid = _pid(directory)
    if pid is None:
        (directory / "sim.pid").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            # Reap it if this process started it (a zombie still answers kill(pid, 0)).
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (directory / "sim.pid").unlink(missing_ok=True)
    return True


def state(directory: Path) -> list[dict[str, Any]]:
    """Every simulated machine's power, boot and installer state (refreshed each second)."""
    path = directory / "state.json"
    if not path.exists():
        raise InputError(f"no simulator state in {directory} (maasctl sim up)")
    faults = {h["name"]: h["fault"] for h in json.loads((directory / "hosts.json").read_text())}
    return [{**m, "fault": faults.get(m["host"])} for m in json.loads(path.read_text())]
