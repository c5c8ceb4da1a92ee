"""Who is calling: the identity every authorization decision and audit record names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from maas_lib.access.models import Role

#: How a principal authenticated.
Via = Literal["token", "jwt", "mtls", "local"]

#: What a principal's name may hold: what `submitted_by` accepts (printable, no space).
_NAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `name` is what the audit log and `submitted_by` record:
    `token:<token name>`, `jwt:<sub>`, `mtls:<CN>` or `local:<os user>`; `teams` are
    the teams it acts for (pool ownership is per team); `cert`, the client certificate's
    subject when the server requires one (recorded in the audit log)."""

    name: str
    role: Role
    teams: tuple[str, ...] = field(default_factory=tuple)
    via: Via = "token"
    #: The subject of the client certificate the call came with (mutual TLS), if any.
    cert: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"not a valid principal name: {self.name[:80]!r}")
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "teams", tuple(sorted(set(self.teams))))

    def at_least(self, role: Role) -> bool:
        return self.role.at_least(role)
