"""Ansible inventories (YAML, INI, directories, dynamic scripts) → `HostSpec` and `PoolSpec`.

Parsing is ansible-core's own: `InventoryManager` for the sources and `VariableManager` for
host, group, `group_vars/` and `host_vars/` variables, with Jinja templates rendered. Only
the variables maas-lib understands are read; secrets are never read from an inventory.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from maas_lib.access.models import check_name
from maas_lib.bmc.base import IPMI_CIPHER_SUITE_VAR, ipmi_cipher_suite
from maas_lib.errors import InputError
from maas_lib.inventory_limits import check_inventory_sources
from maas_lib.models import HostSpec, PoolSpec
from maas_lib.validation import first_error

log = logging.getLogger(__name__)

#: Inventory variables that map one-to-one onto HostSpec fields.
HOST_VARS = tuple(f for f in HostSpec.model_fields if f not in ("name", "pool", "vars"))
#: Pool-wide variables a host (or its group) sets: one value per pool.
_POOL_VARS = ("pool", "pool_max_unavailable", "pool_owner")
#: Variables ansible-core adds to every host; not the inventory's own, so not kept.
_MAGIC_VARS = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "group_names",
        "groups",
        "hostvars",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "playbook_dir",
    }
)
#: Other vars kept for hooks must not look like secrets: those never reach the database.
_SECRETISH_VAR_RE = re.compile(
    r"(?i)(pass(word|wd|phrase)?$|_pass$|secret|token|private_key|api_?key)"
)
#: Variables that look like secrets: never read, and the user is told so.
_SECRET_VAR_RE = re.compile(r"^bmc_(user(name)?|pass(word)?|secret|token)$")
_FAILED_PLUGIN_RE = re.compile(r"\[WARNING\]: Failed to parse inventory with '(\w+)' plugin: (.*)")
_WARNING_RE = re.compile(r"^\[WARNING\]: (.*)$", re.M)


def _parse_failure(source: str, captured: str) -> str:
    """The most relevant reason ansible-core gave for failing to parse `source`."""
    reasons = dict(_FAILED_PLUGIN_RE.findall(captured))
    ext = os.path.splitext(source)[1].lower()
    preferred = ("auto", "yaml") if ext in (".yml", ".yaml") else ("ini", "toml", "script")
    for plugin in (*preferred, *reasons):
        if plugin in reasons:
            return reasons[plugin].strip()
    return "not a YAML, INI or TOML inventory, nor an executable inventory script"


@functools.cache
def _init_plugin_loader() -> None:
    """As ansible's own CLIs do, once per process: makes FQCN/collection plugins loadable."""
    from ansible.plugins.loader import init_plugin_loader  # ansible-core: see _parse_sources

    init_plugin_loader()


def _parse_sources(sources: Sequence[str]) -> tuple[Any, Any, Any]:
    # ansible-core (~0.2 s) when an inventory is parsed, not when this module is imported.
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    _init_plugin_loader()
    # A source no plugin can parse is an error here, not ansible's default warning.
    C.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    # Try the yaml plugin before auto: auto loads every YAML file once more just to look for
    # a `plugin:` key (a third of the time on a 20,000-host inventory), and yaml declines
    # plugin configuration files, which then still reach auto.
    enabled = list(C.INVENTORY_ENABLED)
    if "auto" in enabled and "yaml" in enabled and enabled.index("auto") < enabled.index("yaml"):
        enabled.remove("yaml")
        enabled.insert(enabled.index("auto"), "yaml")
        C.INVENTORY_ENABLED = enabled
    loader = DataLoader()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            inventory = InventoryManager(loader=loader, sources=list(sources))
    except AnsibleError as exc:
        text = captured.getvalue()
        failed = next((s for s in sources if os.path.abspath(s) in str(exc)), sources[0])
        raise InputError(f"inventory {failed}: {_parse_failure(failed, text)}") from None
    for warning in _WARNING_RE.findall(captured.getvalue()):
        log.warning("inventory: %s", warning)
    return loader, inventory, VariableManager(loader=loader, inventory=inventory)


def _default_pool(host: Any) -> str:
    """The host's most specific group (deepest; the first declared among equals)."""
    groups = [g for g in host.get_groups() if g.name not in ("all", "ungrouped")]
    if not groups:
        return "ungrouped"
    return max(groups, key=lambda g: g.depth).name


def load_inventory(
    sources: Sequence[str | os.PathLike[str]],
) -> tuple[list[HostSpec], list[PoolSpec]]:
    """Parse inventory sources into validated hosts and pools, or raise `InputError`."""
    if not sources:
        raise InputError("no inventory given")
    sources = [os.fspath(s) for s in sources]
    for source in sources:
        if not os.path.exists(source):
            raise InputError(f"inventory {source}: no such file or directory")
    check_inventory_sources(sources)
    # ansible-core after the cheap checks: a bad path fails at once.
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    loader, inventory, variables = _parse_sources(sources)
    hosts: list[HostSpec] = []
    pool_budgets: dict[str, tuple[str, Any]] = {}
    pool_owners: dict[str, tuple[str, Any]] = {}
    secret_vars: set[str] = set()
    for host in inventory.get_hosts():
        hostvars = variables.get_vars(host=host, include_hostvars=False)
        templar = Templar(loader=loader, variables=hostvars)
        fields: dict[str, Any] = {"name": host.name}
        for var in (*HOST_VARS, *_POOL_VARS):
            if var not in hostvars:
                continue
            try:
                value = templar.template(hostvars[var])
            except AnsibleError as exc:
                raise InputError(f"host {_shown(host.name)}: {var}: {exc.message}") from None
            fields[var] = _plain(value)
        secret_vars.update(v for v in hostvars if _SECRET_VAR_RE.match(v))
        fields["vars"] = _extra_vars(host.name, hostvars, templar)
        fields.setdefault("pool", _default_pool(host))
        budget = fields.pop("pool_max_unavailable", None)
        owner = fields.pop("pool_owner", None)
        spec = _validate_host(fields)
        _check_cipher_suite(spec)
        hosts.append(spec)
        for var, value, seen_by_pool in (
            ("pool_max_unavailable", budget, pool_budgets),
            ("pool_owner", None if owner is None else _owners(spec.name, owner), pool_owners),
        ):
            if value is None:
                continue
            seen = seen_by_pool.setdefault(spec.pool, (spec.name, value))
            if str(seen[1]) != str(value):
                raise InputError(
                    f"pool {spec.pool}: {var} is {_one_value(seen[1])} for host {seen[0]} "
                    f"but {_one_value(value)} for host {spec.name}"
                )
    if not hosts:
        raise InputError(f"inventory {', '.join(sources)}: defines no hosts")
    for var in sorted(secret_vars):
        log.warning(
            "inventory variable %s ignored: secrets are never read from inventories; "
            "name a credential with bmc_credential",
            var,
        )
    pools = []
    for name in sorted({h.pool for h in hosts}):
        budget = pool_budgets.get(name, (None, None))[1]
        owners = pool_owners.get(name, (None, []))[1]
        try:
            pools.append(PoolSpec(name=name, max_unavailable=budget, owners=owners))
        except ValidationError as exc:
            raise InputError(f"pool {name}: pool_max_unavailable: {first_error(exc)[1]}") from None
    return hosts, pools


def _owners(host: str, value: Any) -> list[str]:
    """`pool_owner`: a team name or a list of them, as a sorted list of valid names."""
    teams = [value] if isinstance(value, str) else value
    if not isinstance(teams, list) or not teams or not all(isinstance(t, str) for t in teams):
        raise InputError(
            f"host {_shown(host)}: pool_owner: expected a team name or a list of team names"
        )
    try:
        return sorted({check_name(str(t), "pool_owner") for t in teams})
    except ValueError as exc:
        raise InputError(f"host {_shown(host)}: {exc}") from None


def _one_value(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _vaulted(value: Any) -> bool:
    """An Ansible Vault value (ansible-core 2.19 tags them; older cores had `.vault`)."""
    try:
        from ansible.parsing.vault import VaultHelper  # ansible-core: see _parse_sources
    except ImportError:
        return hasattr(value, "vault")
    try:
        return VaultHelper.get_ciphertext(value, with_tags=False) is not None
    except Exception:
        return True


def _extra_vars(host: str, hostvars: Any, templar: Any) -> dict[str, Any]:
    """The host's other vars, templated, minus magic and secret-looking ones."""
    from ansible.errors import AnsibleError  # ansible-core: see _parse_sources

    kept: dict[str, Any] = {}
    for name, value in hostvars.items():
        if (
            name in _MAGIC_VARS
            or name in HOST_VARS
            or name in _POOL_VARS
            or _SECRET_VAR_RE.match(name)
            or _SECRETISH_VAR_RE.search(name)
            or _vaulted(value)  # vault-encrypted: a secret by definition
        ):
            continue
        # A var that does not template is not ours to validate (it may only make sense
        # inside a play): keep it as written.
        with contextlib.suppress(AnsibleError):
            value = templar.template(value)
        try:
            # Plain JSON types only (ansible-core tags its strings; some values are not JSON).
            kept[name] = json.loads(json.dumps(value, default=str))
        except Exception:  # not JSON, or holds a vaulted value deeper down: not kept
            log.debug("host %s: var %s not kept", host, name)
    return kept


def _plain(value: Any) -> Any:
    """Strip ansible-core's tagged str/int subclasses down to builtins."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _check_cipher_suite(spec: HostSpec) -> None:
    """`bmc_ipmi_cipher_suite` (kept in the host's vars) names a suite the client has."""
    try:
        ipmi_cipher_suite(spec.vars.get(IPMI_CIPHER_SUITE_VAR))
    except ValueError as exc:
        raise InputError(f"host {spec.name}: {IPMI_CIPHER_SUITE_VAR}: {exc}") from None


def _validate_host(fields: dict[str, Any]) -> HostSpec:
    try:
        return HostSpec.model_validate(fields)
    except ValidationError as exc:
        var, msg = first_error(exc)
        var = var or "vars"
        if var == "vars" and msg.startswith("bmc_"):
            var, _, msg = msg.partition(": ")
        raise InputError(f"host {_shown(fields['name'])}: {var}: {msg}") from None


def _shown(name: str, limit: int = 64) -> str:
    """A host name as an error line shows it: one line, and not 10,000 characters."""
    shown = name if name.isprintable() else repr(name)
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(name)} characters)"
