"""One long-lived ansible process for the batches of one request (the Ansible executor's).

Starting ``ansible-playbook`` costs ~1.5 s here (interpreter, ansible-core's imports, the
collection loader, the action plugins' import of maas-lib) and ending it another ~0.4 s;
paid for every batch, that was most of the Ansible executor's overhead. An
`AnsibleSession` starts `maas_lib.scheduler.ansible_child` once and hands it one playbook
run per batch (or wave), each with its own inventory, extravars, limit and forks, reading
the run's events from a pipe as they happen.

What `maas_lib.scheduler.playbook` does for one ansible-runner run holds for the session
as a whole: a private directory named after the worker process (0700, removed at the
end, or by the next worker if this one is killed), inventory and extravars written as
YAML with every string ``!unsafe`` (never templated), BMC credentials and the store's URL
handed out by a `CredentialBroker` over a socket (never in the environment, which holds
only the socket's address), and the child's environment free of our secrets. A run
that passes its timeout, or whose `cancel` says so, kills the process (its task workers'
process groups first): the next run starts a new one.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from maas_lib.credentials import SOCKET_ENV as CREDENTIALS_SOCKET_ENV
from maas_lib.errors import InputError
from maas_lib.scheduler.ansible_data import write_unsafe_yaml
from maas_lib.scheduler.credential_broker import CredentialBroker
from maas_lib.scheduler.playbook import (
    PlaybookRun,
    _child_env,
    _kill_worker_groups,
    _plain,
    _private_dir,
    _stdout_error,
)

__all__ = ["AnsibleSession"]

log = logging.getLogger(__name__)

#: How often (s) a run checks its deadline and its cancel callback between events.
_POLL_SECONDS = 0.2

#: How long a closing session's process may take to end after its stdin closes.
_EXIT_WAIT_S = 5.0


class AnsibleSession:
    """A private directory, one ansible process (started by `start` ahead of time, or
    by the first run) and, once `grant` is called, a credential broker, for playbook runs
    made one after another. Not for two threads at once; `close` ends it all."""

    def __init__(self, *, label: str, envvars: Mapping[str, str] | None = None):
        self.label = label
        self._stack = ExitStack()
        self.dir: Path = self._stack.enter_context(_private_dir(label, None))
        local_tmp = self.dir / "tmp"
        local_tmp.mkdir(mode=0o700)
        self._env = {**os.environ, **_child_env(local_tmp), **(envvars or {})}
        #: What each run's process environment gains (the broker's address).
        self._run_env: dict[str, str] = {}
        self._output = self.dir / "output"
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: int | None = None  # the read end of the event pipe
        self._buffer = b""
        self._runs = 0
        self._last_rc: int | None = None
        #: Processes started so far (one, unless a run was killed).
        self.starts = 0

    # -- the process ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The ansible process's id, while it runs."""
        return self._proc.pid if self._alive() and self._proc is not None else None

    def start(self) -> None:
        """Start the ansible process now (it imports ansible-core and the collection's
        plugins while nothing waits for it), if it is not running."""
        if not self._alive():
            self._reap()
            self._start()

    def grant(self, credentials: Collection[str], database_url: str | None) -> None:
        """From now on the runs' tasks may ask for these credentials and the store's URL
        (a `CredentialBroker` in the session's directory; its address is all the
        process's environment gets, at each run)."""
        if CREDENTIALS_SOCKET_ENV in self._run_env or not (credentials or database_url):
            return
        broker = CredentialBroker(credentials, self.dir, database_url=database_url)
        self._stack.callback(broker.close)
        self._run_env[CREDENTIALS_SOCKET_ENV] = broker.address

    def _start(self) -> None:
        read, write = os.pipe()
        with self._output.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "maas_lib.scheduler.ansible_child", str(write)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write,),
                env=self._env,
                cwd=self.dir,
                # Its own group, so a kill reaches it and not us; ansible's task workers
                # setsid() into groups of their own (see `_kill`).
                start_new_session=True,
            )
        os.close(write)
        log.info("%s: ansible process %d started", self.label, self._proc.pid)
        self._events = read
        self._buffer = b""
        self.starts += 1

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_worker_groups(proc.pid)
            with suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            _kill_worker_groups(proc.pid)
            with suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._events is not None:
            with suppress(OSError):
                os.close(self._events)
        self._proc = None
        self._events = None

    def discard(self) -> None:
        """Kill the process and remove the directory: for a session that has run
        nothing (a spare), which need not finish starting first."""
        self._kill()
        self._stack.close()

    def close(self, *, wait: bool = True) -> threading.Thread | None:
        """End the process (it exits once its stdin closes: logging out of its BMC
        sessions, ~0.3 s) and remove the directory. With `wait` false the process is
        told at once and the rest happens in a thread, returned for joining."""
        if wait:
            self._finish()
            return None
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with suppress(OSError):
                proc.stdin.close()
        closing = threading.Thread(target=self._finish, name=f"{self.label}-close", daemon=True)
        closing.start()
        return closing

    def _finish(self) -> None:
        self._reap()
        self._stack.close()

    # -- one run ------------------------------------------------------------------------------

    def run(
        self,
        playbook: str | Path,
        inventory: Mapping[str, Any],
        *,
        limit: str,
        timeout: float,
        extravars: Mapping[str, Any] | None = None,
        forks: int | None = None,
        cancel: Callable[[], bool] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        skip_tags: Collection[str] = (),
    ) -> PlaybookRun:
        """Run `playbook` on the `limit` hosts of `inventory` in the session's process, as
        `maas_lib.scheduler.playbook.run_playbook` runs it through ansible-runner: the
        same statuses (successful, failed, timeout, canceled), events and error line.
        `skip_tags`: as ``ansible-playbook --skip-tags``."""
        if not timeout > 0:
            raise InputError(f"playbook timeout {timeout!r}: must be positive")
        inv = _plain(inventory, "inventory")
        extra = _plain(extravars or {}, "extravars")
        start = time.monotonic()
        self.start()
        assert self._proc is not None and self._proc.stdin is not None
        self._runs += 1
        n = self._runs
        inventory_path = write_unsafe_yaml(self.dir / "inventory" / f"hosts-{n}.yml", inv)
        extravars_path = write_unsafe_yaml(self.dir / "env" / f"extravars-{n}.yml", extra)
        offset = self._output.stat().st_size if self._output.exists() else 0
        command = {
            "id": n,
            "playbook": str(playbook),
            "inventory": str(inventory_path),
            "extravars": str(extravars_path),
            "limit": limit,
            "forks": forks or 5,
            "skip_tags": sorted(skip_tags),
            "env": self._run_env,
        }
        events: list[dict[str, Any]] = []
        status: str | None = None
        rc: int | None = None
        try:
            try:
                self._proc.stdin.write(json.dumps(command).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                pass  # it died: seen below as the end of its events
            deadline = start + timeout
            while status is None:
                for message in self._read(_POLL_SECONDS):
                    if message is None:  # the process ended mid-run
                        self._reap_dead()
                        rc = self._last_rc
                        status = "failed"
                        break
                    if "event" in message:
                        events.append(message)
                        if on_event is not None:
                            on_event(message)
                    elif message.get("done") == n:
                        rc = int(message.get("rc") or 0)
                        status = "successful" if rc == 0 else "failed"
                        break
                if status is None:
                    fired = _fired(cancel, deadline)
                    if fired:
                        self._kill()
                        rc = self._last_rc = -signal.SIGKILL
                        status = fired
        finally:
            for path in (inventory_path, extravars_path):
                path.unlink(missing_ok=True)
        error = "" if status == "successful" else _stdout_error_since(self._output, offset)
        return PlaybookRun(
            status=status,
            rc=rc,
            events=events,
            stdout_error=error,
            duration_s=round(time.monotonic() - start, 3),
        )

    def _reap_dead(self) -> None:
        proc = self._proc
        self._last_rc = proc.wait() if proc is not None else None
        self._reap()

    def _read(self, wait: float) -> list[dict[str, Any] | None]:
        """The messages that arrive within `wait` seconds (None once the pipe ends)."""
        fd = self._events
        if fd is None:
            return [None]
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            if not sel.select(wait):
                return []
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return [None]
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        messages: list[dict[str, Any] | None] = []
        for line in lines:
            with suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    messages.append(message)
        return messages


def _fired(cancel: Callable[[], bool] | None, deadline: float) -> str | None:
    try:
        if cancel is not None and cancel():
            return "canceled"
    except Exception:
        return "canceled"  # a broken cancel callback must not leave a run going
    return "timeout" if time.monotonic() >= deadline else None


def _stdout_error_since(path: Path, offset: int) -> str:
    """`_stdout_error` of what the process wrote since `offset`."""
    part = path.with_name(path.name + ".run")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            part.write_bytes(f.read())
        return _stdout_error(part)
    except OSError:
        return "no output"
    finally:
        part.unlink(missing_ok=True)
