"""Host patterns: exact names or shell-style globs (`web*`, `n00[0-4]*`), fnmatch semantics."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from maas_lib.errors import InputError

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard; a store narrows its scan with it."""
    for i, c in enumerate(pattern):
        if c in _GLOB_CHARS:
            return pattern[:i]
    return pattern


def split_patterns(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split patterns into (exact names, globs), de-duplicated, order kept."""
    names: dict[str, None] = {}
    globs: dict[str, None] = {}
    for raw in patterns:
        p = raw.strip()
        if not p:
            raise InputError("empty host pattern")
        if any(c.isspace() for c in p):
            raise InputError(f"host pattern {p!r} contains whitespace")
        (globs if is_glob(p) else names)[p] = None
    return list(names), list(globs)


def glob_matches(pattern: str, candidates: Iterable[str]) -> list[str]:
    return [c for c in candidates if fnmatchcase(c, pattern)]
