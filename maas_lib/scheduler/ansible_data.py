"""Values handed to Ansible as data: every string tagged ``!unsafe``, so never templated.

Host vars and request fields come from the store, which maas-lib does not trust: a value
such as ``{{ lookup('pipe', ...) }}`` must reach a play as that literal text. Ansible
never renders a string it loaded with the ``!unsafe`` tag (its own marking for untrusted
data), however a play references it; mapping keys are tagged too (a key may come back as
a value through ``dict2items``).

`store_host_vars` (and `host_vars`, what a play knows of a host) also keeps Ansible's
connection and interpreter variables (``ansible_*``) out of what the store can set,
unless the operator allow-lists them: with
``ansible_python_interpreter`` or ``ansible_connection`` a row in the store would choose
what runs on the scheduler host.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from maas_lib.models import HostRecord

__all__ = ["host_vars", "store_host_vars", "write_unsafe_yaml"]


class _UnsafeDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", value, style='"')


def _represent_dict(dumper: yaml.SafeDumper, value: Mapping[Any, Any]) -> yaml.Node:
    pairs = [
        (dumper.represent_scalar("!unsafe", str(k), style='"'), dumper.represent_data(v))
        for k, v in value.items()
    ]
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs)


_UnsafeDumper.add_representer(str, _represent_str)
_UnsafeDumper.add_representer(dict, _represent_dict)


def unsafe_yaml(data: Mapping[str, Any]) -> str:
    """`data` (JSON-safe) as YAML with every string value tagged ``!unsafe``."""
    return yaml.dump(dict(data), Dumper=_UnsafeDumper, allow_unicode=True, sort_keys=False)


def write_unsafe_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write `unsafe_yaml(data)` to `path` (mode 0600, parents 0700); returns `path`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = path.open("x", encoding="utf-8")
    with fd:
        path.chmod(0o600)
        fd.write(unsafe_yaml(data))
    return path


def store_host_vars(stored: Mapping[str, Any], allow: Collection[str] = ()) -> dict[str, Any]:
    """A host's vars from the store as Ansible may see them: ``ansible_*`` variables
    (connection, interpreter, become...) only when named in `allow`."""
    return {k: v for k, v in stored.items() if not k.startswith("ansible_") or k in allow}


def host_vars(record: HostRecord, allow: Collection[str] = ()) -> dict[str, object]:
    """What a play's inventory knows of the host (a hook's, an action playbook's): its
    inventory vars (``ansible_*`` ones only when named in `allow`) and maas-lib's
    fields, as ``maas_<field>``."""
    data: dict[str, object] = store_host_vars(record.vars, allow)
    fields = record.model_dump(mode="json", exclude={"vars", "created", "updated"})
    data.update({f"maas_{k}": v for k, v in fields.items() if v is not None})
    return data
