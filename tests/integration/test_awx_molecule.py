"""AWX and molecule for the maas_lib.fleet collection.

* `awx/execution-environment.yml` turns into a build context with `ansible-builder create`
  (offline: no image is built, nothing is pulled);
* the `awx/credential_type.yml` injector writes a credentials file maas-lib resolves;
* the collection's molecule scenario `power_state` runs the role against the fleet simulator
  (its own, started by the scenario's create.yml) and checks idempotence.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, patience
from tests.simfleet import free_udp_base

BIN = Path(sys.executable).parent
COLLECTION = REPO / "ansible_collections" / "maas_lib" / "fleet"
AWX = REPO / "awx"


def tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment (pip install {name})")
    return path


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "ANSIBLE_"))}
    return env | {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
    }


def tail(proc: subprocess.CompletedProcess, chars: int = 8000) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-chars:]}\n--- stderr\n{proc.stderr}"


def test_execution_environment_creates_a_build_context_offline(tmp_path):
    builder = tool("ansible-builder")
    context = tmp_path / "context"
    r = subprocess.run(
        [
            builder,
            "create",
            "-f",
            AWX / "execution-environment.yml",
            "-c",
            context,
            "--output-filename",
            "Containerfile",
        ],
        capture_output=True,
        text=True,
        timeout=patience(120),
        env=clean_env(tmp_path),
    )
    assert r.returncode == 0, tail(r)
    containerfile = (context / "Containerfile").read_text()
    build = context / "_build"
    # The collection, installed from its directory in the galaxy stage.
    assert yaml.safe_load((build / "requirements.yml").read_text()) == {
        "collections": [{"name": "/build/maas_lib_fleet", "type": "dir"}]
    }
    galaxy = yaml.safe_load((build / "maas_lib_fleet" / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("maas_lib", "fleet")
    assert (build / "maas_lib_fleet/plugins/modules/power.py").is_file()
    assert (build / "maas_lib_fleet/roles/power_state/tasks/main.yml").is_file()
    assert "ansible-galaxy collection install" in containerfile
    # maas-lib, pip-installed from its source in the final stage.
    assert (build / "maas-lib/pyproject.toml").is_file()
    assert (build / "maas-lib/README.md").is_file()
    assert (build / "maas-lib/maas_lib/__init__.py").is_file()
    assert "pip install --no-cache-dir /tmp/maas-lib" in containerfile
    assert containerfile.index("/tmp/maas-lib") < containerfile.index("USER 1000")
    assert "ansible-core>=2.17" in containerfile


def test_credential_type_injects_a_credentials_file_maas_lib_resolves(tmp_path, monkeypatch):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from maas_lib.credentials import resolve_credential

    (ctype,) = yaml.safe_load((AWX / "credential_type.yml").read_text())["credential_types"]
    fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
    assert set(fields) == {"credential_name", "username", "password"}
    assert fields["password"].get("secret") is True
    assert set(ctype["inputs"]["required"]) == set(fields)
    inputs = {"credential_name": "rack-a", "username": 'ad"min', "password": "p\"w\\x<y>&'#"}
    # As AWX renders injectors: a sandboxed Jinja environment, the file written mode 0600.
    jinja = ImmutableSandboxedEnvironment()
    (label,) = ctype["injectors"]["file"]
    path = tmp_path / "credentials"
    path.write_text(jinja.from_string(ctype["injectors"]["file"][label]).render(**inputs))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    key = label.removeprefix("template.")
    tower = {"filename": {key: str(path)}}
    env = {
        name: jinja.from_string(value).render(**inputs, tower=tower)
        for name, value in ctype["injectors"]["env"].items()
    }
    assert env == {"MAAS_CREDENTIALS_FILE": str(path), "MAAS_BMC_CREDENTIAL": "rack-a"}
    for name in ("MAAS_CRED_RACK_A_USERNAME", "MAAS_CRED_RACK_A_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", env["MAAS_CREDENTIALS_FILE"])
    cred = resolve_credential("rack-a")
    assert (cred.username, cred.password) == (inputs["username"], inputs["password"])
    assert "extra_vars" not in ctype["injectors"]  # secrets never become job variables


@pytest.mark.slow
def test_molecule_power_state_scenario_converges_idempotently(tmp_path):
    tool("molecule")
    env = clean_env(tmp_path) | {"MOLECULE_SIM_IPMI_PORT": str(free_udp_base(2, 24000))}
    r = subprocess.run(
        [BIN / "molecule", "test", "-s", "power_state"],
        cwd=COLLECTION,
        capture_output=True,
        text=True,
        timeout=patience(180),
        env=env,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, tail(r)
    for step in ("create", "prepare", "converge", "idempotence", "verify", "destroy"):
        assert f"{step}: Executed: Successful" in out, step
    # The converge powered both hosts on; the idempotence run changed nothing.
    assert "1 scenario (1 successful)" in out, tail(r)
    # Nothing left behind in the collection (it is what ansible-galaxy builds).
    leftovers = {p.name for p in COLLECTION.iterdir()} - {
        "README.md",
        "changelogs",
        "docs",
        "extensions",
        "galaxy.yml",
        "meta",
        "playbooks",
        "plugins",
        "roles",
        "ruff.toml",
        "tests",
    }
    assert not leftovers, leftovers
