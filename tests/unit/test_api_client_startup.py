"""What `maasctl --api` and the collection's modules load to reach the service: the
client imports httpx without trio (httpcore would import it, ~0.2 s, for async calls
under trio that this synchronous client never makes), and trio stays importable."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import patience


def test_the_client_loads_without_trio_which_stays_importable():
    if importlib.util.find_spec("trio") is None:
        pytest.skip("trio is not installed: nothing to keep out")
    code = (
        "import sys, maas_lib.service.client\n"
        "print('trio' in sys.modules)\n"
        "import trio\n"
        "print(trio.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=patience(60)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "trio"]
