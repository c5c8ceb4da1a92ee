# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: request_info
short_description: Read a maas-lib request's state and per-host results, or list requests
version_added: 0.1.0
description:
  - With O(id), returns the request (state, policy, every host's state, reason, error class
    and batch) and a summary (progress per batch, failures by class, slowest hosts);
    O(steps=true) adds every recorded step.
  - Without O(id), lists requests newest first.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.API
options:
  id:
    description: The request id (from M(maas_lib.fleet.submit)).
    type: int
  steps:
    description: With O(id), also return the request's steps (oldest first).
    type: bool
    default: false
  host:
    description: With O(id), return only this host's steps (implies O(steps=true)).
    type: str
  state:
    description: Without O(id), only requests in these states.
    type: list
    elements: str
    choices: [accepted, running, succeeded, failed, partial, cancelled]
  limit:
    description: Without O(id), at most this many requests.
    type: int
    default: 20
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
  - module: maas_lib.fleet.submit
  - module: maas_lib.fleet.cancel
"""

EXAMPLES = r"""
- name: Where is request 7?
  maas_lib.fleet.request_info:
    id: 7
  register: req

- name: Poll until it ends (or use submit's wait)
  maas_lib.fleet.request_info:
    id: "{{ req_id }}"
  register: req
  until: req.state in ['succeeded', 'failed', 'partial', 'cancelled']
  retries: 120
  delay: 10

- name: Requests still in flight
  maas_lib.fleet.request_info:
    state: [accepted, running]
  register: inflight
"""

RETURN = r"""
id:
  description: The request id.
  returned: with O(id)
  type: int
  sample: 7
state:
  description: The request's state.
  returned: with O(id)
  type: str
  sample: running
request:
  description:
    - The request - C(action), C(state), C(policy), C(patterns), C(submitted_by),
      C(created), C(started), C(finished), C(reason), C(counts) by host state,
      C(cancel_requested), and C(hosts) (each with C(host), C(state), C(reason),
      C(error_class), C(batch), C(holder)).
  returned: with O(id)
  type: dict
summary:
  description: C(batches) with counts, C(failures) by error class, C(slowest) hosts, C(waiting).
  returned: with O(id)
  type: dict
steps:
  description: The request's steps (host, step, attempt, start, end, outcome, via, error class).
  returned: with O(id) and O(steps=true)
  type: list
  elements: dict
requests:
  description: Requests newest first (id, action, state, submitted_by, host_count, counts, ...).
  returned: without O(id)
  type: list
  elements: dict
"""

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import (
    API_ARGS,
    DB_ARGS,
    REQUEST_STATES,
    new_module,
    plain,
    run,
    service_or_db,
)


def main() -> None:
    module = new_module(
        {
            "id": {"type": "int"},
            "steps": {"type": "bool", "default": False},
            "host": {"type": "str"},
            "state": {"type": "list", "elements": "str", "choices": REQUEST_STATES},
            "limit": {"type": "int", "default": 20},
            **DB_ARGS,
            **API_ARGS,
        },
        supports_check_mode=True,
        mutually_exclusive=[("id", "state")],
        required_by={"host": "id"},
    )
    p = module.params

    def info() -> dict:
        with service_or_db(p) as f:
            if p["id"] is None:
                return {"changed": False, "requests": plain(f.requests(p["state"], p["limit"]))}
            # The document `maasctl status ID --json` prints, in the module's shape.
            request = f.request_info(p["id"], steps=p["steps"], host=p["host"])
            summary, steps = request.pop("summary"), request.pop("steps", None)
            result = {
                "changed": False,
                "id": request["id"],
                "state": request["state"],
                "request": request,
                "summary": summary,
            }
            if steps is not None:
                result["steps"] = steps
            return result

    run(module, info)


if __name__ == "__main__":
    main()
