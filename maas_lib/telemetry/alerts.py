"""Webhook alerts: a request that ends failed or partial, or exceeds its failure threshold,
POSTs a JSON event to every webhook URL: those given to the scheduler (`alert_settings`,
``Fleet.worker(alerts=...)``), else those in ``MAAS_ALERT_WEBHOOK``.

Delivery is fire-and-forget for the caller: `AlertSender.send` serialises the event and
enqueues it, and never blocks or raises. Each URL has its own bounded queue and its own
daemon thread, so a dead or slow webhook only ever delays its own events. A 2xx answer is
success; 5xx (and 408/429), connection errors and timeouts are retried with exponential
backoff; any other answer is logged and not retried.

A webhook URL may carry a token (in its userinfo or query string), so logs and error
messages show only ``scheme://host[:port]/path`` (see `redact_url`) and never an event body.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maas_lib.classes import ErrorClass
from maas_lib.errors import InputError
from maas_lib.timeutil import utc_now

log = logging.getLogger(__name__)

ENV_VAR = "MAAS_ALERT_WEBHOOK"

#: The event kinds `request_event` builds.
EventKind = Literal["request_failed", "request_partial", "failure_threshold_exceeded"]
EVENT_KINDS: frozenset[str] = frozenset(
    {"request_failed", "request_partial", "failure_threshold_exceeded"}
)

#: Failed hosts listed in one event (the counts cover the rest).
MAX_FAILED_HOSTS = 20
#: A host's failure reason is cut to this many characters in an event.
MAX_REASON_CHARS = 500
#: 4xx answers that mean "try again later" rather than "your request is wrong".
RETRYABLE_4XX = frozenset({408, 429})
#: At most one queue-overflow warning per URL in this many seconds.
_OVERFLOW_WARN_INTERVAL = 30.0
_USER_AGENT = "maas-lib"
_SEPARATORS = re.compile(r"[\s,]+")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


# --------------------------------------------------------------------------- URLs


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of `url`: no userinfo, query or fragment (for logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        # Not a URL we can take apart: keep what precedes any query, fragment or userinfo.
        head = re.split(r"[?#]", url, maxsplit=1)[0]
        return head.rsplit("@", 1)[-1]
    hostport = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, hostport, parts.path, "", ""))


def check_webhook_url(url: str) -> str:
    """Return `url` if it is a usable http(s) URL, else raise ValueError naming it redacted."""
    problem = _url_problem(url)
    if problem:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r} ({problem})")
    return url


def _url_problem(url: str) -> str | None:
    if _BAD_CHARS.search(url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "malformed host or port"
    if parts.scheme.lower() not in ("http", "https"):
        return "scheme must be http or https"
    if not parts.hostname:
        return "no host"
    return None


# --------------------------------------------------------------------------- settings


class AlertSettings(BaseModel, defer_build=True):
    """Where alerts go and how hard to try. Delays are ``backoff * 2**n`` seconds."""

    # hide_input_in_errors: a ValidationError must not echo a URL's token either.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # repr=False: a URL may carry a token, and settings objects end up in logs.
    urls: list[str] = Field(min_length=1, repr=False, description="http(s) webhook URLs")
    timeout: float = Field(default=5.0, gt=0, description="seconds for one POST")
    retries: int = Field(default=3, ge=0, le=20, description="extra attempts after the first")
    backoff: float = Field(default=0.5, ge=0, description="seconds before the first retry")
    backoff_max: float = Field(default=30.0, ge=0, description="cap on one retry delay")
    queue_size: int = Field(default=1000, ge=1, description="events buffered per URL")

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return [check_webhook_url(u) for u in v]

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        return min(self.backoff * (2**retry), self.backoff_max)


def settings_from_env(environ: Mapping[str, str] = os.environ) -> AlertSettings | None:
    """Alert settings from ``MAAS_ALERT_WEBHOOK``, or None if it is unset or blank.

    The variable holds one or more URLs separated by commas and/or whitespace; duplicates
    are dropped. A malformed URL raises `InputError` with a one-line message.
    """
    raw = environ.get(ENV_VAR, "")
    return _settings_for(_SEPARATORS.split(raw), ENV_VAR)


def alert_settings(
    alerts: AlertSettings | Iterable[str] | None, environ: Mapping[str, str] = os.environ
) -> AlertSettings | None:
    """Where a scheduler sends alerts: `alerts` as given (settings, or webhook URLs; none
    at all turns alerts off), or with None, ``MAAS_ALERT_WEBHOOK`` (`settings_from_env`).

    A malformed URL raises `InputError` with a one-line message that shows no secret."""
    if alerts is None:
        return settings_from_env(environ)
    if isinstance(alerts, AlertSettings):
        return alerts
    if isinstance(alerts, str):
        raise InputError("alerts: a list of webhook URLs, not one string")
    return _settings_for(alerts, "alerts")


def _settings_for(urls: Iterable[str], source: str) -> AlertSettings | None:
    """Settings for these URLs (duplicates and blanks dropped), or None if none is left."""
    unique = list(dict.fromkeys(u for u in urls if u))
    if not unique:
        return None
    for url in unique:
        problem = _url_problem(url)
        if problem:
            raise InputError(
                f"{source}: not an http(s) URL: {redact_url(url)!r} ({problem})"
            ) from None
    return AlertSettings(urls=unique)


# --------------------------------------------------------------------------- events


class RequestStatusLike(Protocol):
    """What `request_event` reads: `maas_lib.models.RequestStatus` fits."""

    id: int
    action: Any
    state: Any
    image: str | None
    submitted_by: str
    reason: str | None
    counts: Mapping[str, int]
    hosts: Iterable[Any]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 1] + "…"


def request_event(kind: str, status: RequestStatusLike) -> dict[str, Any]:
    """The JSON event for `status`: a request that failed, ended partial, or went over its
    failure threshold (`kind`). Holds these fields and nothing else."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown alert event kind {kind!r} (choose from {sorted(EVENT_KINDS)})")
    by_class: dict[str, int] = {}
    failed: list[dict[str, Any]] = []
    for h in status.hosts:
        if _text(h.state) != "failed":
            continue
        error_class = h.error_class or ErrorClass.UNKNOWN
        by_class[error_class] = by_class.get(error_class, 0) + 1
        if len(failed) < MAX_FAILED_HOSTS:
            failed.append({"host": h.host, "error_class": h.error_class, "reason": _clip(h.reason)})
    return {
        "event": kind,
        "request_id": status.id,
        "action": _text(status.action),
        "state": _text(status.state),
        "image": status.image,
        "submitted_by": status.submitted_by,
        "reason": status.reason,
        "counts": {str(k): int(n) for k, n in status.counts.items()},
        "failures_by_class": by_class,
        "failed_hosts": failed,
        "ts": utc_now(),
    }


# --------------------------------------------------------------------------- delivery


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a bodiless GET: treat it as an answer instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


class _Outcome:
    __slots__ = ("detail", "ok", "retry")

    def __init__(self, ok: bool, retry: bool, detail: str):
        self.ok, self.retry, self.detail = ok, retry, detail


class _Channel:
    """One webhook URL: its queue, its daemon thread, its retry loop."""

    def __init__(self, sender: AlertSender, url: str, index: int):
        self._sender = sender
        self._settings = sender.settings
        self.shown = redact_url(url)
        self._request_url, self._auth = _split_userinfo(url)
        self._secrets = _secret_parts(url)
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._last_overflow_warning = float("-inf")
        self.thread = threading.Thread(target=self._run, name=f"maas-alert-{index}", daemon=True)
        self.thread.start()

    # -- producer side (caller's thread) ------------------------------------

    def put(self, body: bytes) -> None:
        overflowed = False
        with self._cond:
            if len(self._queue) >= self._settings.queue_size:
                self._queue.popleft()
                overflowed = True
            self._queue.append(body)
            self._cond.notify()
        if overflowed:
            dropped = self._sender._count("dropped")
            now = time.monotonic()
            if now - self._last_overflow_warning >= _OVERFLOW_WARN_INTERVAL:
                self._last_overflow_warning = now
                log.warning(
                    "alert webhook %s: queue full (%d events), dropped the oldest "
                    "(%d dropped so far, all URLs)",
                    self.shown,
                    self._settings.queue_size,
                    dropped,
                )

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def discard(self) -> int:
        """Empty the queue (at close, past the deadline); return how many were left."""
        with self._cond:
            n = len(self._queue)
            self._queue.clear()
            self._stopping = True
            self._cond.notify()
        return n

    # -- worker side ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
            try:
                self._deliver(body)
            except Exception:  # never let the thread die: later alerts still matter
                self._sender._count("failed")
                log.exception("alert webhook %s: unexpected error, event dropped", self.shown)

    def _deliver(self, body: bytes) -> None:
        settings, abort = self._settings, self._sender._abort
        attempts = settings.retries + 1
        for attempt in range(attempts):
            outcome = self._post(body)
            if outcome.ok:
                self._sender._count("sent")
                log.debug("alert webhook %s: delivered (%s)", self.shown, outcome.detail)
                return
            if not outcome.retry:
                self._sender._count("failed")
                log.warning(
                    "alert webhook %s: %s; not retried, event dropped", self.shown, outcome.detail
                )
                return
            if attempt + 1 < attempts:
                delay = settings.delay(attempt)
                log.info(
                    "alert webhook %s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.shown,
                    attempt + 1,
                    attempts,
                    outcome.detail,
                    delay,
                )
                if abort.wait(delay):
                    self._sender._count("failed")
                    log.warning(
                        "alert webhook %s: %s; sender closed before a retry, event dropped",
                        self.shown,
                        outcome.detail,
                    )
                    return
        self._sender._count("failed")
        log.warning(
            "alert webhook %s: %s; gave up after %d attempt(s), event dropped",
            self.shown,
            outcome.detail,
            attempts,
        )

    def _post(self, body: bytes) -> _Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        if self._auth:
            headers["Authorization"] = self._auth
        req = urllib.request.Request(self._request_url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self._settings.timeout) as resp:
                resp.read(65536)
                return _Outcome(True, False, f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            retry = code >= 500 or code in RETRYABLE_4XX
            return _Outcome(False, retry, f"HTTP {code}")
        except urllib.error.URLError as exc:
            return _Outcome(False, True, self._scrub(_describe(exc.reason)))
        except Exception as exc:  # timeouts, resets, bad status lines, ...
            return _Outcome(False, True, self._scrub(_describe(exc)))

    def _scrub(self, text: str) -> str:
        """Belt and braces: an error message must not echo the URL's secret parts."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _secret_parts(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    secrets = [p for p in (parts.query, parts.fragment) if p]
    if "@" in parts.netloc:
        secrets.append(parts.netloc.rsplit("@", 1)[0])
    return secrets


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """urllib cannot send ``user:pass@host`` itself: move it into a Basic auth header."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, f"Basic {token}"


class AlertSender:
    """Delivers alert events to every configured webhook in the background.

    `send` never blocks and never raises. Each URL gets its own queue (``queue_size``
    events; the oldest are dropped beyond it) and its own daemon thread, so an unreachable
    webhook delays nothing but its own events. Counters, over all URLs: `sent` and `failed`
    (deliveries given up: retries spent, a non-retryable answer, or closed mid-retry), and
    `dropped` (events never attempted: queue overflow, or still queued at `close`).
    """

    def __init__(self, settings: AlertSettings):
        self.settings = settings
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._closed = False
        self._channels = [_Channel(self, url, i) for i, url in enumerate(settings.urls)]

    @property
    def urls(self) -> list[str]:
        """The webhook URLs, redacted (safe to log)."""
        return [ch.shown for ch in self._channels]

    def _count(self, counter: str) -> int:
        with self._lock:
            value = getattr(self, counter) + 1
            setattr(self, counter, value)
            return value

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue `event` for every webhook and return at once; never raises."""
        try:
            if self._closed:
                log.warning("alert sender is closed; event %r not sent", _kind(event))
                return
            if not isinstance(event, Mapping):
                log.error("alert event not sent: a %s is not a mapping", type(event).__name__)
                return
            try:
                body = json.dumps(event, default=str, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                log.error("alert event %r not sent: not JSON (%s)", _kind(event), exc)
                return
            for ch in self._channels:
                ch.put(body)
        except Exception:  # an alert must never take the scheduler down
            log.exception("alert event not queued")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds, then stop the threads.

        Past the deadline, queued events are dropped (and counted) and retry waits are cut
        short; a POST already in flight can outlive `close` by up to ``settings.timeout``
        (its thread is a daemon, so it never holds up interpreter exit).
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(timeout, 0.0)
        # Keep a little of the budget to cut retry waits short and collect the counts.
        grace = min(0.1, max(timeout, 0.0) / 10)
        for ch in self._channels:
            ch.stop()
        for ch in self._channels:
            ch.thread.join(max(0.0, deadline - grace - time.monotonic()))
        if any(ch.thread.is_alive() for ch in self._channels):
            self._abort.set()
            for ch in self._channels:
                left = ch.discard()
                if left:
                    self._add("dropped", left)
                    log.warning(
                        "alert webhook %s: %d event(s) not delivered before close timeout",
                        ch.shown,
                        left,
                    )
            for ch in self._channels:
                ch.thread.join(max(0.0, deadline - time.monotonic()))
            busy = [ch.shown for ch in self._channels if ch.thread.is_alive()]
            if busy:
                log.warning("alert webhook(s) still busy at close: %s", ", ".join(busy))

    def _add(self, counter: str, n: int) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)

    def __enter__(self) -> AlertSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kind(event: Any) -> str:
    try:
        return str(event.get("event", "?"))
    except Exception:
        return "?"
