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


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://user:s3cret@maas.example", "may not carry a user or password"),
        ("https://user:s3cret@maas.example", "may not carry a user or password"),
        ("http://maas.example:8443", "plain http:// only to a loopback address"),
        ("maas.example:8443", "is not an https:// URL"),
        ("https://maas.example:port", "not a valid URL"),
        ("https://maas.example/?token=x", "has a query or fragment"),
        (" , ", "no URL given"),
    ],
)
def test_a_bad_service_url_is_one_line_of_bad_input_without_its_secret(url, says):
    from maas_lib.errors import InputError
    from maas_lib.service.client import ApiSettings

    with pytest.raises(InputError, match=says) as err:
        ApiSettings.from_options(url, env={})
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_loopback_may_be_plain_http_and_several_urls_are_kept_in_order():
    from maas_lib.service.client import ApiSettings

    settings = ApiSettings.from_options("http://127.0.0.1:8080/, https://b.example:8443", env={})
    assert settings.urls == ("http://127.0.0.1:8080", "https://b.example:8443")
    secret = ApiSettings.from_options("https://a", env={"MAAS_API_TOKEN": "maas_s3cret"})
    assert secret.token == "maas_s3cret" and "s3cret" not in repr(secret)


def test_a_proxys_502_is_retried_for_a_read_but_not_for_a_cancel():
    """A gateway error (a fault of a proxy in front, which the service cannot produce)
    may come after the service acted: a read is sent again, a cancel is not."""
    import httpx

    from maas_lib.errors import MaasError
    from maas_lib.service.client import ApiFleet, ApiSettings

    seen: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1 or request.method == "POST":
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return httpx.Response(200, json=[])

    settings = ApiSettings.from_options("https://maas.example", env={}, deadline=5)
    with ApiFleet(settings, transport=httpx.MockTransport(gateway)) as fleet:
        assert fleet.requests() == []
        with pytest.raises(MaasError, match="may or may not have been done") as err:
            fleet.cancel(3)
    assert seen == [
        "GET /api/v1/requests",
        "GET /api/v1/requests",
        "POST /api/v1/requests/3/cancel",
    ]
    assert "<html>" not in str(err.value) and "HTTP 502 (text/plain)" in str(err.value)


def _event(kind: str, state: str | None = None) -> bytes:
    import json

    view = {"id": 1, "action": "reboot", "state": state, "host_count": 1, "counts": {}}
    data = json.dumps({"id": 1, "summary": view} if state else {"id": 1})
    return f": keep-alive\nevent: {kind}\ndata: {data}\n\n".encode()


def test_follow_reopens_a_stream_that_ended_early_and_refuses_a_garbled_event():
    """The progress stream as a proxy may cut it (the service ends one early only when
    stopping): the second stream takes over; a garbled event is one error line."""
    import httpx

    from maas_lib.errors import MaasError
    from maas_lib.service.client import ApiFleet, ApiSettings

    streams = [
        _event("progress", "accepted"),  # then cut, without `end`
        _event("progress", "running") + _event("progress", "cancelled") + _event("end"),
        b"event: progress\ndata: {not json\n\n",
    ]

    def stream(request: httpx.Request) -> httpx.Response:
        body = streams.pop(0)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    settings = ApiSettings.from_options("https://maas.example", env={}, deadline=5)
    with ApiFleet(settings, transport=httpx.MockTransport(stream)) as fleet:
        assert [v.state for v in fleet.follow(1)] == ["accepted", "running", "cancelled"]
        with pytest.raises(MaasError, match="garbled event"):
            list(fleet.follow(1))
    assert streams == []
