"""Headers every answer of the API carries (the page's files have stricter ones of their
own, `maas_lib.service.web`): its documents hold the fleet's data and are the caller's
alone, so no cache keeps them, and no browser takes one for another type."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
}


class ApiHeaders:
    """Adds `API_HEADERS` to each response that does not set them itself."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def adding(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in API_HEADERS.items() if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, adding)
