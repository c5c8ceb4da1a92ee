import os

import pytest

from maas_lib.credentials import env_names, resolve_credential
from maas_lib.errors import CredentialError

SECRET = "s3cr3t-P@ss"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("MAAS_CRED") or k == "MAAS_CREDENTIALS_FILE":
            monkeypatch.delenv(k)


def test_env_names_upper_case_and_dashes_become_underscores():
    assert env_names("rack-a") == ("MAAS_CRED_RACK_A_USERNAME", "MAAS_CRED_RACK_A_PASSWORD")


def test_resolves_from_environment(monkeypatch):
    monkeypatch.setenv("MAAS_CRED_RACK_A_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_RACK_A_PASSWORD", SECRET)
    cred = resolve_credential("rack-a")
    assert (cred.username, cred.password, cred.source) == ("admin", SECRET, "environment")
    assert SECRET not in repr(cred) and SECRET not in str(cred)


def test_half_set_environment_names_the_missing_variable(monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    with pytest.raises(CredentialError, match="MAAS_CRED_LAB_PASSWORD is not set"):
        resolve_credential("lab")


def test_resolves_from_owner_only_file(monkeypatch, write_file):
    path = write_file("creds.toml", f'[lab]\nusername = "root"\npassword = "{SECRET}"\n', 0o600)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", str(path))
    cred = resolve_credential("lab")
    assert (cred.username, cred.password) == ("root", SECRET)


def test_environment_wins_over_file(monkeypatch, write_file):
    path = write_file("creds.toml", '[lab]\nusername = "file"\npassword = "x"\n', 0o600)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "env")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "y")
    assert resolve_credential("lab").username == "env"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_file_readable_by_others_is_refused(monkeypatch, write_file, mode):
    path = write_file("creds.toml", f'[lab]\nusername = "root"\npassword = "{SECRET}"\n', mode)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", str(path))
    with pytest.raises(CredentialError, match="chmod 600") as exc:
        resolve_credential("lab")
    assert SECRET not in str(exc.value)


def test_malformed_file_error_does_not_echo_secrets(monkeypatch, write_file):
    path = write_file("creds.toml", f'[lab]\nusername = "root"\npassword = {SECRET}\n', 0o600)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", str(path))
    with pytest.raises(CredentialError, match="not valid TOML") as exc:
        resolve_credential("lab")
    assert SECRET not in str(exc.value)


def test_unknown_name_says_where_to_put_it(monkeypatch, write_file):
    with pytest.raises(CredentialError, match="MAAS_CRED_NOPE_USERNAME"):
        resolve_credential("nope")
    path = write_file("creds.toml", '[lab]\nusername = "a"\npassword = "b"\n', 0o600)
    monkeypatch.setenv("MAAS_CREDENTIALS_FILE", str(path))
    with pytest.raises(CredentialError, match=r"\[nope\] table in"):
        resolve_credential("nope")
