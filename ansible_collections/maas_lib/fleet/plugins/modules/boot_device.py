# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: boot_device
short_description: Set the device one host boots from next (or always), through its BMC
version_added: 0.1.0
description:
  - Sets the boot device of a host's next boot (one-time override), or of every boot with
    O(persistent=true), over IPMI or Redfish.
  - IPMI BMCs forget a one-time override after about 60 seconds; set it right before
    powering the host on (M(maas_lib.fleet.power)).
  - maas-lib cannot read the boot device back, so the task always reports
    C(changed=true).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.bmc
options:
  device:
    description:
      - V(pxe) network boot, V(disk) the first hard disk, V(cd) optical or virtual media,
        V(bios) firmware setup.
    type: str
    required: true
    choices: [pxe, disk, cd, bios]
  persistent:
    description: Boot from O(device) on every boot, not only the next one.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reads the power state (so the BMC and credential are checked) and sets nothing.
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
- name: Network-boot web01 once, then power-cycle it
  delegate_to: localhost
  block:
    - maas_lib.fleet.boot_device:
        name: web01
        device: pxe
    - maas_lib.fleet.power:
        name: web01
        state: cycle

- name: Always boot from disk
  maas_lib.fleet.boot_device:
    name: "{{ inventory_hostname }}"
    device: disk
    persistent: true
  delegate_to: localhost
"""

RETURN = r"""
host:
  description: The registered host name, or O(name) / O(bmc_address) for an inline BMC.
  returned: success and BMC failures
  type: str
  sample: web01
device:
  description: The boot device set (or, in check mode, that would be set).
  returned: success
  type: str
  sample: pxe
persistent:
  description: Whether the override applies to every boot.
  returned: success
  type: bool
  sample: false
power:
  description: The power state read in check mode.
  returned: success, in check mode
  type: str
  sample: "off"
via:
  description: The BMC path that answered, for example V(ipmi://10.20.1.7:623).
  returned: success and BMC failures
  type: str
protocol:
  description: The primary BMC protocol, V(ipmi) or V(redfish).
  returned: success
  type: str
credential:
  description: The credential name used (V(module-params) for O(username)/O(password)).
  returned: success
  type: str
credential_source:
  description: Where the credential came from (V(environment), a file, module parameters).
  returned: success
  type: str
registered:
  description: The host as registered in maas-lib (pool, rack, standing, BMC settings).
  returned: success, when O(name) names a registered host
  type: dict
elapsed_s:
  description: Seconds the task spent on the BMC.
  returned: success and BMC failures
  type: float
bmc_from:
  description: Where the host's BMC details came from, V(parameters), V(inventory) or V(database).
  returned: success and BMC failures, with O(name) or O(bmc_address)
  type: str
  sample: inventory
hosts:
  description:
    - With O(names), each host's result by host name - C(ok), C(changed), C(power),
      C(via), C(elapsed_s), C(bmc_from), and C(error_class) and C(error) when it failed.
    - C(device) and, in check mode, the C(power) read.
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
  sample: unsupported
error:
  description: What the BMC failure was.
  returned: failure
  type: str
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import run_module


def main() -> None:
    # The action plugin of the same name runs this task on the controller without a
    # module process; this runs it where the module is executed (see module_utils).
    run_module("boot_device")


if __name__ == "__main__":
    main()
