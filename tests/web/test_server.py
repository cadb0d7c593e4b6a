"""The server as run by ``clinalign web``: connections send small writes at once (Nagle off), whichever
socket uvicorn accepted them on, and forwarded headers are believed only from configured proxies."""

from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn
from sqlalchemy import select
from uvicorn.server import ServerState

from bench.annotate_load import CSRF, free_port, start_server
from clinalign.store import LoginAttempt, Store
from clinalign.web.server import HTTPProtocol
from tests.web.seed import seed


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


def _forged_headers(port: int, forwarded_for: str) -> str:
    """A failed sign-in sent with a forged X-Forwarded-For, and the login cookie of a page asked for with
    X-Forwarded-Proto: https over plain HTTP."""
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as client:
        page = client.get("/login")
        token = CSRF.search(page.text).group(1)
        headers = {"X-Forwarded-For": forwarded_for}
        data = {"username": "clin1", "password": "wrong password!", "csrf": token}
        assert client.post("/login", data=data, headers=headers).status_code == 401
        proto = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    cookie = [h for h in proto.headers.get_list("set-cookie") if h.startswith("clinalign_login_csrf=")][0]
    return cookie.lower()


def test_the_server_believes_forwarded_headers_only_from_configured_proxies(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'proxy.db'}"
    store = Store.open(url)
    seed(store, tmp_path, prompts=1)
    store.engine.dispose()
    cookies = {}
    for trusted in ("", '["127.0.0.1"]'):  # a local client is not a proxy unless named one
        if trusted:
            monkeypatch.setenv("CLINALIGN_TRUSTED_PROXIES", trusted)
        else:
            monkeypatch.delenv("CLINALIGN_TRUSTED_PROXIES", raising=False)
        port = free_port()
        server = start_server(url, tmp_path, port)
        try:
            cookies[trusted] = _forged_headers(port, "198.51.100.7" if trusted else "203.0.113.9")
        finally:
            server.terminate()
            server.wait(timeout=30)
    store = Store.open(url, migrate=False)
    with store.reading() as session:
        addresses = list(session.scalars(select(LoginAttempt.ip).order_by(LoginAttempt.id)))
    assert addresses == ["127.0.0.1", "198.51.100.7"]
    assert "secure" not in cookies[""] and "secure" in cookies['["127.0.0.1"]']
