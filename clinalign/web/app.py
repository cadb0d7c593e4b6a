"""The web application: its routes, the guard around every request, error pages, the audit sealer.

Clinicians never see a stack trace: known errors become a 4xx page that says what to do (naming
fields by their labels on the page, never quoting a value), anything else a generic 500 page; logs
carry the exception type only, since a message could quote PHI.

``X-Forwarded-For``/``-Proto`` are believed only from the addresses in ``trusted_proxies`` (uvicorn's
own default, which trusts any local client, is off: ``server.py``): otherwise a client could pick the
address its failed sign-ins are counted against, or have cookies marked Secure over plain HTTP.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clinalign.accounts import NoAccount, SignInRefused
from clinalign.annotate.queue import Conflict, NotFound
from clinalign.audit import Sealer
from clinalign.schemas import ClinalignError
from clinalign.settings import Settings
from clinalign.store import Store
from clinalign.web import oidc
from clinalign.web.pages import HERE, problems, render
from clinalign.web.routes import admin, auth, campaigns, monitoring, oversight, review, work

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024  # the longest form (a rewrite plus a rationale) is far below this


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    if status == 401 and request.method == "GET":
        return RedirectResponse("/login?next=" + request.url.path, status_code=303)
    return render(request, "error.html.j2", status=status, status_code=status, message=message)


SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class Guard:
    """Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every request): refuses
    form posts without a length or over ``MAX_BODY``, adds security headers, keeps pages out of
    caches, and turns any unhandled error into a generic page that carries no trace and no message."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return await _error_page(request, 411, "A form must say how long it is.")(scope, receive, send)
            if int(length) > MAX_BODY:
                message = f"This form is too large (over {MAX_BODY // 1024} KB)."
                return await _error_page(request, 413, message)(scope, receive, send)
        no_store = not scope["path"].startswith("/static/")
        started = False
        began = time.perf_counter()

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = SECURITY_HEADERS + ([(b"cache-control", b"no-store")] if no_store else [])
                # How long the app took (W3C Server-Timing): tells server time from network and queueing.
                extra.append((b"server-timing", f"app;dur={1000 * (time.perf_counter() - began):.1f}".encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as err:  # noqa: BLE001 - the last line of defence: no trace, no message (PHI)
            log.error("unhandled %s on %s %s", type(err).__name__, request.method, scope["path"])
            if not started:
                page = _error_page(request, 500, "Something went wrong on our side. Nothing was half-saved; try again.")
                await page(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # exports run in-process; no bars in server logs
    # Writes to SQLite queue on one lock in this process; a thread holding it gives up the GIL at every
    # statement and, at the default 5 ms switch interval, can wait that long to get it back while
    # other requests run: the queue then moves at a few transactions per 5 ms. 0.5 ms keeps it
    # moving (bench/annotate_load.py: p95 for "next item" fell from 270 ms to 115 ms at 50 clients).
    sys.setswitchinterval(0.0005)

    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Requests only record audit events; this worker's sealer chains them, and its last seal at
        # shutdown leaves nothing of this worker's pending (a killed worker's are sealed by the next).
        sealer = Sealer(app.state.store).start()
        yield
        await run_in_threadpool(sealer.close)

    app = FastAPI(title="clinalign", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store or Store.open(settings.url)

    app.add_middleware(Guard)
    if settings.trusted_proxies:  # added last, so it runs first: every layer sees the client's address
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return _error_page(request, err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        errors = err.errors()
        if errors and all(e["loc"][:1] == ("path",) for e in errors):  # /campaigns/99999999999: names nothing
            return _error_page(request, 404, "Nothing here has that number.")
        return _error_page(request, 422, f"Please correct: {problems(errors)}.")

    @app.exception_handler(ClinalignError)
    async def refused(request: Request, err: ClinalignError):
        status = 404 if isinstance(err, NotFound | NoAccount) else 409 if isinstance(err, Conflict) else 400
        if isinstance(err, SignInRefused):
            status = 401
        return _error_page(request, status, str(err))

    oidc.install(app, settings)

    for module in (auth, work, campaigns, review, oversight, monitoring, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
