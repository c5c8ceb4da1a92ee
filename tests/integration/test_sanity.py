"""`ansible-test sanity` for the maas_lib.fleet collection, with the local Python (no containers).

ansible-test runs from a copy of the collection (a path ending in
ansible_collections/maas_lib/fleet) so its tests/output never lands in the repository. It
installs each sanity test's requirements into virtual environments cached under
~/.ansible/test/venv: the first run downloads them from PyPI (a few minutes), later runs take
about 30 seconds. Findings that are by design are in the collection's
tests/sanity/ignore-2.19.txt, each with its reason.

ansible-test bootstraps pip into those environments with a get-pip.py script downloaded from
ci-files.testing.ansible.com; where that host cannot be reached, the script is replaced by
one that runs a copy of the pip this Python already has (which then installs the pinned pip
from the package index as usual). The test is skipped, saying why, if ansible-test is missing
or its requirements cannot be installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, patience

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ANSIBLE_TEST = BIN / "ansible-test"
COLLECTION = REPO / "ansible_collections" / "maas_lib" / "fleet"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: Every sanity test ansible-test 2.19 has for a collection; all of them pass (pslint and
#: shellcheck find no PowerShell or shell files, so they have nothing to check).
TESTS = (
    "action-plugin-docs",
    "ansible-doc",
    "changelog",
    "compile",
    "empty-init",
    "ignores",
    "import",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "pep8",
    "pslint",
    "pylint",
    "replace-urlopen",
    "runtime-metadata",
    "shebang",
    "shellcheck",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
    "validate-modules",
    "yamllint",
)
BOOTSTRAP = re.compile(r"The bootstrap script can be manually downloaded and saved to: (\S+)")
GET_PIP = '''"""Offline stand-in for get-pip.py, written by maas-lib's test_sanity.py: runs
`pip install` from a copy of an existing pip package."""
import os, runpy, shutil, sys, tempfile
directory = tempfile.mkdtemp()
shutil.copytree({pip!r}, os.path.join(directory, "pip"))
sys.path.insert(0, directory)
sys.argv = ["pip", "install"] + [
    arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")
]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
'''


def write_get_pip(path: Path) -> None:
    """Write the offline get-pip.py stand-in where ansible-test looks for its cached one."""
    try:
        import pip
    except ImportError:
        pytest.skip("ansible-test cannot download get-pip.py and this Python has no pip")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GET_PIP.format(pip=str(Path(pip.__file__).parent)))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """A copy of the collection at a path ansible-test accepts."""
    if not ANSIBLE_TEST.exists():
        pytest.skip(f"ansible-test is not installed next to {sys.executable}")
    target = tmp_path_factory.mktemp("sanity") / "ansible_collections" / "maas_lib" / "fleet"
    shutil.copytree(
        COLLECTION, target, ignore=shutil.ignore_patterns("output", "__pycache__", ".ruff_cache")
    )
    return target


def sanity(collection: Path) -> subprocess.CompletedProcess:
    tests = [arg for name in TESTS for arg in ("--test", name)]
    return subprocess.run(
        [str(ANSIBLE_TEST), "sanity", "--local", "--python", PYTHON, "--color", "no", *tests],
        cwd=collection,
        env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=patience(900),
    )


def test_ansible_test_sanity(collection: Path):
    result = sanity(collection)
    output = result.stdout + result.stderr
    if result.returncode and (missing := BOOTSTRAP.search(output)):
        write_get_pip(Path(missing.group(1)))
        result = sanity(collection)
        output = result.stdout + result.stderr
    judged = "sanity test(s) listed below" in output
    started = "Running sanity test" in output  # a crash of a test that ran is a failure
    if result.returncode and not judged and not started and "Installing requirements" in output:
        # ansible-test stopped before judging the collection: its requirements are missing.
        tail = "\n".join(output.splitlines()[-5:])
        pytest.skip(f"ansible-test sanity could not install its requirements:\n{tail}")
    assert result.returncode == 0, output
    for name in TESTS:
        assert f'Running sanity test "{name}"' in output, output
