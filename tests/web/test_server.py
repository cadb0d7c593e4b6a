"""The server's connections send small writes at once (Nagle off), whichever socket uvicorn accepted them on."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from uvicorn.server import ServerState

from clinalign.web.server import HTTPProtocol


async def _nodelay_of_accepted_connection() -> int:
    # Bound as uvicorn binds it for --workers above one: protocol number 0, on which asyncio leaves
    # Nagle's algorithm on for every connection it accepts.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app=lambda scope, receive, send: None, log_level="warning")
    config.load()
    accepted: list[HTTPProtocol] = []

    def protocol() -> HTTPProtocol:
        accepted.append(HTTPProtocol(config=config, server_state=ServerState(), app_state={}))
        return accepted[-1]

    server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
    _, writer = await asyncio.open_connection(*listener.getsockname())
    while not accepted or accepted[0].transport is None:
        await asyncio.sleep(0.01)
    sock = accepted[0].transport.get_extra_info("socket")
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    writer.close()
    server.close()
    return nodelay


def test_connections_on_a_prebound_socket_have_nagle_off():
    assert asyncio.run(asyncio.wait_for(_nodelay_of_accepted_connection(), 10)) == 1
