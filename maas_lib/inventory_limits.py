"""Size and YAML-alias limits checked on inventory files before ansible-core parses them.

ansible-core resolves YAML aliases into shared objects and then walks (and copies) every
variable, so a few kilobytes of nested anchors ("billion laughs") take minutes and
gigabytes. Each file an inventory source would load is checked first: a regular file of
at most `MAX_FILE_BYTES`, and, when it holds anchors, a YAML event scan (no objects built)
that adds up how many nodes its aliases expand to. ansible-core still does the parsing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from maas_lib.errors import InputError

#: The largest inventory file read (64 MiB; a 20,000-host YAML inventory is ~2 MiB).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Nodes that YAML aliases may add to one file when expanded (each alias counts as the
#: whole node it names, nested aliases multiplied out): this many, or `ALIAS_RATIO` per
#: node written in the file if that is more (a `<<: *defaults` on every host is fine).
MAX_ALIAS_NODES = 100_000
ALIAS_RATIO = 10
#: Where ansible-core also looks for variables next to an inventory source.
_VARS_DIRS = ("group_vars", "host_vars")


def check_inventory_sources(sources: Sequence[str]) -> None:
    """Raise `InputError` if a file any of `sources` would load breaks a limit."""
    for path in _files(sources):
        _check_file(path)


def _files(sources: Sequence[str]) -> Iterator[Path]:
    seen: set[Path] = set()
    for source in sources:
        root = Path(source)
        roots = [root] if root.is_dir() else [root, *(root.parent / d for d in _VARS_DIRS)]
        for top in roots:
            for path in _walk(top):
                if path not in seen:
                    seen.add(path)
                    yield path


def _walk(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        if top.exists() or top.is_symlink():
            yield top
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _check_file(path: Path) -> None:
    try:
        st = path.stat()  # follows symlinks, as ansible-core does
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"inventory {path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise InputError(f"inventory {path}: larger than {MAX_FILE_BYTES // 2**20} MiB")
        if os.access(path, os.X_OK):
            return  # an inventory script: run by ansible-core, not read
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"inventory {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:  # grew since stat
        raise InputError(f"inventory {path}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    if b"&" in data and b"*" in data:  # no anchor or no alias: nothing to expand
        written, expanded = alias_expansion(data)
        if expanded > max(MAX_ALIAS_NODES, ALIAS_RATIO * written):
            raise InputError(
                f"inventory {path}: YAML aliases expand to {expanded:,} nodes, more than "
                f"{MAX_ALIAS_NODES:,} or {ALIAS_RATIO} per node written (nested anchors?)"
            )


def alias_expansion(data: bytes) -> tuple[int, int]:
    """(nodes written, nodes its aliases expand to) of a YAML stream, counted from its
    events: linear in its size, whatever the aliases multiply to. For text that is not
    YAML (INI, TOML: ansible-core judges those), what was counted before the error."""
    import yaml  # PyYAML (~15 ms) only when an inventory is read

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    anchors: dict[str, int] = {}
    opened: list[str | None] = []  # the anchor of each open collection
    sizes: list[int] = []  # and the nodes it holds so far
    added = written = 0
    try:
        for event in yaml.parse(data, Loader=loader):
            size = 0
            if isinstance(event, yaml.AliasEvent):
                size = anchors.get(event.anchor, 1)
                added += size
                written += 1
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                written += 1
                if event.anchor:
                    anchors[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                opened.append(event.anchor)
                sizes.append(1)
                written += 1
            elif isinstance(event, yaml.CollectionEndEvent) and sizes:
                anchor, size = opened.pop(), sizes.pop()
                if anchor:
                    anchors[anchor] = size
            if size and sizes:
                sizes[-1] += size
    except yaml.YAMLError:
        pass  # not YAML (or not valid YAML): ansible-core says so, or reads it as INI
    return written, added
