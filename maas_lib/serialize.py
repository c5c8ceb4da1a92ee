"""The one serializer of library results to JSON-ready data: what `maasctl --json`, the
Ansible modules and `Fleet` methods that return documents all print or return."""

from __future__ import annotations

import dataclasses
import enum
import sys
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Models, dataclasses, enums, lists and dicts of them as plain JSON values.

    An object with `public()` (a `HostRecord`, a `BmcResult`) is what that returns; other
    pydantic models dump in JSON mode, other dataclasses give their fields."""
    public = getattr(obj, "public", None)
    if callable(public):
        return public()
    # No pydantic model exists before pydantic is imported: `--json` of a plain result
    # (and `maasctl --help`, which imports this) need not import it.
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj
