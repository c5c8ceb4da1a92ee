"""What a `maasctl serve` process is configured with (its options, checked once)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The largest request body read (8 MiB: a submission naming some 250,000 hosts).
MAX_BODY_BYTES = 8 * 1024 * 1024


class ServiceSettings(BaseModel, defer_build=True):
    """The app's settings. Several processes with the same settings may serve one
    PostgreSQL database: nothing here is state, and the app keeps none of its own but the
    rate limiter's counters (per process: N processes allow up to N x `rate_limit`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str | None = Field(
        default=None, description="the job-queue store's URL or path (None: $MAAS_DB)"
    )
    rate_limit: float = Field(
        default=20.0,
        gt=0,
        le=100_000,
        allow_inf_nan=False,
        description="calls per second per principal (token bucket, burst 2 x this), and per "
        "client address for failed authentications",
    )
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES)
    progress_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="how often a progress stream reads its request again",
    )
    keepalive_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="a progress stream's keep-alive comment after this long without an event",
    )
    max_streams: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="progress streams one principal may hold open at once (per process); "
        "one more is answered 429",
    )
    jwt: dict[str, str] | None = Field(
        default=None,
        description="JWT (OIDC) verification: issuer, audience, jwks, role_claim, "
        "teams_claim (maas_lib.access.jwt_verify.JwtSettings); None: API tokens only",
    )
    pool_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="store connections in use at once (further calls wait their turn), "
        "and kept idle for reuse",
    )
