"""The long-lived ansible process of the Ansible executor: one per request, fed batch by batch.

`python -m maas_lib.scheduler.ansible_child` imports ansible-core once, then reads one
JSON command a line on stdin — a playbook run: playbook, inventory file, extravars file,
limit, forks — and runs it as ``ansible-playbook`` would (the same CLI parsing, plugin
loading, `PlaybookExecutor`), in this process. What ``ansible-playbook`` pays at every
start (interpreter, ansible-core's imports, the collection loader, the action plugins'
import of maas-lib, ~1.5 s here) is paid once per request, not once per batch.

Each run writes its events, as JSON lines in ansible-runner's shape (``event``,
``event_data`` with ``host``, ``task``, ``task_uuid``, ``resolved_action``, ``res``,
``duration``...), to the file descriptor given as its one argument, then
``{"done": N, "rc": RC}``. Results are censored as ansible-core censors them for every
callback (``no_log``). Ansible's own output goes to stdout, which the executor points at
a file. The process ends when stdin closes (its worker is done with it), or at once,
task workers included, when the worker that started it is gone (killed): the steps in
flight are then `running` in the store, interrupted and retried when the request is
resumed, as after any crash.

Only the executor starts this (`maas_lib.scheduler.ansible_session`); it never runs in
the worker's own process, whose threads and BMC sessions ansible's forks must not copy.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ansible import context
from ansible.cli.playbook import PlaybookCLI
from ansible.errors import AnsibleError
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import action_loader, init_plugin_loader
from ansible.utils.collection_loader._collection_finder import _get_collection_playbook_path
from ansible.utils.context_objects import CLIArgs
from ansible.utils.display import Display
from ansible.vars.manager import VariableManager

Emit = Callable[[dict[str, Any]], None]

#: How often (s) the process checks that the worker that started it still runs.
_PARENT_CHECK_S = 0.5

#: The action plugin of the collection's step task (see `Runner.__init__`).
STEP_ACTION = "maas_lib.fleet.step"

display = Display()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


class Events(CallbackBase):
    """Hands each event ansible-runner would record to `emit`, in its shape."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "maas_lib_events"

    def __init__(self, emit: Emit) -> None:
        super().__init__()
        self.emit = emit
        self._started: dict[tuple[str, str], float] = {}
        self._init_callback_methods()

    @staticmethod
    def _task(task: Any) -> dict[str, Any]:
        return {
            "task": task.get_name(),
            "task_uuid": str(task._uuid),
            "task_action": task.action,
            "resolved_action": getattr(task, "resolved_action", None) or task.action,
        }

    def _result(self, kind: str, result: Any, **extra: Any) -> None:
        host = result.host.get_name()
        task = result.task
        started = self._started.pop((host, str(task._uuid)), None)
        res = dict(result.result)  # censored by ansible-core where no_log applies
        if task.no_log is True or res.get("_ansible_no_log"):
            res = {"censored": "the output has been hidden due to no_log: true"}
        data = {
            "host": host,
            **self._task(task),
            "res": res,
            "duration": None if started is None else time.monotonic() - started,
            **extra,
        }
        self.emit({"event": kind, "event_data": data})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: Any) -> None:
        self.emit({"event": "playbook_on_task_start", "event_data": self._task(task)})

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._started[(host.get_name(), str(task._uuid))] = time.monotonic()
        data = {"host": host.get_name(), **self._task(task)}
        self.emit({"event": "runner_on_start", "event_data": data})

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("runner_on_ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("runner_on_failed", result, ignore_errors=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("runner_on_unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("runner_on_skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        keys = ("changed", "dark", "failures", "ignored", "ok", "processed", "rescued", "skipped")
        data = {key: dict(getattr(stats, key, None) or {}) for key in keys}
        self.emit({"event": "playbook_on_stats", "event_data": data})


def _set_cli_args(options: Any) -> None:
    """What `CLI.parse` calls: ansible-playbook sets its CLI arguments once per process
    (a singleton); each run here has its own inventory, limit, forks and tags."""
    context.CLIARGS = CLIArgs.from_options(options)


class Runner:
    """Runs playbooks in this process, one after another, as ansible-playbook would."""

    def __init__(self, emit: Emit):
        self.emit = emit
        context._init_global_context = _set_cli_args
        init_plugin_loader([])  # as CLI.run does, once
        self._loader: DataLoader | None = None
        # The step plugin imports maas-lib and starts the step service when its class
        # loads: now, before the first run is asked for, not during it.
        try:
            action_loader.get(STEP_ACTION, class_only=True)
        except Exception:  # without the collection, a run says what is missing
            display.vvv("maas-lib: could not preload " + STEP_ACTION)

    def _prereqs(self, cli: PlaybookCLI) -> tuple[Any, Any, Any]:
        """Loader, inventory and variable manager for one run, as `CLI._play_prereqs`
        makes them, but the loader (its vault secrets, and the files it has parsed: the
        playbook, the collection's metadata) is the first run's: each run's inventory
        and extravars are files of their own."""
        if self._loader is None:
            self._loader, inventory, variable_manager = cli._play_prereqs()
            return self._loader, inventory, variable_manager
        options = context.CLIARGS
        inventory = InventoryManager(
            loader=self._loader,
            sources=options["inventory"],
            cache=not options.get("flush_cache"),
        )
        variable_manager = VariableManager(
            loader=self._loader, inventory=inventory, version_info=cli.version_info(gitinfo=False)
        )
        return self._loader, inventory, variable_manager

    def run(self, command: dict[str, Any]) -> int:
        # The broker's address for this request's runs: the step service and the task
        # workers forked from here read it from the environment.
        os.environ.update(command.get("env") or {})
        playbook = str(command["playbook"])
        args = ["ansible-playbook", "-i", str(command["inventory"]), "-l", str(command["limit"])]
        args += ["-f", str(int(command["forks"])), "-e", "@" + str(command["extravars"])]
        if command.get("skip_tags"):
            args += ["--skip-tags", ",".join(command["skip_tags"])]
        cli = PlaybookCLI([*args, playbook])
        cli.parse()
        if _get_collection_playbook_path(playbook) is None and not os.path.isfile(playbook):
            raise AnsibleError(f"the playbook: {playbook} could not be found")
        loader, inventory, variable_manager = self._prereqs(cli)
        cli.get_host_list(inventory, context.CLIARGS["subset"])
        executor = PlaybookExecutor(
            playbooks=[playbook],
            inventory=inventory,
            variable_manager=variable_manager,
            loader=loader,
            passwords={},
        )
        tqm = executor._tqm
        tqm.load_callbacks()  # the configured ones (stdout first), then ours
        tqm._callback_plugins.append(Events(self.emit))
        try:
            rc = executor.run()
        finally:
            # The run's own files are parsed once: no need to keep them.
            cache = getattr(self._loader, "_FILE_CACHE", {})
            for key in (command["inventory"], command["extravars"]):
                cache.pop(os.path.abspath(str(key)), None)
        return rc if isinstance(rc, int) else 0


def _exit_with(parent: int) -> None:
    """End this process at once (its task workers too) if `parent`, the worker that
    started it, is gone (killed): its runs' events have no reader, and another worker
    will resume the request. Nothing is closed on the way out (no BMC logout, no
    database close, which could checkpoint a database others still read)."""
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent:
            # Only now: it imports ansible-runner (the kill of the task workers' groups).
            from maas_lib.scheduler.playbook import _kill_worker_groups

            _kill_worker_groups(os.getpid())
            os._exit(1)


def main(argv: list[str]) -> int:
    out = os.fdopen(int(argv[1]), "w", encoding="utf-8", buffering=1)
    watch = threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True)
    watch.start()

    def emit(message: dict[str, Any]) -> None:
        message.setdefault("pid", os.getpid())
        out.write(json.dumps(_jsonable(message)) + "\n")

    runner = Runner(emit)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            rc = runner.run(command)
        except AnsibleError as exc:
            display.error(exc)
            rc = 1
        except Exception:
            display.error("Unexpected Exception: " + traceback.format_exc().replace("\n", " | "))
            rc = 250
        sys.stdout.flush()
        sys.stderr.flush()
        emit({"done": command.get("id"), "rc": rc})
    return 0


def _leave(code: int) -> None:
    """Exit once the worker is done with us: the exit handlers (the step service logs
    out of its BMC sessions and closes its database), then no interpreter teardown of
    ansible's and maas-lib's modules (~0.3 s the worker would wait for)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _leave(main(sys.argv))
