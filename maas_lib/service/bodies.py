"""The JSON bodies the API accepts. Only their shape is checked here (types, no unknown
field); values are checked by the same `Fleet` code as the CLI's options, with the same
messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SubmitBody(BaseModel):
    """A submission (POST /api/v1/requests) or its dry run (POST /api/v1/plan).

    No server-side paths: hosts are named by `patterns` only (no hosts file), and no hook
    playbook may be named (a hook is code the server would run). The submitter recorded
    is the authenticated principal, never a name in the body."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as sent: no "3" for 3

    action: str = Field(description="power-on, power-off, power-cycle, reboot, reimage, ...")
    patterns: list[str] = Field(description="host names or shell-style globs")
    image: str | None = Field(default=None, description="image to install (reimage, wipe)")
    batch_size: str | int | None = Field(default=None, description="N or N%")
    max_failures: str | int | None = Field(default=None, description="N or N%")
    max_unavailable: str | int | None = Field(default=None, description="N or N%")
    canary: int | None = None
    pause: float | None = None
    on_overlap: str | None = Field(default=None, description="drop or wait")

    def policy_fields(self) -> dict[str, object]:
        """The batch-policy options as `Fleet.submit` takes them (unset ones left out)."""
        names = ("batch_size", "max_failures", "max_unavailable", "canary", "pause", "on_overlap")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
