# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: submit
short_description: Submit a batched lifecycle request to the maas-lib job queue
version_added: 0.1.0
description:
  - Submits one action over a set of registered hosts (names and shell-style globs) with a
    batch policy; the request is accepted at once and answered with an id. A scheduler
    (C(maasctl run)) carries it out later, batch by batch, within disruption budgets.
  - With O(wait=true), waits until the request ends and returns every host's result; the
    task fails unless every host succeeded (like C(maasctl submit --wait)).
  - Submitting is never idempotent - every run adds a request (C(changed=true)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - maas_lib.fleet.common
  - maas_lib.fleet.common.API
options:
  action:
    description: What to do to each host.
    type: str
    required: true
    choices: [power-on, power-off, power-cycle, reboot, reimage, wipe, decommission]
  hosts:
    description:
      - Registered host names and shell-style globs (V(web*), V(n00[0-4]*)), in order.
      - Every name must be a registered active host and every glob must match one.
    type: list
    elements: str
    required: true
  image:
    description: The image to install; required for V(reimage), allowed for V(wipe).
    type: str
  batch_size:
    description: Hosts per batch, V(N) or V(N%) (maas-lib default V(10%)).
    type: raw
  max_failures:
    description:
      - Failed hosts tolerated, V(N) or V(N%) (maas-lib default V(5%)); once failures are
        greater, no further batch starts.
    type: raw
  max_unavailable:
    description:
      - Cap on each pool's hosts down at once, counted across all in-flight requests
        (V(N) or V(N%)); pools' standing budgets apply either way.
    type: raw
  canary:
    description: Hosts in a first, canary batch; a failed canary stops the request.
    type: int
  pause:
    description: Seconds to wait between batches.
    type: float
  on_overlap:
    description:
      - A host an older in-flight request also names is V(drop)ped (naming the holder) or
        V(wait)s for it.
    type: str
    choices: [drop, wait]
  submitted_by:
    description:
      - Who submits, recorded with the request (default the OS user).
      - Not with O(api_url) - the service records the token's principal.
    type: str
  pre_hook:
    description:
      - A playbook run for each host before its action (path on the controller).
      - Not with O(api_url) - the service runs no playbook a caller names.
    type: path
  post_hook:
    description:
      - A playbook run for each host after its action (path on the controller).
      - Not with O(api_url).
    type: path
  wait:
    description:
      - Wait for the request to end and return the per-host results.
      - A scheduler must be running against the same database.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true), more than 0 and at most 86400; the task fails if
        the request has not ended by then (the request keeps going).
    type: float
    default: 3600
attributes:
  check_mode:
    support: full
    details:
      - A dry run - validates everything and returns the plan (batches, dropped and waiting
        overlaps, pool budgets) as if the request started now; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - maas-lib maintainers (!UNKNOWN)
seealso:
  - module: maas_lib.fleet.request_info
  - module: maas_lib.fleet.cancel
"""

EXAMPLES = r"""
- name: Rolling reimage of the web pool, a quarter at a time, after a canary
  maas_lib.fleet.submit:
    action: reimage
    hosts: ["web*"]
    image: ubuntu-24.04
    batch_size: 25%
    canary: 1
    max_failures: 1
    max_unavailable: 2
    submitted_by: deploy-bot
  register: req

- name: What would a reboot of rack 7 do now?
  maas_lib.fleet.submit:
    action: reboot
    hosts: ["rack7-*"]
  check_mode: true
  register: plan

- name: Power-cycle two hosts and wait for the results
  maas_lib.fleet.submit:
    action: power-cycle
    hosts: [db01, db02]
    batch_size: 1
    wait: true
    wait_timeout: 900
  register: done
"""

RETURN = r"""
id:
  description: The request id.
  returned: success, not in check mode; also on a failed wait
  type: int
  sample: 7
state:
  description:
    - The request's state - V(accepted) right after submitting; with O(wait), the end
      state (V(succeeded), V(failed), V(partial), V(cancelled)).
  returned: success, not in check mode
  type: str
  sample: accepted
hosts:
  description: How many hosts the request covers.
  returned: success
  type: int
  sample: 8
plan:
  description:
    - In check mode, what the request would do if it started now - C(batches) (each with
      C(hosts), C(canary), C(budget_waits)), C(dropped) and C(waiting) overlaps,
      C(pool_limits), C(pool_down_now), the validated C(policy).
  returned: check mode
  type: dict
  sample: {"dry_run": true, "action": "reboot", "hosts": 2, "dropped": {}, "waiting": {},
           "batches": [{"batch": 0, "canary": false, "hosts": ["db01"], "budget_waits": []}]}
request:
  description:
    - With O(wait), the request at a glance - C(counts) by host state, C(batches),
      C(failures) by error class, C(slowest) hosts.
  returned: with O(wait)
  type: dict
results:
  description: With O(wait), every host's C(state), C(reason), C(error_class) and C(batch).
  returned: with O(wait)
  type: list
  elements: dict
  sample: [{"host": "db01", "state": "succeeded", "reason": null, "error_class": null,
            "batch": 0, "holder": null}]
"""

import re

from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import (
    ACTIONS,
    API_ARGS,
    DB_ARGS,
    Failure,
    InputError,
    new_module,
    plain,
    run,
    service_or_db,
)

POLICY = ("batch_size", "max_failures", "max_unavailable", "canary", "pause", "on_overlap")
#: maas-lib names options as the CLI spells them; say them as this module does.
_OPTION_RE = re.compile(r"--([a-z][a-z-]*)")
_OPTION_NAMES = {"as": "submitted_by", "api": "api_url"}


def module_words(exc: InputError) -> InputError:
    """`--batch-size: ...` -> `batch_size: ...`."""
    text = _OPTION_RE.sub(
        lambda m: _OPTION_NAMES.get(m.group(1), m.group(1).replace("-", "_")), str(exc)
    )
    return InputError(text)


def main() -> None:
    module = new_module(
        {
            "action": {"type": "str", "required": True, "choices": ACTIONS},
            "hosts": {"type": "list", "elements": "str", "required": True},
            "image": {"type": "str"},
            "batch_size": {"type": "raw"},
            "max_failures": {"type": "raw"},
            "max_unavailable": {"type": "raw"},
            "canary": {"type": "int"},
            "pause": {"type": "float"},
            "on_overlap": {"type": "str", "choices": ["drop", "wait"]},
            "submitted_by": {"type": "str"},
            "pre_hook": {"type": "path"},
            "post_hook": {"type": "path"},
            "wait": {"type": "bool", "default": False},
            "wait_timeout": {"type": "float", "default": 3600.0},
            **DB_ARGS,
            **API_ARGS,
        },
        supports_check_mode=True,
    )
    p = module.params

    def submit() -> dict:
        from maas_lib.validation import wait_seconds

        request = {
            "image": p["image"],
            "submitted_by": p["submitted_by"],
            **{k: p[k] for k in (*POLICY, "pre_hook", "post_hook") if p[k] is not None},
        }
        with service_or_db(p) as f:
            try:
                if p["wait"]:
                    wait_seconds(p["wait_timeout"], "wait_timeout")  # before anything is written
                if module.check_mode:
                    plan = f.plan(p["action"], p["hosts"], **request)
                    return {"changed": True, "hosts": plan["hosts"], "plan": plan}
                accepted = f.submit(p["action"], p["hosts"], **request)
            except InputError as exc:
                raise module_words(exc) from None
            result = {"changed": True, **plain(accepted)}
            if not p["wait"]:
                return result
            view = f.wait(accepted.id, timeout=p["wait_timeout"])
            status = f.status(accepted.id)
        result |= {
            "state": view.state,
            "request": plain(view),
            "results": [plain(h) for h in status.hosts],
        }
        if not view.ended:
            raise Failure(
                f"request {accepted.id} is still {view.state} after {p['wait_timeout']:g}s "
                "(is a scheduler - maasctl run - working on this database?)",
                **result,
            )
        if not view.all_succeeded:
            bad = [h for h in status.hosts if h.state != "succeeded"]
            classes = ", ".join(f"{g.error_class}: {len(g.hosts)}" for g in view.failures)
            raise Failure(
                f"request {accepted.id} ended {view.state}: {len(bad)} of {view.host_count} "
                "hosts did not succeed" + (f" ({classes})" if classes else ""),
                **result,
            )
        return result

    run(module, submit)


if __name__ == "__main__":
    main()
