"""OIDC/JWT bearer tokens, verified with PyJWT against an issuer's JWKS (a file, or an
HTTPS URL fetched and cached by `jwt.PyJWKClient`).

Only asymmetric algorithms are accepted (never `none`, never HS*: a verifier holding a
public key must not accept a MAC made with it); `iss`, `aud`, `exp` and `sub` are
required, with 30 s of leeway for clock skew. The role comes from a configurable claim
(`maas_role`); a missing or unknown role makes a viewer. Teams come from another claim
(`groups`): a list of names (or one name); names that are not valid team names are left
out.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from maas_lib.access.models import NAME_RE, Role
from maas_lib.access.principal import Principal
from maas_lib.errors import AuthenticationError, InputError

#: The algorithms a token may be signed with: asymmetric only.
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
#: The public key type each algorithm family verifies with.
_KEY_TYPES = {"RS": rsa.RSAPublicKey, "PS": rsa.RSAPublicKey, "ES": ec.EllipticCurvePublicKey}
LEEWAY_S = 30.0
#: A JWT's size limit (a header holds it anyway; this bounds the work on garbage).
MAX_JWT_BYTES = 16 * 1024


@dataclass(frozen=True)
class JwtSettings:
    """`maasctl serve --jwt-issuer --jwt-audience --jwks [--jwt-role-claim]
    [--jwt-teams-claim]`."""

    issuer: str
    audience: str
    jwks: str  # a file path, or an https:// URL (http:// on a loopback address only)
    role_claim: str = "maas_role"
    teams_claim: str = "groups"
    leeway: float = LEEWAY_S


def _is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not loopback:
        raise InputError(f"--jwks: {url} must be https:// (http:// only on a loopback address)")


def _load_file(path: str) -> jwt.PyJWKSet:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--jwks {path}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
        keys = [k for k in data["keys"] if isinstance(k, dict) and k.get("kty") != "oct"]
        return jwt.PyJWKSet(keys)
    except (ValueError, KeyError, TypeError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
        raise InputError(f"--jwks {path}: not a usable JWK set ({exc})") from None


class JwtVerifier:
    """Verifies bearer JWTs for one issuer; `verify(token) -> Principal`."""

    def __init__(self, settings: JwtSettings):
        if not settings.issuer or not settings.audience:
            raise InputError("--jwt-issuer and --jwt-audience are both needed for JWTs")
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if _is_url(settings.jwks):
            _check_url(settings.jwks)
            self._client = jwt.PyJWKClient(settings.jwks, cache_keys=True, lifespan=300, timeout=10)
        else:
            self._keys = _load_file(settings.jwks)

    def _key(self, token: str, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise AuthenticationError("cannot fetch the issuer's JWKS") from None
            except jwt.PyJWKClientError:
                raise AuthenticationError("JWT signed with an unknown key") from None
        assert self._keys is not None
        candidates = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if kid is None and len(self._keys.keys) != 1:
            raise AuthenticationError("JWT names no key (kid) and the JWKS has several")
        if not candidates:
            raise AuthenticationError("JWT signed with an unknown key")
        return candidates[0].key

    def verify(self, token: str) -> Principal:
        """The principal a JWT stands for, or `AuthenticationError` saying why."""
        if len(token) > MAX_JWT_BYTES:
            raise AuthenticationError("JWT too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("garbled JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthenticationError(f"JWT algorithm {str(alg)[:20]!r} is not accepted")
        key = self._key(token, header)
        if not isinstance(key, _KEY_TYPES[alg[:2]]):
            raise AuthenticationError(f"JWT algorithm {alg} does not fit its key's type")
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["iss", "aud", "exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("JWT expired") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("JWT from another issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("JWT for another audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"JWT lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("JWT signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid JWT ({type(exc).__name__})") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 120 or not sub.isprintable():
            raise AuthenticationError("JWT subject (sub) is not a usable name")
        if any(c.isspace() for c in sub):
            raise AuthenticationError("JWT subject (sub) is not a usable name")
        return Principal(
            name=f"jwt:{sub}",
            role=_role(claims.get(s.role_claim)),
            teams=_teams(claims.get(s.teams_claim)),
            via="jwt",
        )


def _role(value: Any) -> Role:
    try:
        return Role(value) if isinstance(value, str) else Role.VIEWER
    except ValueError:
        return Role.VIEWER


def _teams(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(t for t in items if isinstance(t, str) and NAME_RE.match(t))
