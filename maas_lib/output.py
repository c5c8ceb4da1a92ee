"""Rendering for the CLI: one JSON document on stdout under --json, rich tables otherwise."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from maas_lib.serialize import to_jsonable

__all__ = ["emit_json", "emit_renderable", "emit_table", "format_counts", "to_jsonable"]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def emit_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    # rich only when something is drawn: --json output and --help do without it.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # The title, like every cell, is plain text: it may name a request's data.
    table = Table(
        title=None if title is None else Text(title), show_edge=False, header_style="bold"
    )
    for col in columns:
        table.add_column(col)
    for row in rows:
        # Cells are data (BMC messages, host names): plain Text, never parsed as markup.
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    # Piped output (logs, CI, `| less`) gets room for whole host names and reasons.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
    Console(width=width).print(table)


def emit_renderable(renderable: Any) -> None:
    """Print any rich renderable (progress bars, grouped tables) to stdout."""
    from rich.console import Console  # rich only when something is drawn

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
    Console(width=width).print(renderable)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no hosts"
