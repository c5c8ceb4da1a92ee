"""A playbook run's modules get credentials from their worker over a socket, and only
those of the run's hosts; a hook started from such a module cannot reach it."""

from __future__ import annotations

import pytest

from maas_lib.credentials import (
    SOCKET_ENV,
    Credential,
    database_url_from_worker,
    resolve_credential,
)
from maas_lib.errors import CredentialError
from maas_lib.scheduler.credential_broker import CredentialBroker
from maas_lib.scheduler.playbook import _child_env


def _lab(name: str) -> Credential:
    if name != "lab":
        raise CredentialError(f"credential {name}: set MAAS_CRED_X")
    return Credential(name="lab", username="admin", password="s3cret-pw", source="test")


def test_a_module_gets_its_runs_credentials_and_no_others(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "")  # blanked, as in a playbook child
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "")
    with CredentialBroker({"lab"}, tmp_path, resolve=_lab, database_url="sqlite:///x") as b:
        monkeypatch.setenv(SOCKET_ENV, b.address)
        cred = resolve_credential("lab")
        assert (cred.username, cred.password) == ("admin", "s3cret-pw")
        assert database_url_from_worker() == "sqlite:///x"
        with pytest.raises(CredentialError, match="not one this playbook run may use"):
            resolve_credential("other-rack")
    with pytest.raises(CredentialError, match="did not answer"):
        resolve_credential("lab")  # the run is over: nothing answers any more


def test_playbook_children_never_inherit_secrets_or_the_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "s3cret-pw")
    monkeypatch.setenv(SOCKET_ENV, "@maas-cred-abc")
    monkeypatch.setenv("MAAS_DB", "postgresql://maas:db-pw@db.example/maas")
    env = _child_env(tmp_path)
    assert env["MAAS_CRED_LAB_PASSWORD"] == "" and env[SOCKET_ENV] == "" and env["MAAS_DB"] == ""
