"""Wall-clock timestamps as UTC ISO-8601 strings (they sort lexically in every store)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str) -> str:
    """`30m`, `24h`, `7d`, `2w` ago, or an ISO date/time (UTC if no zone) → ISO UTC string.

    Raises ValueError with a message fit for `--since: …`."""
    text = value.strip()
    expected = f"expected a duration like 30m, 24h, 7d or an ISO date/time (got {value!r})"
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])", text, re.ASCII)
    try:
        if m:
            delta = timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
            return _iso(datetime.now(UTC) - delta)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(expected) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return _iso(when.astimezone(UTC))
    except OverflowError:  # before year 1, or past 9999
        raise ValueError(f"{value[:40]!r} is out of range (years 1 to 9999)") from None


def _iso(when: datetime) -> str:
    # The year in four digits, so that every such string sorts as its time does.
    return f"{when.year:04d}-" + when.strftime("%m-%dT%H:%M:%S.%fZ")
