# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cancel
short_description: Cancel a maas-lib request
version_added: 0.1.0
description:
  - An accepted request is cancelled at once (its hosts become V(cancelled)); a running one
    starts no new host and the steps in flight end.
  - Idempotent - a request that has already ended, or whose cancel was already asked for,
    is left alone (C(changed=false)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.API
options:
  id:
    description: The request id.
    type: int
    required: true
  cancelled_by:
    description:
      - Who cancels, recorded with the request (default the OS user).
      - Not with O(api_url) - the service records the token's principal.
    type: str
attributes:
  check_mode:
    support: full
    details: Reads the request and reports whether it would be cancelled; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - maas-lib maintainers (!UNKNOWN)
seealso:
  - module: maas_lib.fleet.submit
  - module: maas_lib.fleet.request_info
"""

EXAMPLES = r"""
- name: Cancel the rollout
  maas_lib.fleet.cancel:
    id: "{{ req.id }}"
    cancelled_by: deploy-bot
"""

RETURN = r"""
id:
  description: The request id.
  returned: success
  type: int
  sample: 7
state:
  description:
    - The request's state afterwards - V(cancelled) for a request that had not started,
      V(running) while a running one winds down, or the state it had already ended in.
  returned: success
  type: str
  sample: cancelled
cancel_requested:
  description: Whether a cancel has been asked for (by this task or before).
  returned: success
  type: bool
  sample: true
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import (
    API_ARGS,
    DB_ARGS,
    ENDED_STATES,
    InputError,
    api_url,
    new_module,
    run,
    service_or_db,
)


def main() -> None:
    module = new_module(
        {
            "id": {"type": "int", "required": True},
            "cancelled_by": {"type": "str"},
            **DB_ARGS,
            **API_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params

    def cancel() -> dict:
        if p["cancelled_by"] is not None and api_url(p):
            raise InputError(
                "cancelled_by is not available with api_url "
                "(the service records the token's principal)"
            )
        with service_or_db(p) as f:
            before = f.status(p["id"])
            if before.state in ENDED_STATES or before.cancel_requested:
                changed = False
            elif module.check_mode:
                return {
                    "changed": True,
                    "id": before.id,
                    "state": str(before.state),
                    "cancel_requested": False,
                }
            else:
                try:
                    f.cancel(p["id"], actor=p["cancelled_by"])
                    changed = True
                except InputError:
                    # It ended between the read and the cancel: nothing left to cancel.
                    if f.status(p["id"]).state not in ENDED_STATES:
                        raise
                    changed = False
            after = f.status(p["id"])
        return {
            "changed": changed,
            "id": after.id,
            "state": str(after.state),
            "cancel_requested": after.cancel_requested,
        }

    run(module, cancel)


if __name__ == "__main__":
    main()
