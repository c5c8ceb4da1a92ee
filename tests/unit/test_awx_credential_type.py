"""The AWX credential type (awx/credential_type_maas_api.yml) injects exactly what the
collection's request modules and inventory plugin read: its injectors, rendered as AWX
renders them, give an environment from which the modules find the service, the token
and the CA; its inputs are the modules' api_* options; the token is a secret there and
no_log in the modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from maas_lib.service.client import (
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    ENV_TOKEN,
    ENV_URL,
    ApiFleet,
    ApiSettings,
)
from tests.conftest import REPO
from tests.unit.test_collection_lists import PLUGINS, documentation

CREDENTIAL_TYPE = REPO / "awx/credential_type_maas_api.yml"


def definition() -> dict:
    return yaml.safe_load(CREDENTIAL_TYPE.read_text())


def inject(inputs: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment AWX gives a job for a credential with `inputs`: each `file`
    injector written to a file of its own (`tower.filename.<name>`), then the `env`
    templates rendered in a sandbox, as AWX does."""
    injectors = definition()["injectors"]
    jinja = ImmutableSandboxedEnvironment()
    values = {f["id"]: inputs.get(f["id"], "") for f in definition()["inputs"]["fields"]}
    filenames = {}
    for key, template in injectors.get("file", {}).items():
        name = key.removeprefix("template.")
        path = tmp_path / f"awx_{name}"
        path.write_text(jinja.from_string(template).render(**values))
        filenames[name] = str(path)
    context = {**values, "tower": {"filename": filenames}, "awx": {"filename": filenames}}
    return {k: jinja.from_string(v).render(**context) for k, v in injectors["env"].items()}


def test_the_injectors_name_exactly_the_variables_the_clients_read():
    from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import API_ARGS

    env = definition()["injectors"]["env"]
    assert set(env) == {ENV_URL, ENV_TOKEN, ENV_CA, ENV_CERT, ENV_KEY}
    # The inventory plugin documents the same variables for the same options.
    options = documentation(PLUGINS / "inventory/hosts.py")["options"]
    documented = {options[o]["env"][0]["name"] for o in API_ARGS}
    assert documented == set(env)


def test_the_inputs_are_the_modules_options_and_the_token_is_secret_everywhere():
    from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import API_ARGS

    fields = {f["id"]: f for f in definition()["inputs"]["fields"]}
    assert set(fields) == set(API_ARGS)
    assert fields["api_token"].get("secret") is True
    assert [k for k, f in fields.items() if f.get("secret")] == ["api_token", "api_client_key"]
    assert [k for k, spec in API_ARGS.items() if spec.get("no_log")] == ["api_token"]
    fragment = documentation(PLUGINS / "doc_fragments/common.py", "API")["options"]
    assert set(fragment) == set(API_ARGS)


def test_an_injected_environment_is_what_the_modules_use(tmp_path, monkeypatch):
    from ansible_collections.maas_lib.fleet.plugins.module_utils.maas import api_url
    from maas_lib.sim.pki import make_pki  # a real CA's PEM

    pki = make_pki(tmp_path / "pki", clients=("awx",))
    pem = pki["ca"].read_text()
    env = inject(
        {
            "api_url": "https://a.example:8443,https://b.example:8443",
            "api_token": "maas_x" * 5,
            "api_ca": pem,
            "api_client_cert": pki["client-awx"].read_text(),
            "api_client_key": pki["client-awx-key"].read_text(),
        },
        tmp_path,
    )
    for key in (ENV_URL, ENV_TOKEN, ENV_CA, ENV_CERT, ENV_KEY):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A task with no api_* options and no db: the service from the credential.
    task = {"api_url": None, "api_token": None, "api_ca": None, "db": None}
    assert api_url(task) == "https://a.example:8443,https://b.example:8443"
    settings = ApiSettings.from_options(api_url(task), env=dict(os.environ))
    assert settings.urls == ("https://a.example:8443", "https://b.example:8443")
    assert settings.token == "maas_x" * 5
    assert settings.ca is not None and Path(settings.ca).read_text() == pem
    assert Path(settings.cert or "").read_text() == pki["client-awx"].read_text()
    assert Path(settings.key or "").read_text() == pki["client-awx-key"].read_text()
    # The same files make a TLS context: a client certificate and its key that match.
    ApiFleet(settings).close()
    # A task naming a database keeps to it, credential or not.
    assert api_url({**task, "db": "/var/lib/maas.db"}) is None


def test_a_credential_without_a_ca_means_the_systems_cas(tmp_path):
    env = inject({"api_url": "https://maas.example", "api_token": "maas_abc"}, tmp_path)
    assert env[ENV_CA] == env[ENV_CERT] == env[ENV_KEY] == ""
    settings = ApiSettings.from_options(None, env=env)
    assert settings.ca is None and settings.cert is None and settings.token == "maas_abc"


@pytest.mark.parametrize("bad", ["maas_a b", "maas_\x00", "ma\nas"])
def test_a_garbled_token_is_refused_without_being_shown(bad):
    from maas_lib.errors import InputError

    with pytest.raises(InputError) as err:
        ApiSettings.from_options("https://maas.example", env={ENV_TOKEN: bad})
    assert bad.strip() not in str(err.value) and "not a valid token" in str(err.value)
