"""What the store keeps for access control: roles, API tokens (never their secrets),
pool ownership grants and audit records. Leaf models: the store fills them."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

#: A team or token name: what `--team` and `tokens create NAME` accept.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Outcome(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"


def check_name(value: str, what: str) -> str:
    """`value` if it is a valid team/token name, else ValueError naming `what`."""
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what}: not a valid name (letters, digits, '.', '_', '@', '-'; at most 64, "
            f"starting with a letter or digit; got {value[:80]!r})"
        )
    return value


class TokenInfo(BaseModel, defer_build=True):
    """An API token as `tokens list` shows it: never its secret, never its hash."""

    name: str
    role: Role
    teams: list[str] = Field(default_factory=list)
    created: str
    expires: str
    revoked: str | None = None
    last_used: str | None = None


class TokenCreated(BaseModel, defer_build=True):
    """What `tokens create` answers, once: the token and its secret."""

    token: TokenInfo
    secret: str


class PoolGrant(BaseModel, defer_build=True):
    """Team `team` owns pool `pool`; `destructive`: it may also wipe and decommission."""

    team: str
    pool: str
    destructive: bool = False

    @field_validator("team")
    @classmethod
    def _team(cls, v: str) -> str:
        return check_name(v, "team")


class AuditEntry(BaseModel, defer_build=True):
    """One audit record to write: who (`principal`), did what (`verb`) to what (`target`),
    the `decision` and why (`reason`), and details (JSON; never a secret)."""

    principal: str
    verb: str
    target: str | None = None
    decision: Outcome
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditRecord(AuditEntry):
    """An audit record as read back."""

    id: int
    at: str
