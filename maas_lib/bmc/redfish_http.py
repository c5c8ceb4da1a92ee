"""HTTP to one Redfish BMC under an operation deadline: sushy's `Connector`, adjusted.

Each request gets the per-request timeouts (connect, read), never more than what is left of
the operation's deadline. sushy's own blind retries are off: a busy BMC (503/429) is retried
after the `Retry-After` it asks for, only while that still fits the deadline; a 202 Accepted
with a task monitor is followed to its end, so an action returns once the BMC has done it.
"""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from sushy import connector, exceptions

from maas_lib.errors import BmcError, BmcTimeout

log = logging.getLogger(__name__)

#: Used when a busy BMC or a running task monitor names no Retry-After.
DEFAULT_RETRY_AFTER = 1.0
#: Longest pause between task monitor polls whatever the BMC asks for.
MAX_TASK_POLL = 5.0
_FAILED_TASK_STATES = {"Exception", "Killed", "Cancelled", "Interrupted", "Suspended"}


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), None when absent or garbled."""
    if response is None:
        return None
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class DeadlineConnector(connector.Connector):
    """A sushy connector whose every request counts against `begin(seconds)`'s deadline.

    Used by one thread at a time (the session pool's lock), so the deadline is plain state.
    """

    def __init__(self, url: str, *, verify: bool | str, timeout: float, connect_timeout: float):
        # server_side_retries=1: one connection attempt and no delayed re-sends (sushy's
        # default re-sends a GET ten times, 3 s apart, ignoring Retry-After).
        super().__init__(
            url,
            verify=verify,
            server_side_retries=1,
            server_side_retries_delay=0,
            default_request_timeout=timeout,
            connect_timeout=connect_timeout,
            response_callback=self._remember,
        )
        self.read_timeout = timeout
        self.connect_timeout_s = connect_timeout
        self._budget = timeout
        self._deadline = time.monotonic() + timeout
        self._last: requests.Response | None = None

    def begin(self, seconds: float) -> None:
        """Start one operation: every request until the next `begin` shares `seconds`."""
        self._budget = seconds
        self._deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def _remember(self, response: requests.Response) -> None:
        self._last = response

    def _timeouts(self, what: str) -> tuple[float, float]:
        left = self.remaining()
        if left <= 0:
            raise BmcTimeout(f"{what}: the operation's {self._budget:g}s deadline has passed")
        return (min(self.connect_timeout_s, left), min(self.read_timeout, left))

    def _op(  # type: ignore[override]
        self,
        method: str,
        path: str = "",
        data: Any = None,
        headers: dict[str, Any] | None = None,
        blocking: bool = False,
        timeout: Any = None,
        server_side_retries_left: int | None = None,
        allow_reauth: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        what = f"{method} {_path_of(path)}"
        self._check_origin(path, what)
        while True:
            try:
                response = super()._op(
                    method,
                    path,
                    data=data,
                    headers=headers,
                    blocking=False,
                    timeout=self._timeouts(what),
                    server_side_retries_left=0,
                    allow_reauth=allow_reauth,
                    **kwargs,
                )
            except exceptions.HTTPError as exc:
                if exc.status_code not in (429, 503):
                    raise
                self._wait_busy(what, exc.status_code)
                continue
            if response.status_code == 202 and method != "GET":
                return self._follow_task(what, response)
            return response

    def _check_origin(self, path: str, what: str) -> None:
        """Links come from the BMC (untrusted): one naming another host would carry our
        credentials there, so only this BMC's own URLs are followed."""
        target = urlsplit(path)
        if target.netloc:
            base = urlsplit(self._url)
            if (target.scheme, target.netloc) != (base.scheme, base.netloc):
                raise BmcError(f"{what}: the BMC linked to another host; not followed")

    def _wait_busy(self, what: str, status: int) -> None:
        asked = retry_after_seconds(self._last)
        pause = DEFAULT_RETRY_AFTER if asked is None else asked
        if pause >= self.remaining():
            raise BmcError(
                f"{what}: BMC busy (HTTP {status}), asked to retry after {pause:g}s, "
                f"beyond the operation's {self._budget:g}s deadline",
                transient=True,
            )
        log.debug("%s: HTTP %s, retrying after %.1fs", what, status, pause)
        time.sleep(pause)

    def _follow_task(self, what: str, accepted: requests.Response) -> requests.Response:
        """Poll the task monitor a 202 named until the BMC reports the outcome."""
        monitor = accepted.headers.get("Location")
        if not monitor:
            # Accepted without a monitor: nothing to follow; the caller confirms by state.
            return accepted
        self._check_origin(monitor, what)
        response = accepted
        while True:
            pause = retry_after_seconds(response)
            pause = min(MAX_TASK_POLL, DEFAULT_RETRY_AFTER / 4 if pause is None else pause)
            if pause >= self.remaining():
                raise BmcTimeout(
                    f"{what}: BMC task {_path_of(monitor)} still running at the operation's "
                    f"{self._budget:g}s deadline"
                )
            time.sleep(pause)
            try:
                response = connector.Connector._op(
                    self,
                    "GET",
                    monitor,
                    blocking=False,
                    timeout=self._timeouts(what),
                    server_side_retries_left=0,
                )
            except exceptions.HTTPError as exc:
                if exc.status_code in (429, 503):
                    continue
                raise BmcError(f"{what}: BMC task failed: {exc.detail or exc}") from None
            if response.status_code != 202:
                _raise_for_task(what, response)
                return response


def _raise_for_task(what: str, response: requests.Response) -> None:
    """A finished task monitor may answer with the Task itself: its state says how it ended."""
    try:
        body = response.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    state = body.get("TaskState")
    if state in _FAILED_TASK_STATES or body.get("TaskStatus") == "Critical":
        messages = [
            str(m.get("Message"))
            for m in body.get("Messages") or []
            if isinstance(m, dict) and m.get("Message")
        ]
        detail = "; ".join(messages)[:300] or "no message"
        raise BmcError(f"{what}: BMC task ended {state or 'Critical'}: {detail}")


def _path_of(path: str) -> str:
    """The path alone: never a URL's userinfo or query."""
    return urlsplit(path).path or path
