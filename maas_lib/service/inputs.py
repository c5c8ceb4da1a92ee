"""What the API accepts as text at all, before any field is looked at.

- JSON bodies are parsed strictly (`strict_json`): UTF-8 only; no `NaN`/`Infinity` (which
  Python's parser takes); no number beyond `MAX_DIGITS` digits or a float's range; no key
  twice in an object (a proxy or a log may read the first where Python keeps the last);
  no control character, lone surrogate or bidirectional override in any string. Each
  refusal is a 422 naming the problem.
- Query strings and paths (`CleanText`): no control character, surrogate or
  bidirectional override either (they would reach SQL parameters — PostgreSQL refuses
  NUL — log lines and error details).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from maas_lib.service.errors import UNSAFE, error_response

#: The longest integer (in digits) a body may hold: more than any id or count.
MAX_DIGITS = 20
#: The most header bytes a request may carry (names and values). h11 refuses more only
#: when the headers arrive in pieces; all at once, it took 100 KiB of them.
MAX_HEADER_BYTES = 16 * 1024


def codepoint(ch: str) -> str:
    return f"U+{ord(ch):04X}"


class _Refused(ValueError):
    """A strict-parse refusal (turned into a `json.JSONDecodeError`)."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"a number of more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]} is out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"key {key[:40]!r} appears twice in an object")
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    """Every string (keys too) free of `UNSAFE` characters."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            bad = UNSAFE.search(item)
            if bad:
                raise _Refused(f"a string holds the unprintable character {codepoint(bad.group())}")
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def strict_json(data: bytes) -> Any:
    """`data` parsed as described in the module's doc, or `json.JSONDecodeError` whose
    `msg` names the problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(
            f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", "", 0
        ) from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_no_constant,
            parse_int=_int,
            parse_float=_float,
        )
        if "\\" in text or UNSAFE.search(text):
            _check_strings(value)
        # else no string can hold one: without an escape, each is a piece of `text` as is
        return value
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(
            f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", text, exc.pos
        ) from None
    except _Refused as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError as exc:  # e.g. a float too long to convert
        raise json.JSONDecodeError(f"not JSON: {exc}", text, 0) from None


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read with `strict_json` (FastAPI turns its
    `JSONDecodeError` into a 422), after `before_body` (FastAPI reads a body before it
    resolves any dependency, authentication included)."""

    async def before_body(self, request: Request) -> None:
        """What must pass before the body is read (raise to refuse the call)."""

    async def after(self, request: Request, error: BaseException | None) -> None:
        """Once the handler has answered (or raised `error`), whether or not
        `before_body` passed: give back what it took."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            strict_request = _StrictRequest(request.scope, request.receive)
            try:
                await self.before_body(strict_request)
                response = await handler(strict_request)
            except BaseException as exc:
                await self.after(strict_request, exc)
                raise
            await self.after(strict_request, None)
            return response

        return strict


class CleanText:
    """Refuses (400) a path or query parameter holding an `UNSAFE` character, and
    headers past `MAX_HEADER_BYTES`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _unsafe_input(scope)
            if problem:
                await error_response(400, problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unsafe_input(scope: Scope) -> str | None:
    if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
        return f"headers larger than {MAX_HEADER_BYTES // 1024} KiB"
    bad = UNSAFE.search(scope.get("path", ""))
    if bad:
        return f"the path holds the unprintable character {codepoint(bad.group())}"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        bad = UNSAFE.search(name) or UNSAFE.search(value)
        if bad:
            shown, char = UNSAFE.sub("?", name)[:40], codepoint(bad.group())
            return f"query parameter {shown}: holds the unprintable character {char}"
    return None
