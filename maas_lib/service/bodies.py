"""The JSON bodies the API accepts. Only their shape is checked here (types, no unknown
field); values are checked by the same `Fleet` code as the CLI's options, with the same
messages."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from maas_lib.patterns import is_glob

#: A host name or glob as the API takes it: printable ASCII without spaces, at most as
#: long as a DNS name (registered host names are ASCII; anything else matches nothing
#: but could still mislead whoever reads the pattern in the audit log).
_PATTERN_RE = re.compile(r"[!-~]{1,253}")


def _pattern(value: str) -> str:
    if not _PATTERN_RE.fullmatch(value):
        raise ValueError(
            "a host name or glob: 1 to 253 printable ASCII characters, no spaces "
            f"(got {len(value)} characters)"
        )
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]
#: Distinct globs one submission may hold: each is matched against the registered hosts
#: on its own, so a body of 8 MiB of distinct globs held a worker for minutes (names are
#: looked up together, and a body may hold some 250,000 of them).
MAX_GLOBS = 1000


class SubmitBody(BaseModel):
    """A submission (POST /api/v1/requests) or its dry run (POST /api/v1/plan).

    No server-side paths: hosts are named by `patterns` only (no hosts file), and no hook
    playbook may be named (a hook is code the server would run). The submitter recorded
    is the authenticated principal, never a name in the body."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as sent: no "3" for 3

    action: str = Field(description="power-on, power-off, power-cycle, reboot, reimage, ...")
    patterns: list[Pattern] = Field(description="host names or shell-style globs")
    image: str | None = Field(default=None, description="image to install (reimage, wipe)")
    batch_size: str | int | None = Field(default=None, description="N or N%")
    max_failures: str | int | None = Field(default=None, description="N or N%")
    max_unavailable: str | int | None = Field(default=None, description="N or N%")
    canary: int | None = None
    pause: float | None = None
    on_overlap: str | None = Field(default=None, description="drop or wait")

    @field_validator("patterns")
    @classmethod
    def _few_globs(cls, patterns: list[str]) -> list[str]:
        if len(patterns) <= MAX_GLOBS:  # no more distinct globs than patterns
            return patterns
        globs = len({p for p in patterns if is_glob(p)})
        if globs > MAX_GLOBS:
            raise ValueError(
                f"at most {MAX_GLOBS} distinct globs in one submission (got {globs}); "
                "name the hosts instead"
            )
        return patterns

    def policy_fields(self) -> dict[str, object]:
        """The batch-policy options as `Fleet.submit` takes them (unset ones left out)."""
        names = ("batch_size", "max_failures", "max_unavailable", "canary", "pause", "on_overlap")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
