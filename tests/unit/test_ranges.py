"""Every duration and count a submitter or an operator gives has a range: values outside
it (NaN, infinities, 1e20, negatives) are refused by the models every front end shares."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from maas_lib.bmc import BmcSettings
from maas_lib.errors import InputError
from maas_lib.fleet import parse_policy, parse_scheduler_settings
from maas_lib.models import BatchPolicy
from maas_lib.scheduler.settings import SchedulerSettings

MODELS: list[type[BaseModel]] = [BatchPolicy, SchedulerSettings, BmcSettings]
NUMERIC = [
    (model, name)
    for model in MODELS
    for name, f in model.model_fields.items()
    if f.annotation in (int, float, int | None, float | None)
]


def bounds(model: type[BaseModel], name: str) -> tuple[float, float]:
    low = high = None
    for m in model.model_fields[name].metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        low = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
        high = getattr(m, "lt", None) if getattr(m, "lt", None) is not None else high
    assert low is not None and high is not None, f"{model.__name__}.{name} has no range"
    return low, high


def test_every_number_is_found():
    names = {name for _, name in NUMERIC}
    assert {"pause", "canary", "claim_ttl", "poll", "power_timeout", "retries", "deadline"} <= names


@pytest.mark.parametrize(("model", "name"), NUMERIC, ids=lambda v: getattr(v, "__name__", v))
def test_every_number_has_a_bounded_documented_range(model, name):
    low, high = bounds(model, name)
    assert 0 <= low < high <= 100_000
    assert model.model_fields[name].description, f"{model.__name__}.{name} is undocumented"


@pytest.mark.parametrize(("model", "name"), NUMERIC, ids=lambda v: getattr(v, "__name__", v))
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.sampled_from([math.nan, math.inf, -math.inf, 1e20, 99999999999999999999, -1]),
    )
)
def test_a_number_is_accepted_only_inside_its_range(model, name, value):
    low, high = bounds(model, name)
    try:
        got = getattr(model.model_validate({name: value}), name)
    except ValidationError:
        return
    assert math.isfinite(got) and low <= got <= high


@given(
    text=st.one_of(
        st.sampled_from(["99999999999999999999", "100001", "1e20", "nan", "inf", "-1", "101%"]),
        st.integers(100_001, 10**40).map(str),
        st.integers(101, 10**40).map(lambda n: f"{n}%"),
    )
)
def test_host_counts_out_of_range_are_refused_naming_the_option(text):
    for option in ("batch_size", "max_failures", "max_unavailable"):
        with pytest.raises(InputError) as exc:
            parse_policy(**{option: text})
        assert str(exc.value).startswith(f"--{option.replace('_', '-')}:")


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({"claim_ttl": math.inf}, "--claim-ttl:"),
        ({"poll": 1e20}, "--poll:"),
        ({"power_timeout": 1e20}, "--power-timeout:"),
        ({"timeout": math.inf}, "--timeout:"),
        ({"retries": 99999999999999999999}, "--retries:"),
        ({"hook_timeout": math.nan}, "--hook-timeout:"),
    ],
)
def test_scheduler_settings_out_of_range_name_the_option(fields, option):
    with pytest.raises(InputError) as exc:
        parse_scheduler_settings(**fields)
    assert str(exc.value).startswith(option)


def test_a_stored_policy_out_of_range_still_loads_and_says_why():
    ok = BatchPolicy.from_stored('{"pause": 5, "batch_size": "2"}')
    assert ok.stored_problem is None and ok.pause == 5
    bad = BatchPolicy.from_stored('{"pause": 1e20, "batch_size": "2"}')
    assert bad.stored_problem is not None and bad.stored_problem.startswith("pause:")
    assert str(bad.batch_size) == "2" and bad.pause == 0.0  # the usable fields are kept
    junk = BatchPolicy.from_stored("not json")
    assert junk.stored_problem is not None and junk.stored_problem.startswith("policy:")
