"""`maas_lib.bmc.limits`: BMC settings as plain data, for `maasctl bmc status`'s lean
start, agree with `BmcSettings` (pydantic) — the same fields, defaults and ranges, and
`BmcValues.checked` accepts only what `BmcSettings` accepts, as the same values."""

from __future__ import annotations

import math
from dataclasses import asdict, fields

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from maas_lib.bmc import BmcSettings
from maas_lib.bmc.limits import FIELDS, BmcValues


def test_the_same_settings_in_the_same_order_with_the_same_defaults():
    assert [f.name for f in fields(BmcValues)] == list(BmcSettings.model_fields)
    assert asdict(BmcValues()) == BmcSettings().model_dump()
    assert BmcValues().operation_deadline == BmcSettings().operation_deadline
    values = {"timeout": 2.0, "connect_timeout": 1.0}
    assert BmcValues(**values).operation_deadline == BmcSettings(**values).operation_deadline


@pytest.mark.parametrize("name", list(FIELDS))
def test_the_model_declares_each_field_from_the_table(name):
    field, limit = BmcSettings.model_fields[name], FIELDS[name]
    assert field.default == limit.default
    assert field.description == limit.description
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("gt", "ge", "le") if hasattr(m, k)}
    table = {"gt": limit.gt, "ge": limit.ge, "le": limit.le}
    assert bounds == {k: v for k, v in table.items() if v is not None}


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0, 1, 2, 10, 60, 64, 3600, 3601, 4096, 4097, 86400, 0.5, math.nan, math.inf]),
)


@pytest.mark.parametrize("name", list(FIELDS))
@given(value=VALUES)
def test_checked_accepts_only_what_the_model_accepts_as_the_same_value(name, value):
    checked = BmcValues.checked(**{name: value})
    if checked is None:
        return  # BmcSettings judges it (and names the problem if it refuses it)
    assert asdict(checked) == BmcSettings(**{name: value}).model_dump()


def test_checked_refuses_what_the_model_refuses():
    for values in ({"concurrency": 0}, {"timeout": -1.0}, {"deadline": math.inf}):
        assert BmcValues.checked(**values) is None
        with pytest.raises(ValidationError):
            BmcSettings(**values)
