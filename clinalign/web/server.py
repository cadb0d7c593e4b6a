"""Running the web app under uvicorn, with every connection's TCP_NODELAY on.

asyncio turns Nagle's algorithm off only on sockets that report ``IPPROTO_TCP``. With ``--workers``
above one, uvicorn binds the listening socket itself with the protocol left at 0, so accepted
connections keep Nagle on: a page whose headers and body leave in two writes then waits for the
browser's delayed ACK, 40 ms on Linux, on every keep-alive request (uvicorn issue #3149; measured
here as "next item" at 57 ms for 13 ms of work). ``HTTPProtocol`` sets the option on each connection
whatever socket it came from.

Idle connections are kept for 75 s instead of uvicorn's 5: a clinician's browser is quiet between
being shown an item and submitting it, and a connection closed in that pause costs a new handshake
(a TLS one behind a proxy) and, when the close crosses the next request, a connection error
(seen by bench/annotate_load.py, whose think time straddles 5 s).
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol


class HTTPProtocol(AutoHTTPProtocol):
    """uvicorn's own HTTP protocol (httptools when installed, else h11), with Nagle off."""

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def serve(host: str, port: int, workers: int) -> None:
    uvicorn.run(
        "clinalign.web.app:create_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        http=HTTPProtocol,
        timeout_keep_alive=75,
        log_level="warning",
        # Forwarded headers are believed only from CLINALIGN_TRUSTED_PROXIES (create_app); uvicorn's
        # own default would believe them from any client on 127.0.0.1.
        proxy_headers=False,
    )
