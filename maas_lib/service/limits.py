"""The API's limits: the request body's size (counted while it is read) and a token-bucket
rate per key (a principal, or a client address for failed authentications)."""

from __future__ import annotations

import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas_lib.service.errors import ApiError, error_response


class BodyLimit:
    """Refuse a body larger than `limit` bytes with 413: at once when its Content-Length
    says so, else as soon as the bytes read pass it (a chunked body has no length, and a
    stated one may lie). Starlette's own `max_body_size` counts the same way but answers a
    stated length it refuses with a text/plain 413 of its own, outside the API's one error
    shape; this answers every refusal through the app's handlers."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    def _too_large(self) -> str:
        return f"request body larger than {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    stated = int(value)
                except ValueError:
                    stated = -1
                if stated < 0:
                    await error_response(400, "bad Content-Length")(scope, receive, send)
                    return
                if stated > self.limit:
                    response = error_response(413, self._too_large(), {"Connection": "close"})
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, self._too_large(), {"Connection": "close"})
            return message

        await self.app(scope, counting, send)


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up. Thread-safe
    (authentication runs in the threadpool). Per process: it is the one piece of state a
    `serve` process keeps."""

    #: Buckets kept at most; full (idle) ones are dropped first when it is reached.
    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        # At least one call, however low the rate: a bucket of less holds none ever.
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if there was one, else the seconds until there is."""
        return self._bucket(key, take=True)

    def waiting(self, key: str) -> float:
        """The seconds until `key` has a token (0.0: it has one now); none is taken."""
        return self._bucket(key, take=False)

    def _bucket(self, key: str, *, take: bool) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if take and tokens >= 1 else tokens, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._forget_idle(now)
            return wait

    def _forget_idle(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= burst]
        for key in full:
            del self._buckets[key]


class StreamSlots:
    """At most `limit` progress streams open at once per key (a principal): each holds a
    connection and reads the store every poll, so without a bound one caller could hold
    the store pool with thousands of them. Per process, like `RateLimiter`."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        """A slot for `key`, if it has fewer than `limit` open (then `give` it back)."""
        with self._lock:
            n = self._open.get(key, 0)
            if n >= self.limit:
                return False
            self._open[key] = n + 1
            return True

    def give(self, key: str) -> None:
        with self._lock:
            n = self._open.get(key, 0) - 1
            if n > 0:
                self._open[key] = n
            else:
                self._open.pop(key, None)
