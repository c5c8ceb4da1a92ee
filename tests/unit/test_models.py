import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from maas_lib.models import Amount, BatchPolicy, BmcProtocol, HostSpec


@given(st.integers(min_value=0, max_value=10**6), st.booleans())
def test_amount_round_trips_through_its_text_form(value, percent):
    text = f"{value}%" if percent else str(value)
    amount = Amount.model_validate(text)
    assert (amount.value, amount.percent) == (value, percent)
    assert str(amount) == text
    assert Amount.model_validate(amount.model_dump()) == amount


@pytest.mark.parametrize("bad", ["-1", "1.5", "ten", "%", "5%%", "", True])
def test_amount_rejects_malformed_text(bad):
    with pytest.raises(ValidationError):
        Amount.model_validate(bad)


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=0, max_value=5000))
def test_share_rounding_brackets_the_exact_share(percent, total):
    amount = Amount.model_validate(f"{percent}%")
    exact = total * percent / 100
    assert amount.floor_of(total) <= exact <= amount.ceil_of(total)
    assert amount.ceil_of(total) - amount.floor_of(total) <= 1


def test_policy_defaults_are_conservative():
    p = BatchPolicy()
    assert str(p.batch_size) == "10%"
    assert str(p.max_failures) == "5%"
    assert p.max_unavailable is None
    assert p.canary == 0
    assert p.on_overlap == "drop"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("batch_size", "0", "at least 1"),
        ("batch_size", "0%", "at least 1"),
        ("batch_size", "101%", "cannot exceed 100%"),
        ("max_failures", "101%", "cannot exceed 100%"),
        ("max_unavailable", "0", "at least 1"),
        ("canary", -1, "greater than or equal to 0"),
        ("pause", -5, "greater than or equal to 0"),
    ],
)
def test_policy_rejects_out_of_range_values(field, value, words):
    with pytest.raises(ValidationError, match=words):
        BatchPolicy.model_validate({field: value})


def test_policy_allows_zero_failures_meaning_stop_on_first():
    assert BatchPolicy(max_failures="0").max_failures.value == 0


def _host(**kw):
    return HostSpec.model_validate({"name": "h1", "pool": "p", "bmc_address": "10.0.0.1", **kw})


def test_protocol_defaults_from_address_form():
    assert _host().bmc_protocol is BmcProtocol.IPMI
    assert _host(bmc_address="https://bmc.example/").bmc_protocol is BmcProtocol.REDFISH


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "fe80::1", "bmc-01.lab.example", "https://10.0.0.9:8443", "bmc"]
)
def test_accepts_real_bmc_addresses(address):
    assert _host(bmc_address=address).bmc_address == address


@pytest.mark.parametrize(
    "address", ["10.0.0.256", "bmc_01", "https://", "ftp://bmc", "two words", "https://h:99999"]
)
def test_rejects_bad_bmc_addresses(address):
    with pytest.raises(ValidationError):
        _host(bmc_address=address)


def test_ipmi_with_url_is_rejected():
    with pytest.raises(ValidationError, match="ipmi BMC takes an IP address"):
        _host(bmc_address="https://bmc.example", bmc_protocol="ipmi")


def test_fallback_protocol_needs_an_address():
    with pytest.raises(ValidationError, match="bmc_fallback_address"):
        _host(bmc_fallback_protocol="redfish")
    h = _host(bmc_fallback_address="https://bmc.example")
    assert h.bmc_fallback_protocol is BmcProtocol.REDFISH
