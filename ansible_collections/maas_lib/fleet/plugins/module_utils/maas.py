# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared by the maas_lib.fleet modules: importing maas-lib, the common options, turning
maas-lib errors into one-line failures and library results into plain data.

Modules stay thin: an argument spec, then one call into maas-lib through this file.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import maas_lib
    from maas_lib.errors import InputError, MaasError
    from maas_lib.models import TERMINAL_REQUEST_STATES
except ImportError:
    MAAS_LIB_IMPORT_ERROR: str | None = traceback.format_exc()

    class MaasError(Exception):  # type: ignore[no-redef]
        """Stand-in so the names exist; `new_module` fails before any is raised."""

    class InputError(MaasError):  # type: ignore[no-redef]
        pass

else:
    MAAS_LIB_IMPORT_ERROR = None

#: The submission actions and request states, as maas-lib defines them (`maas_lib.Action`,
#: `maas_lib.RequestState`). None without maas-lib: `new_module` then fails, saying so.
#: The modules' DOCUMENTATION must list them literally; a test holds it to these.
ACTIONS: list[str] | None = None
REQUEST_STATES: list[str] | None = None
#: The states a request ends in.
ENDED_STATES: frozenset[str] = frozenset()
if MAAS_LIB_IMPORT_ERROR is None:
    ACTIONS = [a.value for a in maas_lib.Action]
    REQUEST_STATES = [s.value for s in maas_lib.RequestState]
    ENDED_STATES = frozenset(s.value for s in TERMINAL_REQUEST_STATES)

DB_ARGS: dict[str, Any] = {"db": {"type": "str"}}

#: One host's BMC: a registered host (`name`) or inline parameters (`bmc_address`, ...).
BMC_ARGS: dict[str, Any] = {
    "name": {"type": "str"},
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
    "required_one_of": [("name", "bmc_address")],
    "required_together": [("username", "password")],
    "mutually_exclusive": [("credential", "username"), ("credential", "password")],
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

    def __init__(self, module: AnsibleModule):
        super().__init__(logging.WARNING)
        self.module = module

    def emit(self, record: logging.LogRecord) -> None:
        with suppress(Exception):  # a warning must never fail the module
            self.module.warn(one_line(record.getMessage()))


def run(module: AnsibleModule, body: Callable[[], dict[str, Any]]) -> None:
    """Run `body` and exit with its result; errors end the module with a one-line `msg`.

    Bad input (maas-lib's `InputError`: unknown host, bad option, unresolvable credential)
    and other maas-lib errors never show a traceback; only a bug in this collection or
    maas-lib adds one, as `exception` (shown with -vvv).
    """
    log = logging.getLogger("maas_lib")
    handler = _Warnings(module)
    log.addHandler(handler)
    log.propagate = False  # nothing on stderr: Ansible reads the module's stdout only
    try:
        result = body()
    except Failure as exc:
        module.fail_json(msg=one_line(exc), **exc.result)
    except InputError as exc:
        module.fail_json(msg=one_line(exc))
    except MaasError as exc:
        module.fail_json(msg=one_line(exc), error_class=getattr(exc, "error_class", None))
    except Exception as exc:
        module.fail_json(
            msg=one_line(f"unexpected {type(exc).__name__}: {exc}"),
            exception=traceback.format_exc(),
        )
    finally:
        log.removeHandler(handler)
        _close_bmc_sessions()
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


# -- one host's BMC ------------------------------------------------------------------------


class Bmc:
    """One host's BMC, named by a registered host or given inline, with its credential.

    Uses maas-lib's BMC controller directly (the same one `Fleet.bmc_*` uses), so inline
    parameters work without a database and a module can read state before acting.
    """

    def __init__(self, params: dict[str, Any]):
        from dataclasses import replace

        from maas_lib.bmc import BmcController, BmcSettings, BmcTarget
        from maas_lib.credentials import Credential, resolve_credential
        from maas_lib.models import HostSpec

        self.started = time.monotonic()
        settings = validated(
            BmcSettings,
            timeout=params["timeout"],
            power_timeout=params["power_timeout"],
            retries=params["retries"],
        )
        self.registered: dict[str, Any] | None = None
        if params["bmc_address"]:
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
        else:
            with fleet(params["db"]) as f:
                records = f.resolve_hosts([params["name"]])
            if len(records) != 1:
                raise InputError(
                    f"name {params['name']!r} matches {len(records)} registered hosts; "
                    "name exactly one"
                )
            target = BmcTarget.from_host(records[0])
            self.registered = records[0].public()
        if params["username"] is not None:
            cred = Credential(
                name="module-params",
                username=params["username"],
                password=params["password"],
                source="module parameters",
            )
        else:
            cred = resolve_credential(params["credential"] or target.credential)
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
            **self.credential,
            "elapsed_s": self.elapsed(),
        }
        if self.registered is not None:
            data["registered"] = self.registered
        data.update(fields)
        return data
