"""What the API lets through: error details and log lines are one printable line whatever
a caller (or a stored row) holds; JSON bodies are parsed strictly; plain HTTP is served
on loopback addresses only."""

from __future__ import annotations

import json
import logging

import pytest

from maas_lib.errors import InputError
from maas_lib.service.errors import Redacting, one_line
from maas_lib.service.inputs import strict_json
from maas_lib.service.server import Listen, checked, tls_context
from maas_lib.sim.pki import make_pki


def test_a_detail_escapes_terminal_and_bidi_controls():
    # Found in review: ESC, NUL and U+202E went back to clients (and their terminals) as they were.
    detail = one_line("unknown host web01\x1b[2J\x00\u202emoc.live \ud800")
    assert detail == "unknown host web01\\x1b[2J\\x00\\u202emoc.live \\ud800"
    assert detail.isprintable()
    json.dumps(detail).encode("utf-8")  # a lone surrogate could not be encoded


def test_a_log_line_cannot_forge_another():
    record = logging.LogRecord(
        "maas_lib.service", logging.DEBUG, __file__, 1, "%s %s by %s", None, None
    )
    record.args = ("GET", "/api/v1/requests/1\nmaasctl: INFO: forged", "token:ops")
    assert Redacting().filter(record)
    assert record.getMessage() == "GET /api/v1/requests/1\\x0amaasctl: INFO: forged by token:ops"


def test_a_plain_body_parses_as_json_does():
    body = b'{"action": "reboot", "patterns": ["web0[1-3]"], "pause": -0.5, "canary": 2}'
    assert strict_json(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": 1, "a": 2}',
        b'{"a": 1e999}',
        b'"\\u0085"',
        b'"\xfe"',
        # Unescaped, in a body with no backslash at all (the parser's fast path): U+0085,
        # U+202E in a value, U+2066 in a key.
        '["\u0085"]'.encode(),
        '{"patterns": ["web01\u202e"]}'.encode(),
        '{"k\u2066": 1}'.encode(),
    ],
)
def test_strict_json_refuses_what_python_takes(body):
    json.loads(body.decode("latin-1"))  # Python's parser takes each of these
    with pytest.raises(json.JSONDecodeError):
        strict_json(body)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),  # all of 127.0.0.0/8 is this machine's
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),
        ("::ffff:127.0.0.1", False),  # v4-mapped: not taken on trust
        ("localhost.", False),  # a DNS name, resolved by whoever answers
        ("127.1", False),  # inet_aton shorthand: not an address ipaddress takes
        ("2130706433", False),
        ("ip6-localhost", False),
        ("fe80::1%lo", False),
    ],
)
def test_plain_http_is_for_loopback_addresses_only(host, loopback):
    listen = Listen(host=host, port=8080, insecure_http=True)
    if loopback:
        assert checked(listen) is listen
    else:
        with pytest.raises(InputError, match="not a loopback address"):
            checked(listen)


def test_a_certificate_without_its_key_is_named_as_such(tmp_path):
    """`serve --tls-cert cert.pem` without `--tls-key` (the key in another file) said
    "cannot load it: [SSL] PEM lib (_ssl.c:3926)", naming neither the key nor the option."""
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        (Listen(host="127.0.0.1", port=1, tls_cert=pki["cert"]), "no private key in it"),
        (
            Listen(host="127.0.0.1", port=1, tls_cert=pki["cert"], tls_key=pki["ca"]),
            "no private key in it",
        ),
        (
            Listen(host="127.0.0.1", port=1, tls_cert=tmp_path / "junk.pem", tls_key=pki["key"]),
            "no PEM certificate in it",
        ),
        (
            Listen(host="127.0.0.1", port=1, tls_cert=pki["ca"], tls_key=pki["key"]),
            "the key does not match the certificate",
        ),
    ]
    for listen, needle in cases:
        with pytest.raises(InputError) as err:
            tls_context(listen)
        assert needle in str(err.value), (listen, str(err.value))
        assert "_ssl.c" not in str(err.value) and "\n" not in str(err.value)
