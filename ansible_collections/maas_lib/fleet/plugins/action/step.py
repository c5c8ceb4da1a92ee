# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""maas_lib.fleet.step on the controller, without a module process (documented by the
module of the same name, which runs where the task is delegated elsewhere)."""

from __future__ import annotations

from ansible_collections.maas_lib.fleet.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    TASK = "step"
    READS_INVENTORY = False
