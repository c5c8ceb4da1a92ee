"""Every error the API answers, in one shape: `{"error": <kind>, "detail": <one line>}`.

Library errors map by class (the same classes the CLI maps to exit codes); FastAPI's own
validation errors, unknown paths and methods, oversized bodies and rate limits get the
same shape; anything unexpected is `internal` with no traceback, logged here once.
"""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas_lib.errors import (
    AccessDenied,
    AuthenticationError,
    IdempotencyConflict,
    InputError,
    MaasError,
    NotFound,
    StoreUnavailable,
)

log = logging.getLogger("maas_lib.service")

#: HTTP status -> the error kind clients switch on.
KINDS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
#: The longest `detail` sent (a message quoting a huge input is cut here).
MAX_DETAIL = 500
#: Validation problems named in one detail.
_MAX_SHOWN = 5


class ErrorBody(BaseModel):
    """What every error response holds (the OpenAPI document shows it)."""

    error: str
    detail: str


class ApiError(HTTPException):
    """An HTTP error with the API's shape, raised by the app's own layers (limits)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers)


#: What an API token or a JWT looks like: never repeated in an answer or a log line, even
#: when a client sent one where it does not belong (a query, a field).
_SECRET_RE = re.compile(
    r"maas_[A-Za-z0-9_-]{16,}|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)


def redact(text: str) -> str:
    return _SECRET_RE.sub("<redacted>", text)


#: Characters that must not reach a log line, an error detail or a terminal as they are:
#: C0/C1 controls and DEL (a newline forges a log line, ESC drives a terminal), line and
#: paragraph separators, bidirectional embeddings/overrides/isolates, lone surrogates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_unsafe(text: str) -> str:
    """`text` with each `UNSAFE` character written as its escape (a newline as `\\x0a`)."""
    return UNSAFE.sub(_escaped, text)


class Redacting(logging.Filter):
    """Redacts credentials from a log record's message (uvicorn's access log shows each
    path with its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_unsafe(redact(message))  # one line, whatever a caller sent
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # the traceback's messages too
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def one_line(text: str) -> str:
    line = escape_unsafe(redact(" ".join(str(text).split())))
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3] + "..."


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = KINDS.get(status, "bad_request" if status < 500 else "internal")
    body = {"error": kind, "detail": one_line(detail)}
    return JSONResponse(body, status_code=status, headers=headers)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def status_of(exc: MaasError) -> tuple[int, dict[str, str] | None]:
    """The HTTP status of a library error (most specific class first)."""
    if isinstance(exc, AuthenticationError):
        return 401, {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, AccessDenied):
        return 403, None
    if isinstance(exc, IdempotencyConflict):
        return 409, None
    if isinstance(exc, NotFound):
        return 404, None
    if isinstance(exc, InputError):
        return 400, None
    if isinstance(exc, StoreUnavailable):
        return 503, retry_after(1)
    return 500, None


def _validation_detail(exc: RequestValidationError) -> str:
    """`body.batch_size: Input should be a valid string; query.limit: ...` on one line."""
    found = exc.errors()
    parts = []
    for err in found[:_MAX_SHOWN]:
        if err.get("type") == "json_invalid":  # maas_lib.service.inputs names the problem
            parts.append(f"body: {err.get('ctx', {}).get('error', 'not JSON')}")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    more = f" (and {len(found) - _MAX_SHOWN} more)" if len(found) > _MAX_SHOWN else ""
    return "; ".join(parts) + more if parts else "invalid request"


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such path: {request.url.path}"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, detail, exc.headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, _validation_detail(exc))


async def _on_maas(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MaasError)
    status, headers = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        detail = "the store is unavailable; try again" if status == 503 else "internal error"
        return error_response(status, detail, headers)
    return error_response(status, str(exc), headers)


def install(app: FastAPI) -> None:
    """The handlers above, and `CatchAll` around the routes (an unexpected error)."""
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(MaasError, _on_maas)
    app.add_middleware(CatchAll)


class CatchAll:
    """Any other exception: logged here once (with its traceback, server-side), answered
    `internal` (no traceback, no message) if no response has started; a stream already
    under way is cut. Unlike a handler for `Exception`, nothing is re-raised to uvicorn."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            log.error(
                "%s %s failed: %s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                exc_info=exc,
            )
            if not started:
                await error_response(500, "internal error")(scope, receive, send)
