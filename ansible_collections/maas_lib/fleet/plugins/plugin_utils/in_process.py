# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The action plugins' base: a BMC or step task run inside Ansible's worker on the
controller, calling maas-lib directly, instead of a module process per task.

Ansible's linear strategy loads an action plugin's class in its main process before it
forks the task's worker, so importing maas-lib here (and building the models a task
uses) happens once per `ansible-playbook`, not once per task: every worker inherits it.

The task keeps its module's contract: the module's argument spec and rules (validated
with ansible's ArgumentSpecValidator), check mode, no_log (values of no_log options are
masked anywhere in the result, `invocation` included) and return values. Where the task
does not run on the controller (delegated to another machine) or maas-lib cannot be
imported here, the module runs as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from ansible.errors import AnsibleAction
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import (
    INVENTORY_VARS,
    MAAS_LIB_IMPORT_ERROR,
    TASKS,
    db_path,
    fleet,
    one_line,
    outcome,
    step_task,
)
from ansible_collections.maas_lib.fleet.plugins.plugin_utils.step_service import (
    SharedFleets,
    StepService,
    ask,
    wanted,
)


def _warm_up() -> None:
    """Import what a task uses and build its models now, in Ansible's main process."""
    # Deferred imports inside maas-lib, done here so no worker repeats them.
    from pydantic import BaseModel

    import maas_lib.bmc.ipmi
    import maas_lib.bmc.ipmi_batch
    import maas_lib.bmc.redfish
    import maas_lib.fleet
    import maas_lib.scheduler.single_step
    import maas_lib.serialize
    import maas_lib.store.sqlite
    import maas_lib.validation
    from maas_lib.credentials import database_url_from_worker

    # PostgreSQL's driver only where the tasks' database is one: MAAS_DB, else the URL
    # of the worker running this playbook (the Ansible executor), as the tasks pick it.
    url = os.environ.get("MAAS_DB") or database_url_from_worker() or ""
    if url.startswith("postgres"):
        with suppress(ImportError):  # a task then says what is missing
            import maas_lib.store.postgres  # noqa: F401
    # maas-lib's pydantic models build on first use (fast start-up for maasctl); a task
    # would build the ones it uses in every worker (~0.1 s for a step): build them here.
    for name, module in list(sys.modules.items()):
        if name.startswith("maas_lib."):
            for value in list(vars(module).values()):
                if (
                    isinstance(value, type)
                    and issubclass(value, BaseModel)
                    and value.__module__ == name
                    and not value.__pydantic_complete__
                ):
                    value.model_rebuild()


IN_PROCESS = MAAS_LIB_IMPORT_ERROR is None
if IN_PROCESS:
    with suppress(Exception):  # a task then imports what it needs itself
        _warm_up()


def _serve_step(params: dict[str, Any]) -> dict[str, Any]:
    """A step task's result, run by the step service (one database connection, BMC
    sessions kept)."""
    return outcome(lambda: step_task(params, False, {}, open_fleet=_FLEETS), close_sessions=False)


#: The step service of maas-lib's Ansible executor (see `step_service`), started here,
#: in ansible's main process, so every task worker forked from it finds it.
SERVICE: StepService | None = None
if IN_PROCESS and wanted():
    with suppress(Exception):  # without it, each worker runs its step itself
        _FLEETS = SharedFleets(fleet, db_path)
        SERVICE = StepService(_serve_step)


def _plain(value: Any) -> Any:
    """A value as builtins all the way down: ansible-core tags its templated str, int,
    bool, dicts and lists, and copying tagged values (argument validation deep-copies
    the task's arguments) costs tens of milliseconds for a step task's settings."""
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


@contextmanager
def _environment(variables: dict[str, Any]) -> Iterator[None]:
    """os.environ with `variables` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update({k: str(v) for k, v in variables.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class InProcessAction(ActionBase):
    """Runs the collection's task `TASK` in this process (see the module docstring)."""

    TASK = ""
    #: Whether the task's hosts may be described by the play's inventory (BMC tasks).
    READS_INVENTORY = True
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_async = True  # by running the module (see `run`)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task = TASKS[self.TASK]
        self._supports_check_mode = task.check_mode
        try:
            result = super().run(tmp, task_vars)  # check mode unsupported: skipped
        except AnsibleAction as exc:
            return exc.result
        task_vars = task_vars or {}
        local = getattr(self._connection, "transport", None) == "local"
        if not IN_PROCESS or not local or self._task.async_val:
            # The module, as the `normal` action runs it (async included).
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result.update(self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        checked = ArgumentSpecValidator(task.argument_spec, **task.rules).validate(
            _plain(self._task.args)
        )
        if checked.error_messages:
            msg = checked.errors.msg
            if isinstance(checked.errors.errors[0], UnsupportedError):
                msg = f"Unsupported parameters for ({self._load_name}) module: {msg}"
            failure = {"failed": True, "msg": one_line(msg)}
            return {**result, **remove_values(failure, checked._no_log_values)}
        params = checked.validated_parameters
        try:
            inventory = self._inventory(params, task_vars) if self.READS_INVENTORY else {}
        except Exception as exc:  # a var that does not template, for one
            return {**result, "failed": True, "msg": one_line(f"inventory {exc}")}
        # A module process gets the task's `environment:` (credentials, MAAS_DB): so does
        # the task here, for its duration (this worker process runs only this task).
        environment: dict[str, Any] = {}
        try:
            self._compute_environment_string(environment)
        except Exception as exc:
            return {**result, "failed": True, "msg": one_line(f"environment: {exc}")}
        service = SERVICE
        if self.TASK == "step" and service and service.pid != os.getpid() and not environment:
            done = ask(service.address, params)
        else:
            with _environment(environment):
                done = outcome(lambda: task.body(params, bool(self._task.check_mode), inventory))
        done["invocation"] = {"module_args": params}
        result.update(remove_values(done, checked._no_log_values))
        return result

    def _inventory(self, params: dict[str, Any], task_vars: dict[str, Any]) -> dict:
        """The `bmc_*` vars of the inventory hosts the task names (`name` or `names`),
        for those whose inventory gives a `bmc_address`; never a secret."""
        names = params.get("names") or ([params["name"]] if params.get("name") else [])
        hostvars = task_vars.get("hostvars")
        if not names or hostvars is None or not INVENTORY_VARS:
            return {}
        found = {}
        for name in names:
            if name not in hostvars:
                continue
            host = hostvars[name]
            if "bmc_address" not in host:
                continue
            try:
                found[name] = {k: _plain(host[k]) for k in INVENTORY_VARS if k in host}
            except Exception as exc:
                raise ValueError(f"host {name}: {exc}") from None
        return found
