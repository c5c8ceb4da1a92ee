# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared by the maas_lib.fleet modules and action plugins: importing maas-lib, the
argument specs, each BMC/step task's body, turning maas-lib errors into one-line failures
and library results into plain data.

A task's body is a function of its validated parameters, check mode and the BMC details
the play's inventory gives (empty when run as a module): the action plugins
(plugins/action, run in Ansible's worker on the controller) and the modules (the
documentation, and the fallback when the task does not run on the controller) call the
same body.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import maas_lib
    from maas_lib.errors import InputError, MaasError
    from maas_lib.models import TERMINAL_REQUEST_STATES, HostSpec
except ImportError:
    MAAS_LIB_IMPORT_ERROR: str | None = traceback.format_exc()

    class MaasError(Exception):  # type: ignore[no-redef]
        """Stand-in so the names exist; `new_module` fails before any is raised."""

    class InputError(MaasError):  # type: ignore[no-redef]
        pass

else:
    MAAS_LIB_IMPORT_ERROR = None

#: The submission actions and request states, as maas-lib defines them (`maas_lib.Action`,
#: `maas_lib.RequestState`). Empty without maas-lib: `new_module` then fails, saying so
#: (a list all the same: ansible-test's validate-modules reads choices without maas-lib).
#: The modules' DOCUMENTATION must list them literally; a test holds it to these.
ACTIONS: list[str] = []
REQUEST_STATES: list[str] = []
#: The states a request ends in.
ENDED_STATES: frozenset[str] = frozenset()
if MAAS_LIB_IMPORT_ERROR is None:
    ACTIONS = [a.value for a in maas_lib.Action]
    REQUEST_STATES = [s.value for s in maas_lib.RequestState]
    ENDED_STATES = frozenset(s.value for s in TERMINAL_REQUEST_STATES)

#: Inventory variables that describe a host's BMC (never a secret: maas-lib reads no
#: password from an inventory, as `maasctl hosts import` does not).
INVENTORY_VARS: tuple[str, ...] = ()
if MAAS_LIB_IMPORT_ERROR is None:
    from maas_lib.bmc.base import IPMI_CIPHER_SUITE_VAR

    INVENTORY_VARS = (
        *(f for f in HostSpec.model_fields if f.startswith("bmc_")),
        IPMI_CIPHER_SUITE_VAR,
    )

DB_ARGS: dict[str, Any] = {"db": {"type": "str"}}

#: The maas-lib service instead of a database (`submit`, `request_info`, `cancel`); unset
#: ones fall back to MAAS_API_URL (see `service_or_db`), MAAS_API_TOKEN, MAAS_API_CA,
#: MAAS_API_CLIENT_CERT and MAAS_API_CLIENT_KEY.
API_ARGS: dict[str, Any] = {
    "api_url": {"type": "str"},
    "api_token": {"type": "str", "no_log": True},
    "api_ca": {"type": "path"},
    "api_client_cert": {"type": "path"},
    "api_client_key": {"type": "path"},
}

#: One host's BMC: a registered host (`name`) or inline parameters (`bmc_address`, ...);
#: or many hosts at once (`names`).
BMC_ARGS: dict[str, Any] = {
    "name": {"type": "str"},
    "names": {"type": "list", "elements": "str"},
    "bmc_address": {"type": "str"},
    "bmc_protocol": {"type": "str", "choices": ["ipmi", "redfish"]},
    "bmc_port": {"type": "int"},
    "bmc_system": {"type": "str"},
    "bmc_tls_ca": {"type": "path"},
    "bmc_tls_verify": {"type": "bool"},
    "credential": {"type": "str"},
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
    # Unset: maas-lib's defaults (`maas_lib.BmcSettings`), the ones `maasctl bmc` uses.
    "timeout": {"type": "float"},
    "power_timeout": {"type": "float"},
    "retries": {"type": "int"},
    **DB_ARGS,
}

#: AnsibleModule keyword arguments every BMC module passes.
BMC_RULES: dict[str, Any] = {
    "required_one_of": [("name", "bmc_address", "names")],
    "required_together": [("username", "password")],
    "mutually_exclusive": [
        ("credential", "username"),
        ("credential", "password"),
        ("names", "name"),
        ("names", "bmc_address"),
    ],
    "required_by": {
        key: "bmc_address"
        for key in ("bmc_protocol", "bmc_port", "bmc_system", "bmc_tls_ca", "bmc_tls_verify")
    },
}


class Failure(Exception):
    """End the module as failed with `msg` and these result fields."""

    def __init__(self, msg: str, **result: Any):
        super().__init__(msg)
        self.result = result


def one_line(text: object) -> str:
    """Ansible shows `msg` as is: keep it to one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "error"


def new_module(argument_spec: dict[str, Any], **kwargs: Any) -> AnsibleModule:
    """An AnsibleModule that has already failed cleanly if maas-lib cannot be imported."""
    module = AnsibleModule(argument_spec=argument_spec, **kwargs)
    if MAAS_LIB_IMPORT_ERROR is not None:
        module.fail_json(
            msg=missing_required_lib(
                "maas-lib",
                reason="to reach BMCs and the maas-lib job queue (pip install maas-lib)",
            ),
            exception=MAAS_LIB_IMPORT_ERROR,
        )
    return module


class _Warnings(logging.Handler):
    """maas-lib's warnings (e.g. TLS verification off) become Ansible warnings."""

    def __init__(self, warnings: list[str]):
        super().__init__(logging.WARNING)
        self.warnings = warnings

    def emit(self, record: logging.LogRecord) -> None:
        with suppress(Exception):  # a warning must never fail the task
            self.warnings.append(one_line(record.getMessage()))


def outcome(body: Callable[[], dict[str, Any]], *, close_sessions: bool = True) -> dict[str, Any]:
    """Run `body`; its result, or `failed` with a one-line `msg`, plus maas-lib's warnings.

    Bad input (maas-lib's `InputError`: unknown host, bad option, unresolvable credential)
    and other maas-lib errors never show a traceback; only a bug in this collection or
    maas-lib adds one, as `exception` (shown with -vvv). The BMC sessions the body opened
    are closed afterwards unless `close_sessions` is false (the step service keeps them).
    """
    log = logging.getLogger("maas_lib")
    warnings: list[str] = []
    handler = _Warnings(warnings)
    log.addHandler(handler)
    log.propagate = False  # nothing on stderr: Ansible reads the module's stdout only
    try:
        result = body()
    except Failure as exc:
        result = {**exc.result, "failed": True, "msg": one_line(exc)}
    except InputError as exc:
        result = {"failed": True, "msg": one_line(exc)}
    except MaasError as exc:
        error_class = getattr(exc, "error_class", None)
        result = {"failed": True, "msg": one_line(exc), "error_class": error_class}
    except Exception as exc:
        result = {
            "failed": True,
            "msg": one_line(f"unexpected {type(exc).__name__}: {exc}"),
            "exception": traceback.format_exc(),
        }
    finally:
        log.removeHandler(handler)
        if close_sessions:
            _close_bmc_sessions()
    if warnings:
        result["warnings"] = [*result.get("warnings", []), *warnings]
    return result


def run(module: AnsibleModule, body: Callable[[], dict[str, Any]]) -> None:
    """Run `body` (see `outcome`) and exit the module with its result."""
    result = outcome(body)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


def _close_bmc_sessions() -> None:
    """Log out of the BMC sessions the module opened: BMCs have few session slots and keep
    an abandoned one until their idle timeout."""
    if MAAS_LIB_IMPORT_ERROR is None:
        with suppress(Exception):  # logging out is best effort; the result stands
            from maas_lib.bmc.sessions import close_all_sessions

            close_all_sessions()


def validated(model: Any, **fields: Any) -> Any:
    """A maas-lib pydantic model from module options, or an `InputError` naming the option."""
    from pydantic import ValidationError

    from maas_lib.validation import first_error

    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        field, msg = first_error(exc)
        raise InputError(f"{field}: {msg}" if field else msg) from None


def plain(value: Any) -> Any:
    """Library results as JSON-ready data (maas-lib's one serializer, as `--json` uses)."""
    from maas_lib.serialize import to_jsonable

    return to_jsonable(value)


def db_path(db: str | None) -> str:
    """The database the module uses: `db`, else `MAAS_DB`, else the URL of the worker
    that started this module (the Ansible executor), else maas-lib's default file."""
    if db or os.environ.get("MAAS_DB"):
        return db or maas_lib.default_db_url()
    from maas_lib.credentials import database_url_from_worker

    return database_url_from_worker() or maas_lib.default_db_url()


@contextmanager
def fleet(db: str | None) -> Iterator[Any]:
    """The maas-lib fleet at `db`; a missing database file is bad input, not a new database."""
    url = db_path(db)
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if "://" not in path and not os.path.exists(path):
        raise InputError(
            f"maas-lib database {path} does not exist (set db or MAAS_DB; "
            "register hosts with `maasctl hosts import`)"
        )
    with maas_lib.open_fleet(url, create=False) as f:
        yield f


def api_url(params: dict[str, Any]) -> str | None:
    """The service the task names (`api_url`, else MAAS_API_URL unless the task names a
    database with `db`), or None: the database."""
    if params.get("api_url"):
        if params.get("db"):
            raise InputError("db and api_url: name one")
        return params["api_url"]
    return None if params.get("db") else os.environ.get("MAAS_API_URL") or None


@contextmanager
def service_or_db(params: dict[str, Any]) -> Iterator[Any]:
    """The fleet a request task works on: the maas-lib service (`ApiFleet`, the client
    `maasctl --api` uses) when the task or MAAS_API_URL names one, else the database."""
    url = api_url(params)
    if url is None:
        with fleet(params.get("db")) as f:
            yield f
        return
    from maas_lib.service.client import open_api

    with open_api(
        url,
        token=params.get("api_token"),
        ca=params.get("api_ca"),
        cert=params.get("api_client_cert"),
        key=params.get("api_client_key"),
    ) as f:
        yield f


# -- one host's BMC ------------------------------------------------------------------------


def bmc_settings(params: dict[str, Any]) -> Any:
    """maas-lib's BMC settings from the task's `timeout`, `power_timeout` and `retries`."""
    from maas_lib.bmc import BmcSettings

    return validated(
        BmcSettings,
        timeout=params["timeout"],
        power_timeout=params["power_timeout"],
        retries=params["retries"],
    )


def inventory_host(name: str, bmc_vars: dict[str, Any]) -> Any:
    """A maas-lib `HostSpec` from an inventory host's `bmc_*` vars (see INVENTORY_VARS)."""
    fields = {k: v for k, v in bmc_vars.items() if k in HostSpec.model_fields}
    extra = {k: v for k, v in bmc_vars.items() if k not in HostSpec.model_fields}
    try:
        return validated(HostSpec, name=name, pool="inventory", vars=extra, **fields)
    except InputError as exc:
        raise InputError(f"inventory host {name}: {exc}") from None


def task_credential(params: dict[str, Any]) -> Any:
    """The credential the task names (`username`/`password`, `credential`), if it does."""
    from maas_lib.credentials import Credential, resolve_credential

    if params["username"] is not None:
        return Credential(
            name="module-params",
            username=params["username"],
            password=params["password"],
            source="module parameters",
        )
    return resolve_credential(params["credential"]) if params["credential"] else None


class Bmc:
    """One host's BMC, with its credential: given inline (`bmc_address`), by the play's
    inventory (`name`'s `bmc_*` vars, in `inventory`) or by the maas-lib database (`name`),
    in that order of precedence.

    Uses maas-lib's BMC controller directly (the same one `Fleet.bmc_*` uses), so inline
    parameters and inventory hosts work without a database and a task can read state
    before acting.
    """

    def __init__(self, params: dict[str, Any], inventory: dict[str, dict[str, Any]] | None = None):
        from dataclasses import replace

        from maas_lib.bmc import BmcController, BmcTarget
        from maas_lib.credentials import resolve_credential

        self.started = time.monotonic()
        settings = bmc_settings(params)
        self.registered: dict[str, Any] | None = None
        inventory = inventory or {}
        if params["bmc_address"]:
            self.source = "parameters"
            spec = validated(
                HostSpec,
                name=params["name"] or "inline",
                pool="inline",
                bmc_address=params["bmc_address"],
                bmc_protocol=params["bmc_protocol"],
                bmc_port=params["bmc_port"],
                bmc_system=params["bmc_system"],
                bmc_tls_ca=params["bmc_tls_ca"],
                bmc_tls_verify=params["bmc_tls_verify"],
                bmc_credential=params["credential"],
            )
            target = replace(
                BmcTarget.from_host(spec), host=params["name"] or params["bmc_address"]
            )
        elif params["name"] in inventory:
            self.source = "inventory"
            target = BmcTarget.from_host(inventory_host(params["name"], inventory[params["name"]]))
        else:
            self.source = "database"
            with fleet(params["db"]) as f:
                records = f.resolve_hosts([params["name"]])
            if len(records) != 1:
                raise InputError(
                    f"name {params['name']!r} matches {len(records)} registered hosts; "
                    "name exactly one"
                )
            target = BmcTarget.from_host(records[0])
            self.registered = records[0].public()
        cred = task_credential(params) or resolve_credential(target.credential)
        self.target = target
        self.credential = {"credential": cred.name, "credential_source": cred.source}
        self.controller = BmcController(settings, resolve=lambda _name: cred)

    @property
    def host(self) -> str:
        return self.target.host

    def _checked(self, result: Any) -> Any:
        """A successful BmcResult, or a `Failure` with its class, error and path."""
        if not result.ok:
            data = plain(result)
            data.pop("ok", None)
            data["elapsed_s"] = self.elapsed()
            raise Failure(
                f"{result.host}: {result.error_class}: {result.error} (via {result.via})",
                **data,
            )
        return result

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def status(self) -> Any:
        return self._checked(self.controller.status(self.target))

    def power(self, action: str, *, wait: bool = True) -> Any:
        from maas_lib.bmc import PowerAction, parse_choice

        act = parse_choice(PowerAction, action, "power action")
        return self._checked(self.controller.power(self.target, act, wait=wait))

    def boot(self, device: str, *, persistent: bool = False) -> Any:
        from maas_lib.bmc import BootDevice, parse_choice

        dev = parse_choice(BootDevice, device, "boot device")
        return self._checked(self.controller.boot(self.target, dev, persistent=persistent))

    def result(self, **fields: Any) -> dict[str, Any]:
        """The fields every BMC module returns, plus `fields`."""
        data: dict[str, Any] = {
            "host": self.host,
            "protocol": str(self.target.primary.protocol),
            "bmc_from": self.source,
            **self.credential,
            "elapsed_s": self.elapsed(),
        }
        if self.registered is not None:
            data["registered"] = self.registered
        data.update(fields)
        return data


# -- the BMC and step tasks (one body for the action plugin and the module) ---------------

#: The state each power `state` leaves the host in, when the request is idempotent.
POWER_WANT: dict[str, str | None] = {
    "on": "on",
    "off": "off",
    "soft": "off",
    "cycle": None,
    "reset": None,
}
BOOT_DEVICES = ["pxe", "disk", "cd", "bios"]

Inventory = dict[str, dict[str, Any]]


def bmc_info_task(params: dict[str, Any], check_mode: bool, inventory: Inventory) -> dict:
    if params["names"] is not None:
        return fleet_task(params, check_mode, inventory, "status")
    bmc = Bmc(params, inventory)
    now = bmc.status()
    extra = {} if now.power_raw is None else {"power_raw": now.power_raw}
    return bmc.result(changed=False, power=now.power, via=now.via, **extra)


def power_task(params: dict[str, Any], check_mode: bool, inventory: Inventory) -> dict:
    if params["names"] is not None:
        return fleet_task(params, check_mode, inventory, "power")
    bmc = Bmc(params, inventory)
    state = params["state"]
    before = bmc.status()
    if POWER_WANT[state] is not None and before.power == POWER_WANT[state]:
        return bmc.result(
            changed=False, power=before.power, previous_power=before.power, via=before.via
        )
    if check_mode:
        return bmc.result(
            changed=True,
            power=before.power,
            previous_power=before.power,
            action=state,
            via=before.via,
        )
    after = bmc.power(state, wait=params["wait"])
    return bmc.result(
        changed=True, power=after.power, previous_power=before.power, action=state, via=after.via
    )


def boot_device_task(params: dict[str, Any], check_mode: bool, inventory: Inventory) -> dict:
    if params["names"] is not None:
        return fleet_task(params, check_mode, inventory, "boot")
    bmc = Bmc(params, inventory)
    device, persistent = params["device"], params["persistent"]
    if check_mode:
        now = bmc.status()
        return bmc.result(
            changed=True, device=device, persistent=persistent, power=now.power, via=now.via
        )
    done = bmc.boot(device, persistent=persistent)
    return bmc.result(changed=True, device=device, persistent=persistent, via=done.via)


def fleet_hosts(params: dict[str, Any], inventory: Inventory) -> tuple[list[Any], dict[str, str]]:
    """The hosts `names` names, from the inventory where it describes them, else from the
    database (globs allowed there); and where each one's BMC details came from."""
    names = list(dict.fromkeys(params["names"]))
    hosts = {n: inventory_host(n, inventory[n]) for n in names if n in inventory}
    source = dict.fromkeys(hosts, "inventory")
    rest = [n for n in names if n not in inventory]
    if rest:
        with fleet(params["db"]) as f:
            for record in f.resolve_hosts(rest):
                if record.name not in hosts:
                    hosts[record.name] = record
                    source[record.name] = "database"
    return list(hosts.values()), source


def fleet_task(
    params: dict[str, Any], check_mode: bool, inventory: Inventory, verb: str
) -> dict[str, Any]:
    """The fleet-wide form (`names`): one maas-lib fan-out over every host (the
    concurrency and per-endpoint limits of `maasctl bmc`), one result per host in
    `hosts`; the task fails if any host failed (`failed_hosts`)."""
    from maas_lib.bmc import BootDevice, PowerAction, parse_choice, run_bmc

    started = time.monotonic()
    hosts, source = fleet_hosts(params, inventory)
    common = {"settings": bmc_settings(params), "credential": task_credential(params)}
    rows: dict[str, dict[str, Any]] = {}

    def record(results: list[Any], **fields: Any) -> None:
        for r in results:
            row = {k: v for k, v in r.public().items() if v is not None}
            rows[r.host] = {**rows.get(r.host, {}), **row, **fields, "bmc_from": source[r.host]}

    state = params.get("state")
    if verb == "boot" and not check_mode:
        device = parse_choice(BootDevice, params["device"], "boot device")
        record(
            run_bmc(hosts, "boot", device=device, persistent=params["persistent"], **common),
            changed=True,
        )
    elif verb == "power" and POWER_WANT[state] is None and not check_mode:
        action = parse_choice(PowerAction, state, "power action")
        record(run_bmc(hosts, "power", action=action, wait=params["wait"], **common), changed=True)
    else:
        before = run_bmc(hosts, "status", **common)
        record(before, changed=False)
        if verb == "power":
            want = POWER_WANT[state]
            acting = {r.host for r in before if r.ok and (want is None or r.power != want)}
            for r in before:
                if r.ok:
                    rows[r.host]["previous_power"] = r.power
            if check_mode:
                for host in acting:
                    rows[host].update(changed=True, action=state)
            elif acting:
                action = parse_choice(PowerAction, state, "power action")
                todo = [h for h in hosts if h.name in acting]
                record(
                    run_bmc(todo, "power", action=action, wait=params["wait"], **common),
                    changed=True,
                    action=state,
                )
        elif verb == "boot":  # check mode: the BMCs and credentials answer; nothing is set
            for row in rows.values():
                row.update(changed=row["ok"], device=params["device"])
    failed = [h for h, row in rows.items() if not row["ok"]]
    result = {
        "changed": any(row["changed"] and row["ok"] for row in rows.values()),
        "hosts": rows,
        "failed_hosts": failed,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if failed:
        first = rows[failed[0]]
        raise Failure(
            f"{len(failed)} of {len(rows)} hosts failed; first {failed[0]}: "
            f"{first.get('error_class')}: {first.get('error')}",
            **result,
        )
    return result


def step_task(
    params: dict[str, Any],
    check_mode: bool,
    inventory: Inventory,
    *,
    open_fleet: Callable[[str | None], Any] | None = None,
) -> dict:
    """One step of a running request (`Fleet.run_step`), as the native executor runs it.
    `open_fleet`: the fleet context for `db` (the step service keeps one open)."""
    with (open_fleet or fleet)(params["db"]) as f:
        result = f.run_step(
            params["request_id"],
            params["name"],
            params["step"],
            nth=params["nth"],
            settings=params["settings"],
            install_mark=params["install_mark"],
            done={k: list(v) for k, v in params["done"].items()},
            notes=params["notes"],
            worker=params["worker"],
        )
    data = result.model_dump(mode="json")
    if result.outcome == "skipped":
        return {"changed": False, "skipped": True, **data}
    if result.outcome not in ("succeeded", "failed", "timeout"):
        raise Failure(f"{params['step']}: {result.outcome}", **data)
    failed = result.outcome != "succeeded" and not result.resumed
    if failed and not result.optional:
        raise Failure(f"{params['step']}: {result.error_class}: {result.message}", **data)
    return {"changed": result.outcome == "succeeded" and not result.resumed, **data}


@dataclass(frozen=True)
class Task:
    """A task of this collection: its argument spec and rules, as the module declares them
    (AnsibleModule keyword arguments), whether it supports check mode, and its body."""

    argument_spec: dict[str, Any]
    rules: dict[str, Any]
    check_mode: bool
    body: Callable[[dict[str, Any], bool, Inventory], dict[str, Any]]

    def module(self) -> AnsibleModule:
        return new_module(self.argument_spec, supports_check_mode=self.check_mode, **self.rules)


TASKS: dict[str, Task] = {
    "bmc_info": Task(BMC_ARGS, BMC_RULES, True, bmc_info_task),
    "power": Task(
        {
            **BMC_ARGS,
            "state": {"type": "str", "required": True, "choices": list(POWER_WANT)},
            "wait": {"type": "bool", "default": True},
        },
        BMC_RULES,
        True,
        power_task,
    ),
    "boot_device": Task(
        {
            **BMC_ARGS,
            "device": {"type": "str", "required": True, "choices": BOOT_DEVICES},
            "persistent": {"type": "bool", "default": False},
        },
        BMC_RULES,
        True,
        boot_device_task,
    ),
    "step": Task(
        {
            "name": {"type": "str", "required": True},
            "request_id": {"type": "int", "required": True},
            "step": {"type": "str", "required": True},
            "nth": {"type": "int", "default": 1},
            "settings": {"type": "dict", "default": {}},
            "install_mark": {"type": "int"},
            "done": {"type": "dict", "default": {}},
            "notes": {"type": "dict", "default": {}},
            "worker": {"type": "str"},
            **DB_ARGS,
        },
        {},
        False,
        step_task,
    ),
}


def run_module(name: str) -> None:
    """A module's main: the task `name` in a module process."""
    task = TASKS[name]
    module = task.module()
    run(module, lambda: task.body(module.params, module.check_mode, {}))
