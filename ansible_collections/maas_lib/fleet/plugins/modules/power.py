# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: power
short_description: Set one host's power state through its BMC (IPMI or Redfish)
version_added: 0.1.0
description:
  - Powers a host on, off (hard), off through the OS (soft), or cycles it, through its BMC,
    with maas-lib's deadlines, retries and confirmation by polling.
  - Reads the power state first, so V(on), V(off) and V(soft) are idempotent - a host
    already in the wanted state reports C(changed=false) and is not touched.
  - V(cycle) and V(reset) always act (and report C(changed=true)).
  - The host is a registered maas-lib host (O(name)) or a BMC given by parameters
    (O(bmc_address)); see M(maas_lib.fleet.bmc_info) to only read the state.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.bmc
options:
  state:
    description:
      - V(on) powers on; V(off) powers off at once (hard); V(soft) asks the OS to shut down
        (ACPI) and waits until the host is off.
      - V(cycle) powers off, waits until the BMC confirms off, then powers on; a host that is
        off is just powered on.
      - V(reset) is a hard reset (IPMI chassis reset, Redfish ForceRestart); the host reboots
        at once and stays on.
    type: str
    required: true
    choices: ["on", "off", soft, cycle, reset]
  wait:
    description:
      - Wait until the BMC confirms the new state (up to O(power_timeout)).
      - V(false) returns once the BMC accepted the request; RV(power) is then the state
        read right after.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Reads the power state and reports whether the host would change; never acts.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - maas-lib maintainers (!UNKNOWN)
seealso:
  - module: maas_lib.fleet.bmc_info
  - module: maas_lib.fleet.boot_device
  - module: maas_lib.fleet.submit
    description: Power actions over many hosts in batches within disruption budgets.
"""

EXAMPLES = r"""
- name: Power on every host of the inventory, 20 at a time
  hosts: all
  gather_facts: false
  serial: 20
  tasks:
    - name: Power on (a host already on is left alone)
      maas_lib.fleet.power:
        name: "{{ inventory_hostname }}"
        state: "on"
      delegate_to: localhost

- name: Power-cycle a BMC that is not registered, credentials from a vaulted variable
  maas_lib.fleet.power:
    bmc_address: 10.20.1.7
    username: admin
    password: "{{ vault_bmc_password }}"
    state: cycle
  delegate_to: localhost

- name: Would this host be powered off?
  maas_lib.fleet.power:
    name: web01
    state: "off"
  check_mode: true
  register: would
"""

RETURN = r"""
host:
  description: The registered host name, or O(name) / O(bmc_address) for an inline BMC.
  returned: success and BMC failures
  type: str
  sample: web01
power:
  description:
    - The power state after the task (V(on) or V(off)); in check mode, the current state,
      which may also be a transition (V(powering_on), V(powering_off)) or V(unknown). A
      power change is confirmed only by the exact state asked for; a BMC that reports an
      unknown state fails the task with error class C(power_unknown).
  returned: success
  type: str
  sample: "on"
previous_power:
  description: The power state read before acting.
  returned: success
  type: str
  sample: "off"
action:
  description: The power request made (or, in check mode, that would be made), if any.
  returned: success
  type: str
  sample: "on"
via:
  description: The BMC path that answered last, for example V(ipmi://10.20.1.7:623).
  returned: success and BMC failures
  type: str
  sample: ipmi://10.20.1.7:623
protocol:
  description: The primary BMC protocol, V(ipmi) or V(redfish).
  returned: success
  type: str
  sample: ipmi
credential:
  description: The credential name used (V(module-params) for O(username)/O(password)).
  returned: success
  type: str
  sample: lab
credential_source:
  description: Where the credential came from (V(environment), a file, module parameters).
  returned: success
  type: str
  sample: environment
registered:
  description: The host as registered in maas-lib (pool, rack, standing, BMC settings).
  returned: success, when O(name) names a registered host
  type: dict
elapsed_s:
  description: Seconds the task spent on the BMC.
  returned: success and BMC failures
  type: float
  sample: 1.52
bmc_from:
  description: Where the host's BMC details came from, V(parameters), V(inventory) or V(database).
  returned: success and BMC failures, with O(name) or O(bmc_address)
  type: str
  sample: inventory
hosts:
  description:
    - With O(names), each host's result by host name - C(ok), C(changed), C(power),
      C(via), C(elapsed_s), C(bmc_from), and C(error_class) and C(error) when it failed.
    - For V(on), V(off) and V(soft), also C(previous_power); C(action) for the hosts
      acted on (or, in check mode, that would be).
  returned: with O(names)
  type: dict
  sample: {"web01": {"ok": true, "changed": true, "power": "on", "via": "ipmi://10.20.1.7:623",
           "elapsed_s": 4.1, "bmc_from": "inventory"}}
failed_hosts:
  description: With O(names), the hosts that failed.
  returned: with O(names)
  type: list
  elements: str
  sample: []
error_class:
  description: How the BMC failed.
  returned: failure
  type: str
  sample: auth
error:
  description: What the BMC failure was.
  returned: failure
  type: str
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import run_module


def main() -> None:
    # The action plugin of the same name runs this task on the controller without a
    # module process; this runs it where the module is executed (see module_utils).
    run_module("power")


if __name__ == "__main__":
    main()
