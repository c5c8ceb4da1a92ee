"""Failure classes from the exceptions pyghmi and sushy actually raise (no peers needed)."""

import pytest
import requests
from pyghmi import exceptions as pexc
from sushy import exceptions as sexc

from maas_lib.bmc.base import BmcTarget, redfish_base_url
from maas_lib.bmc.ipmi import classify_ipmi_error
from maas_lib.bmc.redfish import classify_redfish_error
from maas_lib.models import HostSpec


@pytest.mark.parametrize(
    ("exc", "error_class", "transient"),
    [
        (pexc.IpmiException("Incorrect password provided"), "auth", False),
        (pexc.IpmiException("Unauthorized name in RAKP2"), "auth", False),
        (pexc.IpmiException(None), "unreachable", False),
        (pexc.IpmiException("timeout"), "unreachable", False),
        (pexc.IpmiException("Node Busy", 0xC0), "bmc_error", True),
        (pexc.IpmiException("Timeout while processing command"), "bmc_error", True),
        (pexc.IpmiException("Invalid command", 0xC1), "unsupported", False),
        (pexc.UnsupportedFunctionality("no"), "unsupported", False),
        (pexc.IpmiException("Command not supported in present state", 0xD5), "bmc_error", False),
        (OSError(101, "Network is unreachable"), "unreachable", False),
    ],
)
def test_ipmi_error_classes(exc, error_class, transient):
    err = classify_ipmi_error(exc, "ipmi://x:623")
    assert (err.error_class, err.transient, err.via) == (error_class, transient, "ipmi://x:623")


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception:
            raise outer from None
    except Exception as exc:
        exc.__context__ = inner
        return exc


class _Resp:
    def __init__(self, status):
        self.status_code = status
        self.json = lambda: {}
        self.text = ""
        self.headers = {}
        self.request = None


@pytest.mark.parametrize(
    ("exc", "error_class", "transient"),
    [
        (
            _chained(
                sexc.ConnectionError(url="u", error="e"),
                requests.exceptions.SSLError("certificate verify failed"),
            ),
            "tls",
            False,
        ),
        (
            _chained(
                sexc.ConnectionError(url="u", error="e"),
                requests.exceptions.ConnectionError("[Errno 111] Connection refused"),
            ),
            "unreachable",
            False,
        ),
        (
            _chained(
                sexc.ConnectionError(url="u", error="e"),
                requests.exceptions.ReadTimeout("read timed out"),
            ),
            "timeout",
            False,
        ),
        (
            _chained(
                sexc.ConnectionError(url="u", error="e"),
                requests.exceptions.ConnectTimeout("connect timed out"),
            ),
            "unreachable",
            False,
        ),
        (sexc.HTTPError("POST", "u", _Resp(429)), "bmc_error", True),
        (sexc.AccessError("GET", "u", _Resp(401)), "auth", False),
        (sexc.HTTPError("POST", "u", _Resp(501)), "unsupported", False),
        (sexc.HTTPError("POST", "u", _Resp(503)), "bmc_error", True),
        (sexc.HTTPError("POST", "u", _Resp(409)), "bmc_error", True),
        (sexc.BadRequestError("POST", "u", _Resp(400)), "bmc_error", False),
        (
            sexc.InvalidParameterValueError(parameter="p", value="v", valid_values="x"),
            "unsupported",
            False,
        ),
    ],
)
def test_redfish_error_classes(exc, error_class, transient):
    err = classify_redfish_error(exc, "https://bmc")
    assert (err.error_class, err.transient) == (error_class, transient)


def test_unreachable_message_is_the_socket_reason():
    exc = _chained(
        sexc.ConnectionError(url="u", error="e"),
        requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='10.0.0.1', port=443): Max retries exceeded (Caused by "
            "NewConnectionError('<x>: Failed to establish a new connection: [Errno 111] "
            "Connection refused'))"
        ),
    )
    assert str(classify_redfish_error(exc, "v")) == "cannot reach BMC: Connection refused"


@pytest.mark.parametrize(
    ("address", "port", "url"),
    [
        ("bmc.example", None, "https://bmc.example"),
        ("bmc.example", 8443, "https://bmc.example:8443"),
        ("https://bmc.example/redfish/v1", None, "https://bmc.example"),
        ("http://10.0.0.1:8000", 9000, "http://10.0.0.1:8000"),
        ("fe80::1", None, "https://[fe80::1]"),
    ],
)
def test_redfish_base_url(address, port, url):
    assert redfish_base_url(address, port) == url


def test_target_from_host_with_fallback():
    host = HostSpec(
        name="h",
        pool="p",
        bmc_address="10.0.0.1",
        bmc_fallback_address="bmc-h",
        bmc_fallback_port=8443,
        bmc_system="/redfish/v1/Systems/1",
    )
    t = BmcTarget.from_host(host)
    assert (t.primary.protocol, t.primary.port) == ("ipmi", 623)
    assert t.primary.label == "ipmi://10.0.0.1:623"
    assert t.fallback is not None and t.fallback.protocol == "ipmi"
    h2 = host.model_copy(update={"bmc_fallback_protocol": "redfish"})
    t2 = BmcTarget.from_host(h2)
    assert t2.fallback.label == "https://bmc-h:8443/redfish/v1/Systems/1"


@pytest.mark.parametrize(
    ("system", "state", "raw"),
    [
        ({"PowerState": "On"}, "on", None),
        ({"PowerState": "Off"}, "off", None),
        ({"PowerState": "PoweringOn"}, "powering_on", None),
        ({"PowerState": "PoweringOff"}, "powering_off", None),
        ({}, "unknown", "absent"),
        ({"PowerState": None}, "unknown", "null"),
        ({"PowerState": "Paused"}, "unknown", "Paused"),
        ({"PowerState": "off"}, "unknown", "off"),  # the schema's enum is case-sensitive
        ({"PowerState": 1}, "unknown", "1"),
        ({"PowerState": "On\x1b[2J" + "x" * 80}, "unknown", "On?[2J" + "x" * 33 + "…"),
    ],
)
def test_redfish_power_state_is_on_or_off_only_when_the_bmc_says_so(system, state, raw):
    from maas_lib.bmc.redfish import power_reading

    reading = power_reading(system)
    assert (str(reading.state), reading.raw) == (state, raw)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("3", 3.0), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_header(header, seconds):
    from maas_lib.bmc.redfish_http import retry_after_seconds

    response = requests.Response()
    if header is not None:
        response.headers["Retry-After"] = header
    assert retry_after_seconds(response) == seconds


def _login_failure(text: str, status: tuple[str, int] | None) -> Exception:
    exc = pexc.IpmiException(text)
    exc.login_status = status  # what pyghmi_fixes puts on a failed login
    return exc


SLOTS_FULL = "Insufficient resources to create new session (wait for existing sessions to timeout)"


@pytest.mark.parametrize(
    ("exc", "error_class", "transient"),
    [
        # Out of session slots is a busy BMC (retried), not an unreachable one, whatever
        # words the message holds.
        (_login_failure(SLOTS_FULL, ("rmcp+", 0x01)), "bmc_error", True),
        (_login_failure(SLOTS_FULL, None), "bmc_error", True),
        (
            _login_failure("No session slot available", ("activate_session", 0x81)),
            "bmc_error",
            True,
        ),
        (_login_failure("Unauthorized name in RAKP2", ("rakp2", 0x0D)), "auth", False),
        (_login_failure("Invalid integrity check value", ("rakp4", 0x0F)), "auth", False),
        (_login_failure("Invalid user name", ("session_challenge", 0x81)), "auth", False),
        (_login_failure("No Cipher suite match", ("rmcp+", 0x11)), "unsupported", False),
        (pexc.IpmiException("timeout", 0xFFFF), "unreachable", False),
        (pexc.IpmiException("Insufficient privilege level", 0xD4), "auth", False),
        # An exception pyghmi raised while handling this BMC's reply: its own failure.
        (
            pexc.IpmiException("BMC reply could not be handled: TypeError: timeout"),
            "bmc_error",
            False,
        ),
    ],
)
def test_ipmi_failures_classified_by_status_and_completion_codes(exc, error_class, transient):
    err = classify_ipmi_error(exc, "ipmi://x:623")
    assert (err.error_class, err.transient) == (error_class, transient), err


@pytest.mark.parametrize(
    ("data", "state", "raw"),
    [
        (b"\x01\x00\x40", "on", None),
        (b"\x21\x10\x00\x00", "on", None),
        (b"\x00\x00\x00", "off", None),
        # A short or empty Get Chassis Status reply is no power state: never "off".
        (b"", "unknown", "chassis status reply empty"),
        (b"\x00", "unknown", "chassis status reply 00"),
        (b"\x01\x00", "unknown", "chassis status reply 0100"),
    ],
)
def test_ipmi_chassis_status_reading(data, state, raw):
    from maas_lib.bmc.ipmi import reading_from_chassis_status

    reading = reading_from_chassis_status(data)
    assert (str(reading.state), reading.raw) == (state, raw)
