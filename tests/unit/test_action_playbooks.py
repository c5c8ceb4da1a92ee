"""Every action playbook runs exactly the native executor's steps: `steps_for(action)`, in
order, each as one `maas_lib.fleet.step` task named after its step (the Ansible executor
records a task's name as the step's name) with the occurrence it is (`nth`).

The playbooks are read as ansible-core reads them (`Playbook.load`, blocks compiled, the
module resolved through the collection loader), in one child process: the collection
loader is a process-wide import hook this test process must not keep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maas_lib.models import Action
from maas_lib.scheduler.steps import steps_for
from tests.conftest import patience

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "ansible_collections" / "maas_lib" / "fleet" / "playbooks"
STEP_MODULE = "maas_lib.fleet.step"

#: Loads each playbook named on the command line; prints {path: [[name, action, args, tags]]},
#: one entry per task after blocks are compiled (implicit `meta` tasks included).
_LOAD = """
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.playbook import Playbook
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
from ansible.vars.manager import VariableManager

_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
loader = DataLoader()
found = {}

def leaves(items):
    for item in items:
        if hasattr(item, "block"):
            yield from leaves(item.block + item.rescue + item.always)
        else:
            yield item

for path in sys.argv[2:]:
    book = Playbook.load(path, variable_manager=VariableManager(loader=loader), loader=loader)
    found[path] = [
        [task.name, task.action, dict(task.args), sorted(task.tags)]
        for play in book.get_plays()
        for task in leaves(play.compile())
    ]
print(json.dumps(found))
"""


def load_tasks(paths: list[Path]) -> dict[str, list[list]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD, str(REPO), *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=patience(120),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def playbook_steps(tasks: list[list]) -> list[tuple[str, str, int]]:
    """(task name, step, nth) of each step task; any task that is not a step fails."""
    steps = []
    for name, action, args, _tags in tasks:
        if action == "meta" and not name:
            continue  # ansible's implicit flush_handlers
        assert action == STEP_MODULE, f"task {name!r} runs {action}, not {STEP_MODULE}"
        steps.append((name, args["step"], int(args.get("nth", 1))))
    return steps


def native_steps(action: Action) -> list[tuple[str, str, int]]:
    seen: dict[str, int] = {}
    out = []
    for step in steps_for(action):
        seen[step.name] = seen.get(step.name, 0) + 1
        out.append((step.name, step.name, seen[step.name]))
    return out


def playbook_path(action: Action) -> Path:
    return PLAYBOOKS / f"{str(action).replace('-', '_')}.yml"


@pytest.fixture(scope="module")
def drifted(tmp_path_factory) -> Path:
    """power_cycle.yml with its power-off and power-on swapped."""
    data = yaml.safe_load(playbook_path(Action.POWER_CYCLE).read_text())
    block = data[0]["tasks"][0]["block"]
    block[1], block[2] = block[2], block[1]
    path = tmp_path_factory.mktemp("drift") / "power_cycle.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def loaded(drifted) -> dict[str, list[list]]:
    return load_tasks([*(playbook_path(a) for a in Action), drifted])


def test_there_is_one_action_playbook_per_action_and_no_other():
    assert sorted(PLAYBOOKS.glob("*.yml")) == sorted(playbook_path(a) for a in Action)


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_the_action_playbook_runs_the_native_steps_in_order(loaded, action):
    assert playbook_steps(loaded[str(playbook_path(action))]) == native_steps(action)


def test_a_playbook_whose_steps_drift_from_the_native_list_is_caught(loaded, drifted):
    steps = playbook_steps(loaded[str(drifted)])
    assert sorted(steps) == sorted(native_steps(Action.POWER_CYCLE))
    assert steps != native_steps(Action.POWER_CYCLE)


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_steps_decided_before_the_run_are_tagged_with_their_name(loaded, action):
    """The Ansible executor leaves out (--skip-tags) a step whose condition holds for no
    host of the run (`Step.static`): its task must carry the step's name as a tag."""
    static = {s.name for s in steps_for(action) if s.static}
    tagged = {
        args["step"]: tags
        for name, module, args, tags in loaded[str(playbook_path(action))]
        if module == STEP_MODULE and tags
    }
    assert tagged == {name: [name] for name in static}
