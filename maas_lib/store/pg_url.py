"""PostgreSQL URLs: our own `schema` parameter, and passwords kept out of every message."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from maas_lib.errors import InputError

REDACTED = "***"
#: Query parameters that carry secrets.
_SECRET_PARAMS = {"password", "sslpassword"}
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


@dataclass(frozen=True)
class PgTarget:
    """A PostgreSQL URL taken apart."""

    conninfo: str = field(repr=False)  # what libpq gets: the URL minus our own parameters
    url: str  # what people see: the URL with its password replaced by ***
    schema: str | None  # `?schema=name`: the schema to create (if missing) and use
    #: Every spelling of the password, to scrub from messages.
    secrets: tuple[str, ...] = field(repr=False)

    def scrub(self, text: object) -> str:
        """`text` on one line with every password spelling replaced by ***."""
        out = " ".join(str(text).split())
        for secret in sorted(self.secrets, key=len, reverse=True):
            out = out.replace(secret, REDACTED)
        return out


def parse_pg_url(url: str) -> PgTarget:
    """Split `postgresql://user:pw@host:port/db?schema=name&…` for libpq and for display."""
    parts = urlsplit(url)
    secrets: list[str] = []
    userinfo, at, hosts = parts.netloc.rpartition("@")
    shown_netloc = parts.netloc
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            secrets += [password, unquote(password)]
            shown_netloc = f"{user}:{REDACTED}@{hosts}"
    schema = None
    kept: list[tuple[str, str]] = []
    shown: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not _SCHEMA_RE.match(value):
                raise InputError(
                    f"schema={value!r} in the database URL: expected a name of letters, "
                    "digits and _ (at most 63, not starting with a digit)"
                )
            schema = value
            shown.append((key, value))
            continue
        if key in _SECRET_PARAMS and value:
            secrets.append(value)
            shown.append((key, REDACTED))
        else:
            shown.append((key, value))
        kept.append((key, value))
    conninfo = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    display = urlunsplit(
        parts._replace(netloc=shown_netloc, query=urlencode(shown, safe="*", quote_via=quote))
    )
    return PgTarget(conninfo, display, schema, tuple(s for s in secrets if s))
