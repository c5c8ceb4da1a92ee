"""The client of the service without a server: what it loads (`maasctl --api` and the
collection's modules pay for it on every run: httpx without trio, which httpcore would
import, ~0.2 s, for async calls under trio that this synchronous client never makes),
and what it makes of a redirect (a fault of a proxy in front: the service never
redirects)."""

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


def test_a_redirect_is_not_followed_nor_shown_as_success():
    """A proxy or load balancer in front of the service that redirects (the service
    itself never does): the token goes to the URLs named only, so the redirect is an
    error naming the status, not a second request elsewhere."""
    import httpx

    from maas_lib.errors import MaasError
    from maas_lib.service.client import ApiFleet, ApiSettings

    seen: list[str] = []

    def redirecting(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"Location": "https://elsewhere.example/steal"})

    settings = ApiSettings.from_options("https://maas.example", env={"MAAS_API_TOKEN": "maas_t"})
    fleet = ApiFleet(settings, transport=httpx.MockTransport(redirecting))
    with fleet, pytest.raises(MaasError, match=r"HTTP 307 \(a redirect\)"):
        fleet.requests()
    assert seen == ["https://maas.example/api/v1/requests"]
