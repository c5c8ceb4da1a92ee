"""Pydantic validation errors → one-line `InputError`s that name the option or variable."""

from __future__ import annotations

import re

from pydantic import ValidationError

from maas_lib.errors import InputError


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first error, with the offending value where it helps."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("value_error", "missing"):
        msg += f" (got {err['input']!r})"
    return field, msg


def option_error(exc: ValidationError, renames: dict[str, str] | None = None) -> InputError:
    """`--batch-size: batch size cannot exceed 100% (got 150%)`, for CLI-facing settings."""
    field, msg = first_error(exc)
    if not field:
        return InputError(msg)
    option = (renames or {}).get(field, field).replace("_", "-")
    return InputError(f"--{option}: {msg}")


#: The longest anyone may block waiting for a request to end (`Fleet.wait`, the submit
#: module's wait_timeout): one day.
MAX_WAIT_S = 86400.0


def wait_seconds(value: float, what: str = "wait timeout") -> float:
    """`value` if it is a usable wait in seconds, (0, MAX_WAIT_S]; NaN, inf and the rest
    are bad input."""
    if not 0 < value <= MAX_WAIT_S:  # NaN fails every comparison
        raise InputError(
            f"{what}: must be more than 0 and at most {MAX_WAIT_S:g} s (got {value!r})"
        )
    return value


_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|(?P<host>[^\s:\[\]/]*)):(?P<port>\d{1,5})"
)


def parse_listen(value: str, option: str = "--serve", *, any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (127.0.0.1 only: binding wider takes an
    explicit address such as ``0.0.0.0:PORT`` or ``[::]:PORT``) → (host, port).

    Raises `InputError` naming `option` for anything else, or a port outside 1-65535
    (0-65535 with `any_port`: port 0 asks the system for a free one)."""
    m = _LISTEN.fullmatch(value)
    port = int(m.group("port")) if m else -1
    if m is None or not (0 if any_port else 1) <= port <= 65535:
        raise InputError(f"{option}: expected HOST:PORT (got {value!r})")
    host = m.group("v6") or m.group("host") or "127.0.0.1"
    return host, port
