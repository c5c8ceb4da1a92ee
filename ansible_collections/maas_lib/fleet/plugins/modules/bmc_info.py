# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: bmc_info
short_description: Read one host's power state from its BMC (IPMI or Redfish)
version_added: 0.1.0
description:
  - Asks a host's BMC for its power state and reports which BMC path answered (a host with
    a fallback path is tried over it when the primary is unreachable).
  - Fails with the failure class when the BMC cannot be read (V(unreachable), V(auth), ...);
    use C(failed_when) or C(ignore_errors) to survey hosts without failing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.bmc
attributes:
  check_mode:
    support: full
    details: Reads only; behaves the same in check mode.
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
- name: Read every host's power state
  maas_lib.fleet.bmc_info:
    name: "{{ inventory_hostname }}"
  delegate_to: localhost
  register: bmc

- name: Survey BMCs without failing on dead ones
  maas_lib.fleet.bmc_info:
    name: "{{ inventory_hostname }}"
    timeout: 3
  delegate_to: localhost
  register: bmc
  failed_when: false

- name: A Redfish BMC given by parameters
  maas_lib.fleet.bmc_info:
    bmc_address: https://gpu01-bmc.lab.example:8443
    bmc_system: /redfish/v1/Systems/1
    bmc_tls_ca: /etc/pki/bmc-ca.pem
    credential: redfish-lab
  delegate_to: localhost
"""

RETURN = r"""
host:
  description: The registered host name, or O(name) / O(bmc_address) for an inline BMC.
  returned: success and BMC failures
  type: str
  sample: web01
power:
  description:
    - The power state as the BMC reports it, V(on) or V(off); V(powering_on) or
      V(powering_off) during a transition; V(unknown) when the BMC gave no usable state
      (see RV(power_raw)). Unknown is never read as off.
  returned: success
  type: str
  sample: "on"
power_raw:
  description: What the BMC said when it was not a plain on or off (V(Paused), V(absent)).
  returned: when RV(power) is V(unknown) or a transition
  type: str
  sample: Paused
via:
  description: The BMC path that answered, for example V(ipmi://10.20.1.7:623).
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
  sample: {"host": "web01", "pool": "web", "rack": "r1", "status": "active",
           "bmc_address": "10.20.1.1", "bmc_protocol": "ipmi", "bmc_credential": "lab"}
elapsed_s:
  description: Seconds the task spent on the BMC.
  returned: success and BMC failures
  type: float
  sample: 0.21
bmc_from:
  description: Where the host's BMC details came from, V(parameters), V(inventory) or V(database).
  returned: success and BMC failures, with O(name) or O(bmc_address)
  type: str
  sample: inventory
hosts:
  description:
    - With O(names), each host's result by host name - C(ok), C(changed), C(power),
      C(via), C(elapsed_s), C(bmc_from), and C(error_class) and C(error) when it failed.
    - C(power_raw) when the BMC gave no plain on or off.
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
  sample: unreachable
error:
  description: What the BMC failure was.
  returned: failure
  type: str
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import run_module


def main() -> None:
    # The action plugin of the same name runs this task on the controller without a
    # module process; this runs it where the module is executed (see module_utils).
    run_module("bmc_info")


if __name__ == "__main__":
    main()
