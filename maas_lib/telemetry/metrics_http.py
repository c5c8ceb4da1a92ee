"""The HTTP(S) endpoint `maasctl metrics --serve` scrapes are answered on.

prometheus_client renders the registry; this module owns what is around it: only
`GET /metrics` is answered (any other path is 404), HTTP basic auth when configured,
TLS when a certificate is given, and one thread per connection with a socket timeout,
the TLS handshake done in that thread (a slow or plain-HTTP client holds up no one else).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from maas_lib.errors import InputError

log = logging.getLogger(__name__)

#: The one path answered.
METRICS_PATH = "/metrics"
#: Seconds a connection may sit idle (mid-handshake or mid-request) before it is dropped.
CLIENT_TIMEOUT_S = 30.0
#: The largest password file read.
MAX_PASSWORD_BYTES = 4096
#: Where `metrics --serve` reads the basic-auth password when no file is named.
PASSWORD_ENV = "MAAS_METRICS_PASSWORD"


class BasicAuth(BaseModel, defer_build=True):
    """The one user a scraper must authenticate as. The password is never logged."""

    model_config = ConfigDict(frozen=True)

    user: str = Field(min_length=1, max_length=256, pattern=r"^[^:\s\x00-\x1f]+$")
    password: SecretStr

    def allows(self, header: str | None) -> bool:
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(
                b":"
            )
        except (binascii.Error, ValueError):
            return False
        ok_user = hmac.compare_digest(user, self.user.encode())
        ok_password = hmac.compare_digest(password, self.password.get_secret_value().encode())
        return bool(sep) and ok_user and ok_password


class TlsFiles(BaseModel, defer_build=True):
    """A PEM certificate (chain) and its key (omitted: the key is in the certificate file)."""

    model_config = ConfigDict(frozen=True)

    certfile: Path
    keyfile: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise InputError(f"--tls-cert {self.certfile}: cannot load it: {reason}") from None
        return ctx


def read_password(path: str | Path | None) -> SecretStr:
    """The basic-auth password: the first line of `path`, else `$MAAS_METRICS_PASSWORD`
    (never a command-line argument: those are visible to every local user)."""
    if path is None:
        value = os.environ.get(PASSWORD_ENV, "")
        if not value:
            raise InputError(
                f"--auth-user needs a password: set {PASSWORD_ENV} or --auth-password-file"
            )
        return SecretStr(value)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise InputError(f"--auth-password-file {path}: {exc.strerror}") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise InputError(f"--auth-password-file {path}: larger than {MAX_PASSWORD_BYTES} bytes")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--auth-password-file {path}: not UTF-8 text") from None
    if not lines or not lines[0]:
        raise InputError(f"--auth-password-file {path}: empty")
    return SecretStr(lines[0])


def metrics_app(registry: Collector, auth: BasicAuth | None = None) -> Callable[..., Any]:
    """The WSGI app: 404 off `/metrics`, 401 without the right credentials."""
    inner = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: metrics are at {METRICS_PATH}\n".encode()]
        if auth is not None and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Basic realm="maas-lib metrics", charset="UTF-8"'),
                ],
            )
            return [b"unauthorized\n"]
        return inner(environ, start_response)  # type: ignore[no-any-return]

    return app


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake, a client gone: the scrape failed, not the server.
        log.debug("metrics: connection from %s failed", client_address, exc_info=True)


def start_metrics_server(
    registry: Collector,
    host: str,
    port: int,
    *,
    tls: TlsFiles | None = None,
    auth: BasicAuth | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Listen on host:port and answer scrapes from a daemon thread; `OSError` if the
    address cannot be bound, `InputError` if the certificate cannot be loaded."""
    context = tls.context() if tls is not None else None
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, addr = infos[0][0], infos[0][4][0]

    class Server(_Server):
        address_family = family

    httpd = make_server(addr, port, metrics_app(registry, auth), Server, _Handler)
    if context is not None:
        httpd.socket = context.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread


def server_security(
    certfile: str | None,
    keyfile: str | None,
    user: str | None,
    password_file: str | None,
) -> tuple[TlsFiles | None, BasicAuth | None]:
    """TLS and basic-auth settings from front-end options, checked (`InputError`)."""
    if keyfile and not certfile:
        raise InputError("--tls-key needs --tls-cert")
    if password_file and not user:
        raise InputError("--auth-password-file needs --auth-user")
    tls = TlsFiles(certfile=Path(certfile), keyfile=keyfile and Path(keyfile)) if certfile else None
    if tls is not None:
        tls.context()  # a certificate that does not load is an error now, not per scrape
    auth = None
    if user is not None:
        try:
            auth = BasicAuth(user=user, password=read_password(password_file))
        except ValidationError:
            raise InputError(
                f"--auth-user: a name without ':', spaces or control characters (got {user!r})"
            ) from None
    return tls, auth
