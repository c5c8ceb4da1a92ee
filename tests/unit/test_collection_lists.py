"""The collection holds no list or default of its own: its argument specs take maas-lib's
actions, request states (and which of them are ended) and BMC defaults, and the literal
copies Ansible's DOCUMENTATION must carry (and the power and boot choices) are held to
them here."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from maas_lib.bmc import BmcSettings
from maas_lib.bmc.base import BootDevice, PowerAction
from maas_lib.models import Action, RequestState
from tests.conftest import REPO

PLUGINS = REPO / "ansible_collections/maas_lib/fleet/plugins"


def documentation(path: Path, name: str = "DOCUMENTATION") -> dict:
    """A module's DOCUMENTATION (or a doc fragment's `name`) string, parsed."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{path} has no {name}")


def test_actions_and_states_are_maas_libs_in_the_specs_and_the_docs():
    from ansible_collections.maas_lib.fleet.plugins.module_utils import maas

    actions, states = [a.value for a in Action], [s.value for s in RequestState]
    assert (actions, states) == (maas.ACTIONS, maas.REQUEST_STATES)
    assert {"succeeded", "failed", "partial", "cancelled"} == maas.ENDED_STATES
    submit = documentation(PLUGINS / "modules/submit.py")["options"]
    assert submit["action"]["choices"] == actions
    info = documentation(PLUGINS / "modules/request_info.py")["options"]
    assert info["state"]["choices"] == states


def test_bmc_options_default_to_bmc_settings_and_say_so():
    from ansible_collections.maas_lib.fleet.plugins.module_utils import maas

    options = documentation(PLUGINS / "doc_fragments/common.py", "BMC")["options"]
    for name in ("timeout", "power_timeout", "retries"):
        assert "default" not in maas.BMC_ARGS[name] and "default" not in options[name], name
        default = BmcSettings.model_fields[name].default
        assert f"maas-lib's default, V({default:g})" in " ".join(options[name]["description"])


def test_power_states_and_boot_devices_are_maas_libs():
    power = documentation(PLUGINS / "modules/power.py")["options"]
    assert power["state"]["choices"] == [a.value for a in PowerAction]
    boot = documentation(PLUGINS / "modules/boot_device.py")["options"]
    assert boot["device"]["choices"] == [d.value for d in BootDevice]
