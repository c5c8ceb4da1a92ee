"""`maasctl serve`'s body: check every option (bad input exits 2 before anything listens),
open the store once, build the app, serve it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from maas_lib.errors import InputError
from maas_lib.service.app import create_app
from maas_lib.service.server import Listen, checked, serve, tls_context
from maas_lib.service.settings import ServiceSettings
from maas_lib.service.workers import check_workers, serve_workers
from maas_lib.validation import option_error, parse_listen


def run(
    *,
    db: str | None,
    listen: str,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    client_ca: str | None = None,
    insecure_http: bool = False,
    jwt: dict[str, Any] | None = None,
    rate_limit: float | None = None,
    workers: int = 1,
    on_ready: Callable[[str], None] | None = None,
    stopping: threading.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stopping` is set); `on_ready(url)` once listening.
    With `workers` > 1, that many processes serve (`maas_lib.service.workers`); a worker
    that failed makes it `SystemExit(1)`."""
    check_workers(workers)
    host, port = parse_listen(listen, "--listen", any_port=True)  # 0: any free port
    if tls_key and not tls_cert:
        raise InputError("--tls-key needs --tls-cert")
    where = Listen(
        host=host,
        port=port,
        tls_cert=tls_cert and Path(tls_cert),
        tls_key=tls_key and Path(tls_key),
        client_ca=client_ca and Path(client_ca),
        insecure_http=insecure_http,
    )
    checked(where)
    if not insecure_http:
        tls_context(where)  # a certificate that does not load is an error now
    fields: dict[str, Any] = {"db": db}
    if rate_limit is not None:
        fields["rate_limit"] = rate_limit
    jwt_fields = {k: v for k, v in (jwt or {}).items() if v is not None}
    if jwt_fields:
        if not {"issuer", "audience", "jwks"} <= set(jwt_fields):
            raise InputError("JWTs need --jwt-issuer, --jwt-audience and --jwks together")
        fields["jwt"] = jwt_fields
    try:
        settings = ServiceSettings.model_validate(fields)
    except ValidationError as exc:
        raise option_error(exc) from None
    stop = stopping or threading.Event()
    app = create_app(settings, stopping=stop)
    app.state.pool.check()  # an unusable database is an error now, not on the first call
    ready = None if on_ready is None else (lambda p: on_ready(where.url(p)))
    if workers > 1:
        app.state.pool.close()  # each worker opens its own, after the fork
        code = serve_workers(
            lambda s: create_app(settings, stopping=s),
            where,
            workers,
            stopping=stop,
            on_ready=ready,
        )
        if code:
            raise SystemExit(code)
        return
    app.state.pool.warm()
    serve(
        app,
        where,
        stopping=stop,
        on_ready=ready,
    )
