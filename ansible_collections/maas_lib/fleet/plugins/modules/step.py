# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: step
short_description: Run one step of a maas-lib request's action for one host
version_added: 0.1.0
description:
  - The building block of the action playbooks that C(maasctl run --executor ansible)
    runs for each batch (this collection's C(playbooks/), for example
    C(maas_lib.fleet.power_cycle)). Each task is one step of the action (V(power-off),
    V(boot-image), V(wait-install), ...), named as the native executor names it.
  - Runs exactly the step the native executor runs, within the same timeout, and fails
    with the same error class. It records nothing itself; the executor records each task
    from ansible-runner's events.
  - A step an earlier attempt of the host's task already completed (O(done)) is not run
    again; the task reports V(resumed=true) and that attempt's outcome.
  - A step whose condition does not hold (a hook the request has none of, virtual media
    on an IPMI host) is reported as skipped.
  - An optional step that fails (a reboot's soft-off) does not fail the task; its
    RV(outcome) says how it ended.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
options:
  name:
    description: The host (registered in maas-lib and part of the request).
    type: str
    required: true
  request_id:
    description: The running request whose action the step belongs to.
    type: int
    required: true
  step:
    description: The step's name, for example V(power-off) or V(wait-install).
    type: str
    required: true
  nth:
    description: Which step of that name, for actions that have it twice (decommission
      powers off before and after the install).
    type: int
    default: 1
  settings:
    description: The scheduler settings (C(maasctl run) options) the executor runs with.
    type: dict
    default: {}
  install_mark:
    description: Install reports with larger ids belong to this attempt (the executor
      reads the mark before the batch sets any install target). Omitted, the request's
      earlier report is looked for first.
    type: int
  done:
    description: Steps an earlier attempt completed, by name, with their outcomes in order.
    type: dict
    default: {}
  notes:
    description:
      - What earlier tasks found that this step's condition reads. Only V(powered_off) is
        used (a reboot's hard power-off is skipped when its soft-off turned the host off).
    type: dict
    default: {}
  worker:
    description:
      - The scheduler worker running the playbook. If another worker holds the request
        now (this one was presumed dead and its requests resumed), the step is refused
        with error class V(fenced), so a playbook that outlived its worker never acts on
        a host a second time.
    type: str
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - maas-lib maintainers (!UNKNOWN)
seealso:
  - module: maas_lib.fleet.power
"""

EXAMPLES = r"""
- name: power-off  # noqa: name[casing] (task names are the step names maas-lib records)
  maas_lib.fleet.step:
    name: "{{ inventory_hostname }}"
    request_id: "{{ maas_request_id }}"
    step: power-off
  delegate_to: localhost
"""

RETURN = r"""
step:
  description: The step run.
  returned: always
  type: str
  sample: power-off
outcome:
  description: V(succeeded), V(failed), V(timeout) or V(skipped).
  returned: always
  type: str
  sample: succeeded
resumed:
  description: An earlier attempt completed the step; it was not run again.
  returned: always
  type: bool
duration_s:
  description: Seconds the step took.
  returned: always
  type: float
error_class:
  description: How the step failed (V(unreachable), V(auth), V(install_failed), ...).
  returned: failure
  type: str
  sample: install_failed
via:
  description: The BMC path that acted last, for steps that talk to the BMC.
  returned: when the step reached a BMC
  type: str
powered_off:
  description: Whether the host is known to be off after the step (a reboot's soft-off).
  returned: always
  type: bool
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import run_module


def main() -> None:
    # The action plugin of the same name runs this task on the controller without a
    # module process; this runs it where the module is executed (see module_utils).
    run_module("step")


if __name__ == "__main__":
    main()
