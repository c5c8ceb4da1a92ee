"""`maasctl serve`'s connections at shutdown (maas_lib.service.server._Protocol), over a
real TLS connection on loopback: an idle connection whose transport was closed already
(a keep-alive timeout, a client gone) is dropped without an error, so the server still
stops with exit 0 (it exited 1 with AttributeError '_get_extra_info' before)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import uvicorn
from uvicorn.server import ServerState

from maas_lib.service.server import _Protocol
from tests.apiserver import pki
from tests.conftest import patience


async def _app(scope, receive, send):  # never called: no request is sent
    raise AssertionError("no request expected")


def test_shutdown_of_a_tls_connection_closed_already(tmp_path: Path):
    certs = pki(tmp_path / "pki")

    async def scenario() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(certs["cert"], certs["key"])
        config = uvicorn.Config(_app, http=_Protocol, log_level="warning")
        state = ServerState()
        made: list[_Protocol] = []

        def factory() -> _Protocol:
            made.append(_Protocol(config=config, server_state=state, app_state={}))
            return made[-1]

        server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", 0, ssl=server_ctx
        )
        port = server.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cafile=str(certs["ca"]))
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        for _ in range(200):
            if made and made[0].transport is not None:
                break
            await asyncio.sleep(0.01)
        protocol = made[0]
        protocol.transport.close()  # closed once already, as a keep-alive timeout does
        protocol.shutdown()  # the server stopping: closes it again, then drops it
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), patience(30)))
