"""Wall-clock timestamps as UTC ISO-8601 strings (they sort lexically in every store)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
