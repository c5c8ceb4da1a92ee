"""API tokens: created by an admin, shown once, stored as a SHA-256 only.

A secret is `maas_` + `secrets.token_urlsafe(32)` (256 random bits), so a plain SHA-256
is enough to keep it (no slow hash: nothing to brute-force). The store finds a token by
that hash; the secret itself is never written anywhere, logged or returned again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from maas_lib.access.models import Role, TokenCreated, TokenInfo, check_name
from maas_lib.access.principal import Principal
from maas_lib.errors import AuthenticationError, InputError
from maas_lib.store.base import AccessStore

PREFIX = "maas_"
#: What a secret looks like (token_urlsafe(32) gives 43 characters; older or longer
#: ones up to 128 are accepted). Anything else is refused before the store is asked.
SECRET_RE = re.compile(r"^maas_[A-Za-z0-9_-]{22,128}$")
DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 3650
#: `last_used` is written at most this often per token (each write is a transaction).
TOUCH_INTERVAL_S = 60.0

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_FMT)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_expiry(value: str | None, now: datetime | None = None) -> str:
    """`30d`, `12h`, `2w` from now, or a date `YYYY-MM-DD` (its end, UTC), as an ISO UTC
    time; None: `DEFAULT_EXPIRY_DAYS`. At most `MAX_EXPIRY_DAYS` ahead, and in the
    future; otherwise `InputError` naming `--expires`."""
    now = now or datetime.now(UTC)
    if value is None:
        return _iso(now + timedelta(days=DEFAULT_EXPIRY_DAYS))
    text = value.strip()
    m = re.fullmatch(r"(\d{1,6})([hdw])", text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        when = (
            now + timedelta(hours=n)
            if unit == "h"
            else now + timedelta(days=n * (7 if unit == "w" else 1))
        )
    else:
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise InputError(
                f"--expires: expected a duration like 30d, 12h, 2w or a date YYYY-MM-DD "
                f"(got {value[:40]!r})"
            ) from None
        when = day + timedelta(days=1) - timedelta(microseconds=1)
    if when <= now:
        raise InputError(f"--expires: {value} is not in the future")
    if when > now + timedelta(days=MAX_EXPIRY_DAYS):
        raise InputError(f"--expires: at most {MAX_EXPIRY_DAYS} days ahead (got {value})")
    return _iso(when)


def create_token(
    store: AccessStore,
    name: str,
    role: Role | str,
    *,
    teams: Iterable[str] = (),
    expires: str | None = None,
    actor: str,
    now: datetime | None = None,
) -> TokenCreated:
    """A new token; its secret is in the answer, and nowhere else, ever."""
    try:
        check_name(name, "token name")
        team_list = sorted({check_name(t, "--team") for t in teams})
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        the_role = Role(role)
    except ValueError:
        raise InputError(
            f"--role: unknown role {str(role)[:40]!r} (choose from viewer, operator, admin)"
        ) from None
    now = now or datetime.now(UTC)
    info = TokenInfo(
        name=name,
        role=the_role,
        teams=team_list,
        created=_iso(now),
        expires=parse_expiry(expires, now),
    )
    secret = PREFIX + secrets.token_urlsafe(32)
    store.add_token(info, hash_secret(secret), actor=actor)
    return TokenCreated(token=info, secret=secret)


def verify_token(store: AccessStore, secret: str, *, now: datetime | None = None) -> Principal:
    """The principal a token secret stands for, or `AuthenticationError` saying why
    (garbled, unknown, revoked, expired) — never repeating the secret."""
    if not SECRET_RE.match(secret or ""):
        raise AuthenticationError("garbled token")
    info = store.token_by_hash(hash_secret(secret))
    if info is None:
        raise AuthenticationError("unknown token")
    principal = f"token:{info.name}"
    if info.revoked is not None:
        raise AuthenticationError(f"token {info.name} was revoked", principal=principal)
    at = now or datetime.now(UTC)
    if _iso(at) >= info.expires:
        raise AuthenticationError(f"token {info.name} expired", principal=principal)
    last = info.last_used
    if last is None or _iso(at - timedelta(seconds=TOUCH_INTERVAL_S)) > last:
        store.touch_token(info.name, _iso(at))
    return Principal(name=principal, role=info.role, teams=tuple(info.teams), via="token")


def revoke_token(store: AccessStore, name: str, *, actor: str) -> TokenInfo:
    return store.revoke_token(name, actor=actor)


def list_tokens(store: AccessStore) -> list[TokenInfo]:
    """Every token, by name: never a secret or a hash."""
    return store.list_tokens()
