"""The ASGI app: the /api/v1 endpoints of docs/service.md.

Each endpoint authenticates (one dependency, `Api.principal`), calls one `GuardedFleet`
method and returns its result through `serialize.to_jsonable`, the same document
`maasctl ... --json` prints. Store calls block, so endpoints are plain `def`s (FastAPI runs
them in its threadpool), each on a store connection of its own from `FleetPool`: one
per call, borrowed with the credential's check (`Api.open_call`) and kept to the answer,
but for a call with a body, which gives its back before the body is read.
"""

import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response, Security
from fastapi.security import HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from maas_lib.access.authn import authenticate
from maas_lib.access.guard import GuardedFleet
from maas_lib.access.jwt_verify import JwtSettings, JwtVerifier
from maas_lib.access.models import AuditRecord
from maas_lib.access.principal import Principal
from maas_lib.enums import TERMINAL_REQUEST_STATES
from maas_lib.errors import AuthenticationError, StoreError, StoreUnavailable
from maas_lib.fleet import Fleet
from maas_lib.models import Lease, RequestSummary, SubmitResult
from maas_lib.serialize import to_jsonable
from maas_lib.service import errors, web
from maas_lib.service.bodies import SubmitBody
from maas_lib.service.errors import ApiError, ErrorBody, log, one_line, retry_after
from maas_lib.service.headers import ApiHeaders
from maas_lib.service.inputs import CleanText, StrictJsonRoute
from maas_lib.service.limits import BodyLimit, RateLimiter, StreamSlots
from maas_lib.service.pool import FleetPool
from maas_lib.service.settings import ServiceSettings
from maas_lib.telemetry.models import Stats, WorkerInfo

PREFIX = "/api/v1"
#: The largest id or count a path or query takes (the stores' 64-bit integers).
MAX_ID = 2**63 - 1
#: A request id in a path: out of range is a 422, never the store's overflow.
RequestId = Annotated[int, Path(ge=1, le=MAX_ID, description="a request's id")]

#: Every error status an endpoint may answer, with the one error shape (OpenAPI).
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": kind}
    for status, kind in errors.KINDS.items()
    if status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 503)
}
#: Declares the bearer scheme in the OpenAPI document (a Swagger UI's Authorize button); the
#: header itself is read and checked by `maas_lib.access.authn.authenticate`.
_BEARER = HTTPBearer(
    auto_error=False, description="An API token (maas_...) or a JWT from the configured issuer"
)


def _doc(model: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of an answer that is `model`'s JSON (documentation only:
    the body is `to_jsonable`'s document, not validated again)."""
    return {status: {"model": model}}


class Api:
    """What the endpoints share: the store pool, the authenticator and the rate limiter."""

    def __init__(self, settings: ServiceSettings, stopping: threading.Event):
        self.settings = settings
        self.stopping = stopping
        self.pool = FleetPool(settings.db, settings.pool_size)
        self.jwt = JwtVerifier(JwtSettings(**settings.jwt)) if settings.jwt else None
        self.limiter = RateLimiter(settings.rate_limit)
        self.streams = StreamSlots(settings.max_streams)

    def principal(self, request: Request, fleet: Fleet | None = None) -> Principal:
        """The caller, from its bearer credential (401 if none is valid), within its rate
        (429). Failed attempts spend their client address's budget: once it is spent, the
        address is answered 429 before any credential is checked (or a refusal audited).
        Once per call. Checked on `fleet` if given (the call's own connection), else on a
        connection borrowed for the check alone. Blocking: run it in the threadpool."""
        known = getattr(request.state, "principal", None)
        if known is not None:
            return known  # type: ignore[no-any-return]
        address = f"address:{_client(request)}"
        self._refuse_if_waiting(self.limiter.waiting(address))
        if fleet is None:
            with self.pool.fleet() as borrowed:
                return self._authenticated(borrowed, request, address)
        return self._authenticated(fleet, request, address)

    def _authenticated(self, fleet: Fleet, request: Request, address: str) -> Principal:
        try:
            principal = self.authenticate(fleet, request)
        except AuthenticationError:
            self.limiter.take(address)
            raise
        self._refuse_if_waiting(self.limiter.take(f"principal:{principal.name}"))
        request.state.principal = principal
        log.debug("%s %s by %s", request.method, request.url.path, principal.name)
        return principal

    def authenticate(self, fleet: Fleet, request: Request) -> Principal:
        """`maas_lib.access.authn.authenticate` of the request's credential (audits a
        failure, raises `AuthenticationError`)."""
        tls = request.scope.get("extensions", {}).get("tls", {})
        return authenticate(
            fleet,
            request.headers.get("authorization"),
            jwt=self.jwt,
            client=_client(request),
            client_cert=tls.get("client_cert_name"),
        )

    @staticmethod
    def _refuse_if_waiting(wait: float) -> None:
        if wait > 0:
            raise ApiError(429, "too many calls; slow down", retry_after(wait))

    def open_call(self, request: Request) -> None:
        """Borrow the call's one store connection and check its caller on it, for a call
        without a body (blocking: one trip to the threadpool, before the endpoint's). The
        connection stays with the call (`request.state.fleet`) until `close_call`. A
        call with a body is checked on a connection returned before its body is read (a
        slow sender holds none), and its endpoint borrows another."""
        self._refuse_if_waiting(self.limiter.waiting(f"address:{_client(request)}"))
        held = ExitStack()
        fleet = held.enter_context(self.pool.fleet())
        try:
            self.principal(request, fleet)
        except BaseException as exc:
            held.__exit__(type(exc), exc, exc.__traceback__)
            raise
        request.state.fleet, request.state.held = fleet, held

    async def close_call(self, request: Request, error: BaseException | None) -> None:
        """Give the call's connection back (a connection that failed is closed, in the
        threadpool: closing may block)."""
        held: ExitStack | None = getattr(request.state, "held", None)
        if held is None:
            return
        request.state.held = request.state.fleet = None
        if isinstance(error, StoreError):
            await run_in_threadpool(held.__exit__, type(error), error, error.__traceback__)
        else:  # back to the idle list: no I/O
            held.__exit__(None, None, None)

    def guarded(self, request: Request) -> GuardedFleet:
        """The call's connection (`open_call`) as its caller."""
        return GuardedFleet(request.state.fleet, request.state.principal)


def create_app(settings: ServiceSettings, *, stopping: threading.Event | None = None) -> FastAPI:
    """The app for `settings`. `stopping` (set on SIGTERM by `server.serve`) ends progress
    streams so a graceful shutdown does not wait on them."""
    api = Api(settings, stopping or threading.Event())
    app = FastAPI(
        title="maas-lib",
        summary="Batch lifecycle actions across a bare-metal fleet (docs/service.md).",
        version="1",
        openapi_url="/openapi.json",
        # No /docs: FastAPI's Swagger UI page loads its script from a CDN (no integrity
        # hash), which would run on this origin, where the web page keeps its token.
        docs_url=None,
        redoc_url=None,
        responses=_ERRORS,
        # A path with a trailing slash is a 404, not a redirect to a URL built from the
        # client's Host header.
        redirect_slashes=False,
    )

    class Route(StrictJsonRoute):
        async def before_body(self, request: Request) -> None:
            # Who calls, before a body, path or query is read or checked: an anonymous or
            # bad credential is a 401 (audited, its address's budget spent), never a 422.
            needs = self.__dict__.get("needs_caller")
            if needs is None:
                needs = self.__dict__["needs_caller"] = _calls(self.dependant, caller)
            if not needs:
                return
            if self.body_field is not None:
                await run_in_threadpool(api.principal, request)
            else:
                await run_in_threadpool(api.open_call, request)

        async def after(self, request: Request, error: BaseException | None) -> None:
            await api.close_call(request, error)

    app.router.route_class = Route  # every route after this reads bodies strictly
    app.state.api = api
    app.state.pool = api.pool
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CleanText)
    app.add_middleware(ApiHeaders)  # outermost: on every answer, refusals included
    web.mount(app)  # the page at /

    async def caller(
        request: Request, _scheme: Annotated[Any, Security(_BEARER)] = None
    ) -> Principal:
        # Checked by `Route.before_body` already (each route depending on this one).
        return request.state.principal  # type: ignore[no-any-return]

    Caller = Annotated[Principal, Depends(caller)]

    async def guarded(request: Request, _principal: Caller) -> GuardedFleet:
        return api.guarded(request)

    Guarded = Annotated[GuardedFleet, Depends(guarded)]

    def first_read(request_id: RequestId, fleet: Guarded) -> dict[str, Any]:
        # A dependency, so an unknown or forbidden request is a 404/403 before the
        # stream (and its 200) starts.
        return fleet.request_info(request_id)

    FirstRead = Annotated[dict[str, Any], Depends(first_read)]

    async def stream_slot(principal: Caller) -> AsyncIterator[None]:
        # Held until the stream's response has ended (a dependency's exit runs after it).
        if not api.streams.take(principal.name):
            raise ApiError(
                429,
                f"{principal.name} has {settings.max_streams} progress streams open already",
                retry_after(settings.keepalive_s),
            )
        try:
            yield
        finally:
            api.streams.give(principal.name)

    @app.get(f"{PREFIX}/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness: the process answers (no credential needed)."""
        return {"status": "ok"}

    @app.get(f"{PREFIX}/whoami", tags=["service"])
    def whoami(fleet: Guarded) -> Any:
        """The authenticated principal: name, role, teams, how it authenticated."""
        return to_jsonable(fleet.whoami())

    @app.post(
        f"{PREFIX}/requests", status_code=202, tags=["requests"], responses=_doc(SubmitResult, 202)
    )
    def submit(
        body: SubmitBody,
        response: Response,
        principal: Caller,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Accept a request (operator; every host in a pool the caller's team owns). A
        retry with the same `Idempotency-Key` answers the first request again."""
        with api.pool.fleet() as store:
            result = GuardedFleet(store, principal).submit(
                body.action,
                body.patterns,
                image=body.image,
                idempotency_key=idempotency_key,
                **body.policy_fields(),
            )
        response.headers["Location"] = f"{PREFIX}/requests/{result.id}"
        return to_jsonable(result)

    @app.post(f"{PREFIX}/plan", tags=["requests"])
    def plan(body: SubmitBody, principal: Caller) -> Any:
        """What a submission would do now (a dry run); writes nothing."""
        with api.pool.fleet() as store:
            planned = GuardedFleet(store, principal).plan(
                body.action, body.patterns, image=body.image, **body.policy_fields()
            )
        return to_jsonable(planned)

    @app.get(f"{PREFIX}/requests", tags=["requests"], responses=_doc(list[RequestSummary]))
    def list_requests(
        fleet: Guarded,
        state: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    ) -> Any:
        """Requests, newest first; `state` may repeat."""
        return to_jsonable(fleet.requests(state or None, limit))

    @app.get(f"{PREFIX}/requests/{{request_id}}", tags=["requests"])
    def request_info(
        request_id: RequestId, fleet: Guarded, steps: bool = False, host: str | None = None
    ) -> Any:
        """One request: its hosts and states, its summary; `steps` (or `host`) adds steps."""
        return fleet.request_info(request_id, steps=steps, host=host)

    @app.post(f"{PREFIX}/requests/{{request_id}}/cancel", tags=["requests"])
    def cancel(request_id: RequestId, fleet: Guarded) -> Any:
        """Cancel a request: at once if not started; if running, no new host starts."""
        state = fleet.cancel(request_id)
        return {"id": request_id, "state": to_jsonable(state), "cancel_requested": True}

    @app.get(
        f"{PREFIX}/requests/{{request_id}}/progress",
        response_class=EventSourceResponse,
        tags=["requests"],
    )
    async def progress(
        request_id: int,
        request: Request,
        first: FirstRead,  # checked by first_read
        _slot: Annotated[None, Depends(stream_slot)],
    ) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: `progress` (the request's document, as GET
        /requests/{id} answers it) whenever it changes, then `end` once the request has
        ended; a keep-alive comment while nothing changes. The credential is checked on
        every read: once it is revoked or expired, an `error` event ends the stream."""
        async for event in _stream(api, request_id, first, request):
            yield event

    @app.get(f"{PREFIX}/inflight", tags=["fleet"], responses=_doc(list[Lease]))
    def inflight(fleet: Guarded) -> Any:
        """Hosts held by in-flight requests, fleet-wide."""
        return to_jsonable(fleet.inflight())

    @app.get(f"{PREFIX}/hosts", tags=["fleet"])
    def hosts(fleet: Guarded, pool: str | None = None) -> Any:
        """Registered hosts (of one pool)."""
        return to_jsonable(fleet.hosts(pool))

    @app.get(f"{PREFIX}/stats", tags=["fleet"], responses=_doc(Stats))
    def stats(
        fleet: Guarded,
        since: str | None = None,
        action: str | None = None,
        pool: str | None = None,
    ) -> Any:
        """Success rates, failure classes, step runtimes and queue waits per action."""
        return to_jsonable(fleet.stats(since, action=action, pool=pool))

    @app.get(f"{PREFIX}/workers", tags=["fleet"], responses=_doc(list[WorkerInfo]))
    def workers(fleet: Guarded) -> Any:
        """Scheduler workers: heartbeat age, alive, requests held, hosts leased."""
        return to_jsonable(fleet.workers())

    @app.get(f"{PREFIX}/audit", tags=["service"], responses=_doc(list[AuditRecord]))
    def audit(
        fleet: Guarded,
        principal: str | None = None,
        decision: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> Any:
        """Audit records, newest first (admin)."""
        return to_jsonable(fleet.audit(principal=principal, decision=decision, limit=limit))

    return app


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _calls(dependant: Any, call: Any) -> bool:
    """Whether `dependant` (a route's) depends on `call`, directly or not."""
    return any(d.call is call or _calls(d, call) for d in dependant.dependencies)


def _read_again(api: Api, request: Request, request_id: int) -> dict[str, Any]:
    """A stream's next read, as its caller now: a credential revoked or expired since the
    stream began ends it (`AuthenticationError`)."""
    with api.pool.fleet() as fleet:
        principal = api.authenticate(fleet, request)
        return GuardedFleet(fleet, principal).request_info(request_id)


async def _stream(
    api: Api, request_id: int, doc: dict[str, Any], request: Request
) -> AsyncIterator[ServerSentEvent]:
    """Events until the request ends, the client goes away, its credential is refused (an
    `error` event) or the server stops."""
    settings = api.settings
    why = "client gone"  # unless it ends otherwise: a cancelled stream lost its client
    try:
        yield ServerSentEvent(event="progress", data=doc)
        quiet = 0.0
        while doc.get("state") not in TERMINAL_REQUEST_STATES:
            await anyio.sleep(settings.progress_poll_s)
            if api.stopping.is_set():
                why = "server stopping"
                return
            if await request.is_disconnected():
                return
            try:
                latest = await run_in_threadpool(_read_again, api, request, request_id)
            except StoreUnavailable:
                latest = doc  # the next poll tries again; the client keeps its stream
            except AuthenticationError as exc:
                why = f"credential refused: {exc.reason}"
                yield ServerSentEvent(
                    event="error", data={"error": "unauthenticated", "detail": one_line(exc.reason)}
                )
                return
            if latest != doc:
                doc, quiet = latest, 0.0
                yield ServerSentEvent(event="progress", data=doc)
                continue
            quiet += settings.progress_poll_s
            if quiet >= settings.keepalive_s:
                quiet = 0.0
                yield ServerSentEvent(comment="keep-alive")
        why = f"request {doc.get('state')}"
        yield ServerSentEvent(event="end", data={"id": request_id, "state": doc.get("state")})
    finally:
        log.debug("progress of request %s: %s", request_id, why)
