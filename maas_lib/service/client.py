"""`ApiFleet`: the maas-lib HTTPS API as a `Fleet`, for `maasctl --api` and the collection.

It has the `Fleet` methods the remote commands call (submit, plan, status, request_info,
steps, summary, requests, cancel, inflight, stats, hosts, workers, wait, follow) and
returns the same model objects, rebuilt from the server's JSON with the models' own
validation, so a front end prints the same whether it holds the database or a token.

- TLS is always verified: the system's CAs, or the bundle named by `ca` (`--ca-bundle`,
  ``MAAS_API_CA``). Plain ``http://`` only to a loopback address (a test server).
- The token (``MAAS_API_TOKEN`` or a file's first line) goes in one header and nowhere
  else: not in errors, logs, reprs.
- Every call is retried on a connection error and on 429 (after ``Retry-After``) and
  502/503/504, with backoff, within `deadline` seconds, moving on to the next of several
  URLs (active-active servers) when one cannot be reached. A submission carries an
  ``Idempotency-Key`` kept across its retries, so an acknowledged submission exists once.
- HTTP errors become the library's errors, with the server's one-line ``detail``:
  400/404/409/413/422 an `InputError` (exit 2), 401 `AuthenticationError` and 403
  `AccessDenied` (exit 3), others a `MaasError` (exit 1). Never a traceback or a page
  of HTML. Redirects are not followed (the token goes to the named URLs only).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import ssl
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from maas_lib.access.models import AuditRecord
from maas_lib.errors import AccessDenied, AuthenticationError, InputError, MaasError, NotFound
from maas_lib.models import (
    BatchPolicy,
    HostRecord,
    Lease,
    RequestState,
    RequestStatus,
    RequestSummary,
    SubmitResult,
)
from maas_lib.telemetry.models import Stats, WorkerInfo
from maas_lib.telemetry.progress import RequestView


def _httpx_without_trio() -> Any:
    """httpx, imported without trio: httpcore imports trio (~0.2 s) when it is installed,
    for async calls under trio, which this synchronous client never makes."""
    blocked = "trio" not in sys.modules
    if blocked:
        sys.modules["trio"] = None  # type: ignore[assignment] - ImportError for httpcore
    try:
        import httpx as module  # the one import of httpx in this file

        return module
    finally:
        if blocked:
            del sys.modules["trio"]  # anything else may import trio as usual


httpx = _httpx_without_trio()

log = logging.getLogger(__name__)

API = "/api/v1"
#: Environment variables the clients read (the AWX credential type injects these).
ENV_URL, ENV_TOKEN, ENV_CA = "MAAS_API_URL", "MAAS_API_TOKEN", "MAAS_API_CA"
#: A client certificate and its key, for a service that requires one (`serve --client-ca`).
ENV_CERT, ENV_KEY = "MAAS_API_CLIENT_CERT", "MAAS_API_CLIENT_KEY"
#: Seconds a call may take with its retries (default `DEFAULT_DEADLINE`).
ENV_DEADLINE = "MAAS_API_DEADLINE"
#: Seconds a call (with its retries and failovers) may take before giving up.
DEFAULT_DEADLINE = 30.0
#: Seconds for one connection attempt / one response.
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 120.0
#: Longest detail kept from a server's error.
_MAX_DETAIL = 500
_INPUT_STATUSES = {400, 404, 409, 413, 422}
_RETRY_STATUSES = {429, 502, 503, 504}
#: Errors after which the request may have reached the server: retried only when that
#: is harmless (reads, plans, a submission with its idempotency key).
_MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout)
#: Errors before anything was sent: always retried.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _parse_urls(value: str) -> list[str]:
    """`https://a:8443,https://b:8443` -> base URLs, checked; `InputError` naming the bad one."""
    urls = []
    for raw in value.split(","):
        raw = raw.strip().rstrip("/")
        if not raw:
            continue
        try:
            parts = urlsplit(raw)
            host = parts.hostname
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError as exc:
            raise InputError(f"--api: not a valid URL ({exc})") from None
        if parts.username is not None or parts.password is not None:  # before quoting it
            raise InputError("--api: a URL may not carry a user or password (use MAAS_API_TOKEN)")
        if parts.scheme not in ("https", "http") or not host:
            raise InputError(f"--api: {raw!r} is not an https:// URL")
        if parts.query or parts.fragment:
            raise InputError(f"--api: {raw!r} has a query or fragment")
        if parts.scheme == "http" and not _loopback(host):
            raise InputError(
                f"--api: plain http:// only to a loopback address; use https:// ({raw})"
            )
        urls.append(raw)
    if not urls:
        raise InputError("--api: no URL given")
    return urls


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise InputError(f"{source} is empty")
    if not all(33 <= ord(ch) < 127 for ch in token) or len(token) > 8192:
        # Never echo it: it is a secret even when garbled.
        raise InputError(f"{source}: not a valid token (printable ASCII without spaces)")
    return token


def read_token_file(path: str | Path) -> str:
    """A token from a file's first line (`--api-token-file`)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline(8193)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(f"--api-token-file {path}: {reason}") from None
    return _check_token(first, f"--api-token-file {path}")


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how to reach it; `repr` never shows the token."""

    urls: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    ca: str | None = None
    deadline: float = DEFAULT_DEADLINE
    cert: str | None = None  # client certificate (chain), PEM; its key too unless `key`
    key: str | None = None

    @classmethod
    def from_options(
        cls,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        deadline: float | None = None,
        env: dict[str, str] | None = None,
    ) -> ApiSettings:
        """Settings from options, each falling back to its environment variable
        (``MAAS_API_URL``, ``MAAS_API_TOKEN``, ``MAAS_API_CA``, ``MAAS_API_CLIENT_CERT``,
        ``MAAS_API_CLIENT_KEY``); an empty variable is unset."""
        env = dict(os.environ) if env is None else env
        url = url or env.get(ENV_URL)
        if not url:
            raise InputError(f"no API URL (set --api or {ENV_URL})")
        if token is not None and token_file is not None:
            raise InputError("name the API token once: a token or --api-token-file")
        if token_file is not None:
            secret: str | None = read_token_file(token_file)
        elif token is not None:
            secret = _check_token(token, "api_token")
        elif env.get(ENV_TOKEN):
            secret = _check_token(env[ENV_TOKEN], ENV_TOKEN)
        else:
            secret = None
        ca = ca or env.get(ENV_CA) or None
        cert = cert or env.get(ENV_CERT) or None
        key = key or env.get(ENV_KEY) or None
        for option, path in (("--ca-bundle", ca), ("--client-cert", cert), ("--client-key", key)):
            if path is not None and not Path(path).is_file():
                raise InputError(f"{option} {path}: no such file")
        if key is not None and cert is None:
            raise InputError("--client-key needs --client-cert")
        if deadline is None and env.get(ENV_DEADLINE):
            try:
                deadline = float(env[ENV_DEADLINE])
            except ValueError:
                raise InputError(f"{ENV_DEADLINE}: not a number of seconds") from None
        if deadline is not None and not 0 < deadline <= 86400:
            raise InputError(f"API deadline must be in (0, 86400] seconds (got {deadline:g})")
        return cls(
            urls=tuple(_parse_urls(url)),
            token=secret,
            ca=ca,
            deadline=DEFAULT_DEADLINE if deadline is None else deadline,
            cert=cert,
            key=key,
        )


def _ssl_context(settings: ApiSettings) -> ssl.SSLContext:
    """Verification always on: the system's CAs (not a bundled copy), or the bundle's;
    and the client certificate, if any."""
    try:
        context = ssl.create_default_context(cafile=settings.ca)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"--ca-bundle {settings.ca}: not a usable CA bundle ({exc})") from None
    if settings.cert is not None:
        try:
            context.load_cert_chain(settings.cert, settings.key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise InputError(
                f"--client-cert {settings.cert}: not a usable certificate and key ({reason})"
            ) from None
    return context


def _detail(response: httpx.Response) -> str:
    """The server's one-line `detail`, or a line saying what answered instead."""
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except (ValueError, UnicodeDecodeError):
        detail = None
    if not isinstance(detail, str) or not detail.strip():
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        where = response.url.host
        return f"HTTP {response.status_code} ({kind}) from {where}: not a maas-lib API answer"
    line = " ".join(detail.split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS handshake failed, with what to do about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return f"{why} (trust its CA with --ca-bundle or {ENV_CA})"
    why = str(exc.reason or exc)
    if "CERTIFICATE_REQUIRED" in why.upper() or "CERTIFICATE_UNKNOWN" in why.upper():
        return f"{why} (the service wants a client certificate: --client-cert or {ENV_CERT})"
    return why


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class ApiFleet:
    """A fleet reached through the maas-lib HTTPS API (see the module's docstring)."""

    def __init__(self, settings: ApiSettings, *, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        headers = {"Accept": "application/json", "User-Agent": "maas-lib-client"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self._client = httpx.Client(
            verify=_ssl_context(settings),
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy or netrc picked up from the environment
        )
        self._current = 0  # the URL that answered last: tried first next time

    def __repr__(self) -> str:
        return f"ApiFleet({', '.join(self.settings.urls)})"

    def __enter__(self) -> ApiFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def url(self) -> str:
        return ", ".join(self.settings.urls)

    # -- transport -------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        resend: bool = True,
        stream: bool = False,
    ) -> httpx.Response:
        """One call, retried and failed over within the deadline; a 2xx response or the
        library error its status maps to. `resend`: whether a call that may have reached
        the server may be sent again (reads, plans, keyed submissions)."""
        urls = self.settings.urls
        deadline = time.monotonic() + self.settings.deadline
        attempt, last = 0, "no answer"
        while True:
            base = urls[self._current % len(urls)]
            request = self._client.build_request(
                method, base + API + path, params=params, json=body, headers=headers
            )
            try:
                response = self._client.send(request, stream=stream)
            except _NOT_SENT + _MAYBE_SENT as exc:
                tls = _tls_failure(exc)
                if tls is not None:
                    raise MaasError(f"TLS with {base} failed: {_tls_reason(tls)}") from None
                if isinstance(exc, _MAYBE_SENT) and not resend:
                    raise MaasError(
                        f"{method} {path}: the connection to {base} broke before an answer; "
                        "it may or may not have been done (check with status)"
                    ) from None
                last = f"{base}: {type(exc).__name__}: {exc}".rstrip(": ")
                wait = 0.0 if len(urls) > 1 and attempt % len(urls) != len(urls) - 1 else None
                self._current += 1
            else:
                if response.status_code < 300:
                    return response
                if stream:
                    response.read()
                response.close()
                if response.status_code not in _RETRY_STATUSES:
                    raise self._with_token_hint(self._error(response))
                if response.status_code in (502, 504) and not resend:
                    # A proxy's answer: the service may have done it, or not.
                    raise MaasError(
                        f"{method} {path}: {_detail(response)}; it may or may not have been "
                        "done (check with status)"
                    )
                last = f"{base}: {_detail(response)}"
                wait = _retry_after(response) if response.status_code == 429 else None
                if response.status_code != 429:
                    self._current += 1
                if response.status_code == 429 and time.monotonic() + wait > deadline:
                    raise MaasError(f"{_detail(response)} (rate limited past the deadline)")
            attempt += 1
            if wait is None:
                wait = min(2.0, 0.1 * 2 ** (attempt // len(urls))) * (0.5 + random.random() / 2)
            if time.monotonic() + wait > deadline:
                raise self._gave_up(attempt, last)
            log.info("%s %s: retrying in %.1fs (%s)", method, path, wait, last)
            time.sleep(wait)

    def _gave_up(self, attempts: int, last: str) -> MaasError:
        hint = ""
        if self.settings.cert is None and "without sending a response" in last:
            # What a service requiring client certificates does to a TLS 1.3 client
            # without one: it closes the connection, with no alert to say why.
            hint = f"; if the service requires a client certificate: --client-cert or {ENV_CERT}"
        return MaasError(
            f"the maas-lib API did not answer within {self.settings.deadline:g}s "
            f"({attempts} attempts; last: {last}{hint})"
        )

    def _with_token_hint(self, error: MaasError) -> MaasError:
        """A 401 when no token was sent says how to give one."""
        if isinstance(error, AuthenticationError) and self.settings.token is None:
            return AuthenticationError(
                f"{error} (no API token: set {ENV_TOKEN} or --api-token-file)"
            )
        return error

    @staticmethod
    def _error(response: httpx.Response) -> MaasError:
        detail, code = _detail(response), response.status_code
        if code < 400:  # redirects are not followed: the token goes to the URL named only
            return MaasError(
                f"{response.url.host} answered HTTP {code} (a redirect): name the API's own URL"
            )
        if code == 404:
            return NotFound(detail)
        if code in _INPUT_STATUSES:
            return InputError(detail)
        if code == 401:
            return AuthenticationError(detail)
        if code == 403:
            return AccessDenied(detail)
        return MaasError(f"the maas-lib API failed (HTTP {code}): {detail}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise MaasError(f"{method} {path}: the answer is not JSON") from None

    # -- requests --------------------------------------------------------------------------

    @staticmethod
    def _body(
        action: Any,
        patterns: Iterable[str],
        hosts_file: str | Path | None,
        policy: BatchPolicy | dict[str, Any] | None,
        image: str | None,
        submitted_by: str | None,
        policy_fields: dict[str, Any],
    ) -> dict[str, Any]:
        """A submission as the API's body; what only a database user may do is refused."""
        for option in ("pre_hook", "post_hook"):
            if policy_fields.pop(option, None) is not None:
                raise InputError(
                    f"--{option.replace('_', '-')} is not available with --api "
                    "(a hook is a playbook the service would run)"
                )
        if submitted_by is not None:
            raise InputError(
                "--as is not available with --api (the service records who the token is)"
            )
        pats = list(patterns)
        if hosts_file is not None:  # read here: the server never reads a client's paths
            from maas_lib.fleet import read_hosts_file  # the library's reader (and its store)

            pats += read_hosts_file(hosts_file)
        if isinstance(policy, BatchPolicy):
            policy = policy.model_dump(mode="json")
        fields = {k: v for k, v in {**(policy or {}), **policy_fields}.items() if v is not None}
        body: dict[str, Any] = {"action": str(getattr(action, "value", action)), "patterns": pats}
        if image is not None:
            body["image"] = image
        for key, value in fields.items():
            body[key] = (
                str(value) if key in ("batch_size", "max_failures", "max_unavailable") else value
            )
        return body

    def submit(
        self,
        action: Any,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        image: str | None = None,
        submitted_by: str | None = None,
        idempotency_key: str | None = None,
        **policy_fields: Any,
    ) -> SubmitResult:
        """`Fleet.submit` through the API: one key for every retry, so once."""
        body = self._body(action, patterns, hosts_file, policy, image, submitted_by, policy_fields)
        key = idempotency_key or str(uuid.uuid4())
        data = self._json("POST", "/requests", body=body, headers={"Idempotency-Key": key})
        return SubmitResult.model_validate(data)

    def plan(
        self,
        action: Any,
        patterns: Iterable[str] = (),
        *,
        hosts_file: str | Path | None = None,
        policy: BatchPolicy | dict[str, Any] | None = None,
        image: str | None = None,
        submitted_by: str | None = None,
        **policy_fields: Any,
    ) -> dict[str, Any]:
        body = self._body(action, patterns, hosts_file, policy, image, submitted_by, policy_fields)
        return self._json("POST", "/plan", body=body)

    def request_info(
        self, request_id: int, *, steps: bool = False, host: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if steps or host:
            params["steps"] = "true"
        if host is not None:
            params["host"] = host
        return self._json("GET", f"/requests/{int(request_id)}", params=params)

    @staticmethod
    def _status_of(document: dict[str, Any]) -> RequestStatus:
        data = {k: v for k, v in document.items() if k not in ("steps", "summary")}
        return RequestStatus.model_validate(data)

    def status(self, request_id: int) -> RequestStatus:
        return self._status_of(self.request_info(request_id))

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]:
        return list(self.request_info(request_id, steps=True, host=host).get("steps") or [])

    def summary(self, request_id: int) -> RequestView:
        return RequestView.model_validate(self.request_info(request_id)["summary"])

    def requests(
        self,
        state: str | RequestState | Sequence[str | RequestState] | None = None,
        limit: int | None = None,
    ) -> list[RequestSummary]:
        states = [] if state is None else [state] if isinstance(state, str) else list(state)
        params: list[tuple[str, Any]] = [("state", str(getattr(s, "value", s))) for s in states]
        if limit is not None:
            params.append(("limit", limit))
        rows = self._json("GET", "/requests", params=params)
        return [RequestSummary.model_validate(r) for r in rows]

    def cancel(self, request_id: int, *, actor: str | None = None) -> RequestState:
        if actor is not None:
            raise InputError(
                "--as is not available with --api (the service records who the token is)"
            )
        # Not resent once it may have arrived: a second cancel could answer differently.
        data = self._json("POST", f"/requests/{int(request_id)}/cancel", resend=False)
        return RequestState(data["state"])

    def inflight(self) -> list[Lease]:
        return [Lease.model_validate(r) for r in self._json("GET", "/inflight")]

    def hosts(self, pool: str | None = None) -> list[HostRecord]:
        rows = self._json("GET", "/hosts", params={} if pool is None else {"pool": pool})
        # The API sends `HostRecord.public()`: the name as `host`.
        return [HostRecord.model_validate({**r, "name": r.get("host")}) for r in rows]

    def stats(
        self, since: str | None = None, *, action: Any = None, pool: str | None = None
    ) -> Stats:
        params = {
            k: str(getattr(v, "value", v))
            for k, v in (("since", since), ("action", action), ("pool", pool))
            if v is not None
        }
        return Stats.model_validate(self._json("GET", "/stats", params=params))

    def workers(self, ttl: float | None = None) -> list[WorkerInfo]:
        if ttl is not None:
            raise InputError("--claim-ttl is not available with --api (the service's TTL applies)")
        return [WorkerInfo.model_validate(r) for r in self._json("GET", "/workers")]

    def audit(
        self, *, principal: str | None = None, decision: str | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """The service's audit log, newest first (an admin's token)."""
        params = {
            k: str(v)
            for k, v in (("principal", principal), ("decision", decision), ("limit", limit))
            if v is not None
        }
        return [AuditRecord.model_validate(r) for r in self._json("GET", "/audit", params=params)]

    def whoami(self) -> dict[str, Any]:
        return self._json("GET", "/whoami")

    # -- following a request ---------------------------------------------------------------

    def follow(self, request_id: int) -> Iterator[RequestView]:
        """The request's view on each change until it ends, from the server's progress
        stream (server-sent events); a broken stream is reopened (on another server if
        need be) within the deadline, and the first view of each is the current one."""
        rid = int(request_id)
        while True:
            response = self._send(
                "GET",
                f"/requests/{rid}/progress",
                stream=True,
                headers={"Accept": "text/event-stream"},
            )
            ended = False
            try:
                for event, data in _events(response.iter_lines()):
                    if event == "end":
                        ended = True
                        break
                    if event == "error":
                        raise _stream_error(data)
                    if event == "progress":
                        view = _view_of(data)
                        yield view
                        if view.ended:
                            ended = True
                            break
            except _MAYBE_SENT + _NOT_SENT as exc:
                log.info("progress stream of request %s broke (%s); reopening", rid, exc)
                self._current += 1
            finally:
                response.close()
            if ended:
                return
            time.sleep(0.2)  # the server stopped the stream (shutting down): not in a spin

    def wait(
        self, request_id: int, *, timeout: float | None = None, interval: float = 1.0
    ) -> RequestView:
        """`Fleet.wait` through the API: the view when the request ends or `timeout`
        seconds pass (polled, so the timeout holds however quiet the request is)."""
        from maas_lib.validation import wait_seconds  # the checker `Fleet.wait` uses

        if timeout is not None:
            wait_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self.summary(request_id)
        while not view.ended and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval)
            view = self.summary(request_id)
        return view


def _view_of(data: str) -> RequestView:
    """The request's view in a `progress` event (the request_info document)."""
    try:
        return RequestView.model_validate(json.loads(data)["summary"])
    except (ValueError, KeyError, TypeError):  # a pydantic ValidationError is a ValueError
        raise MaasError("the progress stream sent a garbled event") from None


def _stream_error(data: str) -> MaasError:
    """The library error of a progress stream's `error` event (`{error, detail}`)."""
    try:
        body = json.loads(data)
        kind, detail = str(body["error"]), " ".join(str(body["detail"]).split())
    except (ValueError, KeyError, TypeError):
        return MaasError("the progress stream failed (a garbled error event)")
    if kind == "unauthenticated":
        return AuthenticationError(detail[:_MAX_DETAIL])
    if kind == "forbidden":
        return AccessDenied(detail[:_MAX_DETAIL])
    return MaasError(f"the progress stream failed: {detail[:_MAX_DETAIL]}")


def _events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of a text/event-stream, per the WHATWG rules we need: `event:` and
    `data:` fields, comments ignored, a blank line ends an event."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def open_api(
    url: str | None = None,
    *,
    token: str | None = None,
    token_file: str | Path | None = None,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    deadline: float | None = None,
) -> ApiFleet:
    """An `ApiFleet` from options with the environment's fallbacks (see `ApiSettings`)."""
    return ApiFleet(
        ApiSettings.from_options(
            url, token=token, token_file=token_file, ca=ca, cert=cert, key=key, deadline=deadline
        )
    )


__all__ = ["ApiFleet", "ApiSettings", "open_api"]
