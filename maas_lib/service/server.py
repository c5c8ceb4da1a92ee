"""Running the app: uvicorn over TLS (plain HTTP only on loopback, on request), optional
client certificates, and a graceful stop on SIGTERM/SIGINT.

On a stop signal uvicorn stops accepting connections and lets the calls in flight finish
(up to `GRACE_S`); `stopping` is set at the same moment so progress streams end instead of
holding the shutdown open until the grace runs out.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import ipaddress
import json
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import h11
import uvicorn
from pydantic import BaseModel, ConfigDict
from uvicorn.protocols.http.h11_impl import H11Protocol

from maas_lib.errors import InputError
from maas_lib.service.balance import BalancedServer, Slots
from maas_lib.service.errors import Redacting

log = logging.getLogger("maas_lib.service")

#: Seconds calls in flight get to finish after a stop signal; then they are cancelled.
GRACE_S = 30.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 5
#: TLS 1.2's cipher suites: forward-secret key exchange with an AEAD cipher only (no CBC,
#: no static RSA, no SHA-1); TLS 1.3's own suites are all of that kind.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
#: What a request h11 cannot parse is answered, in the API's one error shape.
_BAD_HTTP = json.dumps(
    {
        "error": "bad_request",
        "detail": "invalid HTTP request (a malformed request line or header, or headers "
        "larger than 16 KiB)",
    }
).encode()
#: Seconds a closing TLS connection waits for the client's close_notify (asyncio's
#: default, 30 s, would let a client that never answers hold a graceful shutdown).
TLS_CLOSE_S = 2.0


class Listen(BaseModel, defer_build=True):
    """Where and how `maasctl serve` listens (its options, checked by `checked`)."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    insecure_http: bool = False

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{port or self.port}"


def is_loopback(host: str) -> bool:
    """An address that only this machine reaches: 127.0.0.0/8, ::1, or `localhost` when
    every address it resolves to is one of those."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    if host.lower() != "localhost":
        return False
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a[4][0]).is_loopback for a in found)


def checked(listen: Listen) -> Listen:
    """`listen` if it is a safe way to serve, else `InputError` naming the problem."""
    if listen.insecure_http:
        if listen.tls_cert or listen.tls_key or listen.client_ca:
            raise InputError("--insecure-http conflicts with --tls-cert, --tls-key and --client-ca")
        if not is_loopback(listen.host):
            raise InputError(
                f"--insecure-http: {listen.host} is not a loopback address; plain HTTP is "
                "served on 127.0.0.1, ::1 or localhost only (use --tls-cert/--tls-key)"
            )
        return listen
    if listen.tls_cert is None:
        raise InputError(
            "--tls-cert is required: the service speaks HTTPS (plain HTTP only with "
            "--insecure-http on a loopback address)"
        )
    return listen


def tls_context(listen: Listen) -> ssl.SSLContext:
    """The server's TLS context (TLS 1.2 or later); with `client_ca`, a client certificate
    signed by it is required on every connection."""
    assert listen.tls_cert is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(listen.tls_cert, listen.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(_cert_chain_problem(listen, exc)) from None
    if listen.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=listen.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(
                f"--client-ca {listen.client_ca}: cannot load it: {_reason(exc)}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _cert_chain_problem(listen: Listen, exc: OSError | ssl.SSLError) -> str:
    """One line naming what `load_cert_chain` refused: OpenSSL says "PEM lib" for a file
    without a certificate and for one without a key alike."""
    assert listen.tls_cert is not None
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return (
            f"--tls-cert {listen.tls_cert}, --tls-key {listen.tls_key}: "
            "the key does not match the certificate"
        )
    if isinstance(exc, ssl.SSLError) and "PEM lib" in str(exc):
        if b"-----BEGIN CERTIFICATE-----" not in _head(listen.tls_cert):
            return f"--tls-cert {listen.tls_cert}: no PEM certificate in it"
        if listen.tls_key is None:
            return (
                f"--tls-cert {listen.tls_cert}: no private key in it "
                "(name the key's file with --tls-key)"
            )
        return f"--tls-key {listen.tls_key}: no private key in it (a PEM private key)"
    option = "--tls-cert/--tls-key" if listen.tls_key else "--tls-cert"
    return f"{option} {listen.tls_cert}: cannot load it: {_reason(exc)}"


def _head(path: Path) -> bytes:
    """The first 1 MiB of `path`, or nothing if it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""


def _reason(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, telling the app each connection's client certificate as the
    ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_name"]`): uvicorn itself
    does not. On shutdown an idle TLS connection is dropped at once: closing it politely
    waits (up to `TLS_CLOSE_S`) for a close_notify an idle keep-alive client never sends,
    holding the whole shutdown that long."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        # Asked now: a TLS transport closed twice (the client's close, then ours) has
        # nothing left to ask at shutdown (get_extra_info raises AttributeError).
        self._tls = ssl_object is not None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if cert:
            self.app = _WithClientCert(self.app, _subject(cert))

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a request h11 refuses in text/plain; this, in the one shape."""
        response = h11.Response(
            status_code=400,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BAD_HTTP)).encode()),
                (b"connection", b"close"),
            ],
            reason=b"Bad Request",
        )
        for event in (response, h11.Data(data=_BAD_HTTP), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def shutdown(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        super().shutdown()
        if idle and self._tls:
            self.transport.abort()


def _subject(cert: dict[str, Any]) -> str:
    """The certificate subject's common name (`mtls:<CN>` names such a client)."""
    names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return names[-1] if names else ""


class _WithClientCert:
    def __init__(self, app: Any, name: str):
        self.app = app
        self.name = name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {
                **scope,
                "extensions": {
                    **scope.get("extensions", {}),
                    "tls": {"client_cert_name": self.name},
                },
            }
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn's server, also setting `stopping` on a stop signal, telling `on_ready` once it
    listens, and ending with a normal exit after a graceful stop (uvicorn re-raises the
    signal once it has stopped, which would end the process by that signal)."""

    def __init__(
        self,
        config: uvicorn.Config,
        stopping: threading.Event,
        on_ready: Callable[[int], None] | None,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        balance: tuple[Slots, int] | None = None,
    ):
        super().__init__(config)
        self.stopping = stopping
        self.on_ready = on_ready
        self.signals = signals
        self.balance = balance

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in self.signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if self.balance is not None and sockets:
            # `--workers`: this worker takes its share of the shared socket's connections.
            slots, index = self.balance

            async def balanced(
                factory: Callable[[], asyncio.BaseProtocol], *, sock: socket.socket, **options: Any
            ) -> BalancedServer:
                return BalancedServer(
                    loop,
                    factory,
                    sock,
                    slots=slots,
                    index=index,
                    open_count=lambda: len(self.server_state.connections),
                    ssl_context=options.get("ssl"),
                    ssl_shutdown_timeout=TLS_CLOSE_S,
                )

            loop.create_server = balanced  # type: ignore[assignment]
        elif self.config.is_ssl:
            # uvicorn has no option for it: its listeners get TLS_CLOSE_S this way.
            loop.create_server = functools.partial(  # type: ignore[method-assign]
                loop.create_server, ssl_shutdown_timeout=TLS_CLOSE_S
            )
        try:
            await super().startup(sockets)
        finally:
            loop.__dict__.pop("create_server", None)
        if self.started and self.on_ready is not None:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else 0
            self.on_ready(port)


def serve(
    app: Any,
    listen: Listen,
    *,
    stopping: threading.Event,
    on_ready: Callable[[int], None] | None = None,
    sockets: list[socket.socket] | None = None,
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
    balance: tuple[Slots, int] | None = None,
) -> None:
    """Serve `app` until a stop signal (or `stopping` is set); blocks. `sockets`: listen
    on these (bound already, shared by `--workers`) instead of binding `listen`'s address;
    `signals`: the ones that stop it; `balance`: the workers' connection counts and this
    one's slot (`balance.BalancedServer`)."""
    listen = checked(listen)
    context = None if listen.insecure_http else tls_context(listen)
    for handler in logging.getLogger().handlers:  # every record: uvicorn's, the store's, ours
        if not any(isinstance(f, Redacting) for f in handler.filters):
            handler.addFilter(Redacting())
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        http=_Protocol,
        ssl_context_factory=None if context is None else (lambda _config, _default: context),
        log_config=None,  # maasctl's logging, as configured by -v
        access_log=True,
        proxy_headers=False,  # the peer address is the client's: nothing in front is trusted
        server_header=False,
        date_header=True,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=int(GRACE_S),
        lifespan="off",
    )
    server = _Server(config, stopping, on_ready, signals, balance)

    def watch_stopping() -> None:
        stopping.wait()
        server.should_exit = True

    threading.Thread(target=watch_stopping, daemon=True, name="serve-stop").start()
    # What is built by now (the app, its models, the modules) lives as long as the
    # process: out of the collector's sight, a full collection walks only what calls
    # made since. In bench/api.py's 10-host submissions on PostgreSQL a worker's full
    # collections took 69-78 ms each (every call it had in flight waited), 3-8 ms after.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets)
    finally:
        stopping.set()
