"""Webhook alerts against real HTTP receivers on loopback (no mocks)."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from maas_lib.errors import InputError
from maas_lib.models import RequestStatus
from maas_lib.telemetry.alerts import (
    AlertSender,
    AlertSettings,
    redact_url,
    request_event,
    settings_from_env,
)

#: Retries fast enough for tests: 0.05, 0.1, 0.2 s.
FAST = {"backoff": 0.05, "timeout": 2.0}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; loopback receivers must be reached directly."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers with `script` in turn (the last one repeats)."""

    script: list[int]
    release: threading.Event | None = None  # if set, each answer waits for it
    hits: list[Hit] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, hit: Hit) -> int:
        with self.cond:
            self.hits.append(hit)
            self.cond.notify_all()
            n = len(self.hits)
        return self.script[min(n, len(self.script)) - 1]

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.hits) >= n, timeout)


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[ThreadingHTTPServer, threading.Thread, Receiver]] = []

    def start(*script: int, release: threading.Event | None = None) -> Receiver:
        rcv = Receiver(list(script) or [200], release)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = rcv.record(Hit(self.path, dict(self.headers.items()), body))
                if rcv.release is not None:
                    rcv.release.wait(10)
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        rcv.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread, rcv))
        return rcv

    yield start
    for server, thread, rcv in servers:
        if rcv.release is not None:
            rcv.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that completes the TCP handshake (listen backlog) but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def sender_for() -> Iterator[Callable[..., AlertSender]]:
    senders: list[AlertSender] = []

    def make(urls: list[str], **kw: Any) -> AlertSender:
        sender = AlertSender(AlertSettings(urls=urls, **{**FAST, **kw}))
        senders.append(sender)
        return sender

    yield make
    for s in senders:
        s.close(timeout=2)


def status(n_failed: int = 2, state: str = "failed") -> RequestStatus:
    hosts = [
        {
            "host": f"web{i:02d}",
            "state": "failed",
            "error_class": "unreachable" if i % 2 else None,
            "reason": f"BMC at 10.0.0.{i} did not answer",
        }
        for i in range(n_failed)
    ]
    hosts += [{"host": "db01", "state": "succeeded"}, {"host": "db02", "state": "dropped"}]
    return RequestStatus(
        id=42,
        action="power-cycle",
        state=state,
        submitted_by="alice",
        created="2024-01-01T00:00:00.000000Z",
        updated="2024-01-01T00:01:00.000000Z",
        image=None,
        host_count=len(hosts),
        counts={"failed": n_failed, "succeeded": 1, "dropped": 1},
        os_user="alice",
        policy={},
        patterns=["web*", "db*"],
        reason="max failures exceeded",
        hosts=hosts,
    )


# --------------------------------------------------------------------------- delivery


def test_every_configured_webhook_gets_the_same_json(receiver: Callable[..., Receiver]):
    a, b = receiver(), receiver()
    settings = settings_from_env({"MAAS_ALERT_WEBHOOK": f"{a.url()}, {b.url()}"})
    assert settings is not None and settings.urls == [a.url(), b.url()]
    sender = AlertSender(settings.model_copy(update=FAST))
    event = request_event("request_failed", status())
    sender.send(event)
    assert a.wait_for(1) and b.wait_for(1)
    sender.close(timeout=2)

    assert a.hits[0].body == b.hits[0].body
    assert a.hits[0].json() == event
    for hit in (a.hits[0], b.hits[0]):
        assert hit.path == "/hook"
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["User-Agent"] == "maas-lib"
    assert (sender.sent, sender.failed, sender.dropped) == (2, 0, 0)


def test_5xx_is_retried_until_delivered(
    receiver: Callable[..., Receiver], sender_for: Callable[..., AlertSender]
):
    rcv = receiver(503, 503, 200)
    sender = sender_for([rcv.url()])
    sender.send({"event": "request_partial", "request_id": 1})
    assert rcv.wait_for(3)
    sender.close(timeout=2)
    assert len(rcv.hits) == 3
    assert {h.body for h in rcv.hits} == {rcv.hits[0].body}
    assert (sender.sent, sender.failed) == (1, 0)


@pytest.mark.parametrize("code", [400, 404, 302])
def test_4xx_and_redirects_are_not_retried(
    receiver: Callable[..., Receiver],
    sender_for: Callable[..., AlertSender],
    caplog: pytest.LogCaptureFixture,
    code: int,
):
    rcv = receiver(code, 200)
    sender = sender_for([rcv.url()])
    with caplog.at_level(logging.WARNING, "maas_lib.telemetry.alerts"):
        sender.send({"event": "request_failed"})
        sender.close(timeout=2)
    assert len(rcv.hits) == 1
    assert (sender.sent, sender.failed) == (0, 1)
    assert f"HTTP {code}" in caplog.text and "not retried" in caplog.text


def test_dead_webhook_does_not_delay_a_live_one(
    receiver: Callable[..., Receiver],
    sender_for: Callable[..., AlertSender],
    caplog: pytest.LogCaptureFixture,
):
    live = receiver()
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    sender = sender_for([dead, live.url()])

    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, "maas_lib.telemetry.alerts"):
        sender.send({"event": "request_failed", "request_id": 7})
        send_s = time.monotonic() - t0
        assert live.wait_for(1, timeout=2)
        live_s = time.monotonic() - t0
        t1 = time.monotonic()
        sender.close(timeout=5)
        close_s = time.monotonic() - t1

    assert send_s < 0.05, send_s
    assert live_s < 2, live_s
    assert close_s < 5, close_s
    assert live.hits[0].json() == {"event": "request_failed", "request_id": 7}
    assert (sender.sent, sender.failed, sender.dropped) == (1, 1, 0)
    assert "gave up after 4 attempt(s)" in caplog.text
    assert caplog.text.count("retrying in") == 3


def test_hung_webhook_does_not_delay_a_live_one_and_close_is_bounded(
    receiver: Callable[..., Receiver], sender_for: Callable[..., AlertSender], black_hole: int
):
    live = receiver()
    sender = sender_for([f"http://127.0.0.1:{black_hole}/hook", live.url()], timeout=3.0)
    t0 = time.monotonic()
    sender.send({"event": "request_failed", "n": 1})
    sender.send({"event": "request_failed", "n": 2})
    assert time.monotonic() - t0 < 0.05
    assert live.wait_for(2, timeout=2)
    assert [h.json()["n"] for h in live.hits] == [1, 2]

    t1 = time.monotonic()
    sender.close(timeout=0.5)  # the hung POST is in flight for 3 s; close must not wait
    assert time.monotonic() - t1 < 0.7
    assert sender.sent == 2
    assert sender.dropped == 1  # the second event never left the hung URL's queue


def test_queue_overflow_drops_the_oldest(
    receiver: Callable[..., Receiver],
    sender_for: Callable[..., AlertSender],
    caplog: pytest.LogCaptureFixture,
):
    gate = threading.Event()
    rcv = receiver(200, release=gate)
    sender = sender_for([rcv.url()], queue_size=2)
    sender.send({"n": 0})
    assert rcv.wait_for(1)  # n=0 is in flight, held by the receiver
    with caplog.at_level(logging.WARNING, "maas_lib.telemetry.alerts"):
        t0 = time.monotonic()
        for n in range(1, 5):
            sender.send({"n": n})
        assert time.monotonic() - t0 < 0.05
    gate.set()
    assert rcv.wait_for(3)
    sender.close(timeout=2)
    assert [h.json()["n"] for h in rcv.hits] == [0, 3, 4]
    assert (sender.sent, sender.dropped) == (3, 2)
    assert "queue full" in caplog.text


def test_userinfo_becomes_basic_auth(
    receiver: Callable[..., Receiver], sender_for: Callable[..., AlertSender]
):
    rcv = receiver()
    sender = sender_for([f"http://hook%40ops:pa%3Ass@127.0.0.1:{rcv.port}/hook?x=1"])
    sender.send({"event": "request_failed"})
    assert rcv.wait_for(1)
    sender.close(timeout=2)
    assert rcv.hits[0].path == "/hook?x=1"
    expected = base64.b64encode(b"hook@ops:pa:ss").decode()
    assert rcv.hits[0].headers["Authorization"] == f"Basic {expected}"


def test_send_never_raises_or_blocks(sender_for: Callable[..., AlertSender]):
    sender = sender_for([f"http://127.0.0.1:{closed_port()}/hook"], retries=0)
    sender.send({"event": "x", "bad": object()})  # default=str copes
    sender.send({"event": "x", "nan": float("nan")})  # not JSON: logged, dropped
    sender.send(None)  # type: ignore[arg-type]
    sender.close(timeout=2)
    sender.send({"event": "after close"})
    assert sender.failed == 1


# --------------------------------------------------------------------------- secrets


def test_logs_never_show_url_secrets(
    receiver: Callable[..., Receiver],
    sender_for: Callable[..., AlertSender],
    caplog: pytest.LogCaptureFixture,
):
    port = closed_port()
    rcv = receiver(400)
    sender = sender_for(
        [
            f"http://127.0.0.1:{port}/hook?token=s3cret",
            f"http://bot:pw-s3cret@127.0.0.1:{rcv.port}/hook?token=s3cret#s3cret",
        ],
        retries=1,
    )
    with caplog.at_level(logging.DEBUG):
        sender.send({"event": "request_failed"})
        sender.close(timeout=2)
    assert rcv.hits[0].path == "/hook?token=s3cret"  # the token still reaches the webhook
    assert sender.failed == 2
    assert f"http://127.0.0.1:{port}/hook" in caplog.text
    assert "s3cret" not in caplog.text
    assert '"event"' not in caplog.text  # nor the body
    assert "s3cret" not in repr(sender.settings) and "s3cret" not in str(sender.urls)


def test_redact_url():
    assert redact_url("https://u:p@hooks.example:8443/a/b?token=t#f") == (
        "https://hooks.example:8443/a/b"
    )
    assert redact_url("http://[::1]:9000/x?y") == "http://[::1]:9000/x"
    assert redact_url("nonsense?token=t") == "nonsense"


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "value",
    [
        "ftp://127.0.0.1/hook?token=s3cret",
        "http://127.0.0.1:1/ok, 127.0.0.1/hook",
        "http:///hook?token=s3cret",
        "http://127.0.0.1:notaport/hook?token=s3cret",
        "https://user:s3cret@:443/x",
    ],
)
def test_malformed_env_is_an_input_error(value: str):
    with pytest.raises(InputError) as err:
        settings_from_env({"MAAS_ALERT_WEBHOOK": value})
    msg = str(err.value)
    assert msg.startswith("MAAS_ALERT_WEBHOOK: not an http(s) URL: ")
    assert "\n" not in msg and "s3cret" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_settings_errors_do_not_echo_url_secrets():
    with pytest.raises(ValueError) as err:
        AlertSettings(urls=["ftp://127.0.0.1/hook?token=s3cret"])
    assert "not an http(s) URL" in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize("env", [{}, {"MAAS_ALERT_WEBHOOK": ""}, {"MAAS_ALERT_WEBHOOK": " ,\n "}])
def test_unset_or_blank_env_means_no_alerts(env: dict[str, str]):
    assert settings_from_env(env) is None


def test_env_separators_and_duplicates():
    env = {
        "MAAS_ALERT_WEBHOOK": "https://a.example/h,http://b.example:8080/h\n https://a.example/h"
    }
    settings = settings_from_env(env)
    assert settings is not None
    assert settings.urls == ["https://a.example/h", "http://b.example:8080/h"]
    assert (settings.timeout, settings.retries, settings.queue_size) == (5.0, 3, 1000)
    assert [settings.delay(i) for i in range(3)] == [0.5, 1.0, 2.0]


# --------------------------------------------------------------------------- events


def test_request_event_fields():
    event = request_event("failure_threshold_exceeded", status(n_failed=25, state="partial"))
    assert set(event) == {
        "event",
        "request_id",
        "action",
        "state",
        "image",
        "submitted_by",
        "reason",
        "counts",
        "failures_by_class",
        "failed_hosts",
        "ts",
    }
    assert event["event"] == "failure_threshold_exceeded"
    assert (event["request_id"], event["action"], event["state"]) == (42, "power-cycle", "partial")
    assert event["submitted_by"] == "alice" and event["reason"] == "max failures exceeded"
    assert event["counts"] == {"failed": 25, "succeeded": 1, "dropped": 1}
    assert event["failures_by_class"] == {"unknown": 13, "unreachable": 12}
    assert len(event["failed_hosts"]) == 20
    assert event["failed_hosts"][1] == {
        "host": "web01",
        "error_class": "unreachable",
        "reason": "BMC at 10.0.0.1 did not answer",
    }
    assert event["ts"].endswith("Z")
    assert json.loads(json.dumps(event)) == event
    with pytest.raises(ValueError):
        request_event("request_succeeded", status())


# --------------------------------------------------------------------------- Python API


def test_webhooks_set_through_the_python_api_replace_the_environment(
    receiver: Callable[..., Receiver], tmp_path, monkeypatch: pytest.MonkeyPatch
):
    import maas_lib
    from maas_lib.models import HostSpec
    from maas_lib.sim.inproc import InProcessFleet, zero_latency

    given, from_env = receiver(), receiver()
    monkeypatch.setenv("MAAS_ALERT_WEBHOOK", from_env.url())
    host = HostSpec(name="n0", pool="p", bmc_address="127.0.0.1", bmc_credential="nocreds")
    sim = InProcessFleet(config=zero_latency())
    sim.add_host(host)
    with maas_lib.open_fleet(tmp_path / "fleet.db") as fleet:
        fleet.store.upsert_hosts([host], [], actor="test")
        with pytest.raises(InputError, match=r"^alerts: not an http\(s\) URL: 'ftp://x/'"):
            fleet.worker(alerts=["ftp://x/"])
        run = {"driver_factory": sim.driver_factory, "poll": 0.02}
        rid = fleet.submit("power-on", ["n0"]).id  # fails: no credential
        fleet.run(alerts=[given.url()], **run)
        sent = len(given.hits)  # the run ends once its alerts are delivered
        assert sent and {h.json()["request_id"] for h in given.hits} == {rid}
        fleet.submit("power-on", ["n0"])
        fleet.run(alerts=[], **run)  # none at all: off, whatever the environment says
    assert len(given.hits) == sent and from_env.hits == []
