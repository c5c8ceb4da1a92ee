"""From a request's credential to a `Principal`: the one place a front end asks "who is
this?". Every failure is an `AuthenticationError` with a reason, and is audited (never
with the credential itself)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from maas_lib.access.models import AuditEntry, Outcome
from maas_lib.access.principal import Principal
from maas_lib.access.tokens import PREFIX
from maas_lib.errors import AuthenticationError

if TYPE_CHECKING:
    from maas_lib.access.jwt_verify import JwtVerifier
    from maas_lib.fleet import Fleet


def bearer(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer <credential>` header."""
    if not authorization:
        raise AuthenticationError("no credential (Authorization: Bearer <token>)")
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise AuthenticationError("expected Authorization: Bearer <token>")
    return credential.strip()


def authenticate(
    fleet: Fleet,
    authorization: str | None,
    *,
    jwt: JwtVerifier | None = None,
    client: str | None = None,
    client_cert: str | None = None,
) -> Principal:
    """The principal of an `Authorization` header's bearer credential: an API token
    (`maas_…`) or, if `jwt` is configured, a JWT. A failure is written to the audit log
    (verb `authenticate`, with the client address and certificate subject if given) and
    raised as `AuthenticationError`."""
    try:
        credential = bearer(authorization)
        if credential.startswith(PREFIX):
            principal = fleet.authenticate_token(credential)
        elif jwt is None:
            raise AuthenticationError("unknown token (not an API token; JWTs not configured)")
        elif credential.count(".") != 2:
            raise AuthenticationError("garbled token")
        else:
            principal = jwt.verify(credential)
        return replace(principal, cert=client_cert) if client_cert else principal
    except AuthenticationError as exc:
        detail = {k: v for k, v in (("client", client), ("client_cert", client_cert)) if v}
        fleet.record_audit(
            AuditEntry(
                principal=exc.principal or "anonymous",
                verb="authenticate",
                decision=Outcome.REFUSED,
                reason=exc.reason,
                detail=detail,
            )
        )
        raise
