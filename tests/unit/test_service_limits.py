"""The service's pure pieces: the token bucket, the redaction of credentials, the one-line
validation detail."""

from __future__ import annotations

import io
import logging

from fastapi.exceptions import RequestValidationError

from maas_lib.service.errors import Redacting, _validation_detail, one_line, redact
from maas_lib.service.limits import RateLimiter

TOKEN = "maas_" + "Zk3_-q" * 7
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjYXJvbCJ9.c2lnbmF0dXJl"


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait():
    limiter = RateLimiter(rate=0.001, burst=3)  # a token every 1000 s: none refills here
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.waiting("a") > 900 and limiter.take("a") > 900
    assert limiter.take("b") == 0.0  # per key


def test_the_burst_is_twice_the_rate_and_at_least_one_call():
    assert RateLimiter(rate=20).burst == 40
    slow = RateLimiter(rate=0.001)  # 2 x rate would hold no call, ever
    assert slow.take("a") == 0.0 and slow.take("a") > 900


def test_waiting_takes_nothing():
    limiter = RateLimiter(rate=0.001, burst=1)
    assert [limiter.waiting("a") for _ in range(5)] == [0.0] * 5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


def test_credentials_are_redacted_from_details_and_log_records():
    redacted = redact(f"unknown state {TOKEN!r} and {JWT}")
    assert redacted == "unknown state '<redacted>' and <redacted>"
    assert one_line(f"a\nb {TOKEN}") == "a b <redacted>"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Redacting())
    log = logging.getLogger("test_service_limits")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"bad credential {TOKEN}")
        except ValueError as exc:
            log.error("GET /x?t=%s", JWT, exc_info=exc)
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "GET /x?t=<redacted>" in text and "ValueError: bad credential <redacted>" in text
    assert TOKEN not in text and JWT not in text


def test_a_validation_detail_names_the_first_problems_and_counts_the_rest():
    msg = "Input should be a valid string"
    errors = [{"loc": ("body", "patterns", i), "msg": msg} for i in range(1000)]
    detail = _validation_detail(RequestValidationError(errors))
    assert detail.startswith("body.patterns.0: Input should be a valid string; ")
    assert detail.endswith("(and 995 more)") and detail.count(";") == 4
