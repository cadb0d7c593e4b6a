"""Admission to the guarded API: size limits, the client's API key and its rate limit, before any
route runs; and the OpenAI-shaped error body every refusal uses.

A plain ASGI middleware (a ``BaseHTTPMiddleware`` costs about a millisecond a request). Keys are
looked up in the store at most every ``key_ttl`` seconds (a revoked key is refused within that time);
in-process rate counters are read on the event loop, a store or Redis off it.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from clinalign.serve import oversight
from clinalign.store import ApiKey, Store

MAX_BODY = 256 * 1024  # bytes
OPEN = ("/metrics", "/health")  # scraped and probed without a key; they carry no text


def error(status: int, message: str, kind: str, code: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status_code=status)


class Gate:
    def __init__(self, app, *, store: Store, metrics, rate_storage: str, key_ttl: float):
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.app, self.store, self.metrics, self.key_ttl = app, store, metrics, key_ttl
        self.limiter = MovingWindowRateLimiter(storage_from_string(rate_storage))
        self.local_limits = rate_storage.startswith("memory://")  # counted in this process: no I/O to wait for
        self.known: dict[str, tuple[ApiKey | None, float]] = {}

    def _cached(self, digest: str) -> tuple[bool, ApiKey | None]:
        found = self.known.get(digest)
        return (True, found[0]) if found is not None and found[1] > time.monotonic() else (False, None)

    def _fetch(self, secret: str, digest: str) -> ApiKey | None:
        with self.store.reading() as session:
            key = oversight.key_for(session, secret)
            if key is not None:
                session.expunge(key)
        if len(self.known) > 10_000:  # wrong keys are cached too; a flood of them must not grow this forever
            self.known.clear()
        self.known[digest] = (key, time.monotonic() + self.key_ttl)
        return key

    async def admit(self, method: str, headers: dict[str, str]) -> tuple[JSONResponse | None, ApiKey | None]:
        """A refusal, or the client's key."""
        from limits import RateLimitItemPerMinute

        errors = self.metrics.errors
        length = headers.get("content-length", "")
        if method == "POST" and not length.isdigit():  # a chunked body would be read whole, unbounded
            message = "send Content-Length with the request body"
            return error(411, message, "invalid_request_error", "length_required"), None
        if length.isdigit() and int(length) > MAX_BODY:
            errors.labels("too_large").inc()
            message = f"request body of {int(length)} bytes; at most {MAX_BODY}"
            return error(413, message, "invalid_request_error", "request_too_large"), None
        given = headers.get("authorization", "")
        secret = given[7:].strip() if given.lower().startswith("bearer ") else headers.get("x-api-key", "")
        key = None
        if secret:
            digest = oversight.digest(secret)
            fresh, key = self._cached(digest)
            if not fresh:
                key = await run_in_threadpool(self._fetch, secret, digest)  # reads the store: off the loop
        if key is None:
            errors.labels("auth").inc()
            message = "missing or wrong API key (Authorization: Bearer ...)"
            return error(401, message, "authentication_error", "invalid_api_key"), None
        limit = (RateLimitItemPerMinute(key.per_minute), "key", str(key.id))
        hit = self.limiter.hit
        if not (hit(*limit) if self.local_limits else await run_in_threadpool(hit, *limit)):
            errors.labels("rate_limited").inc()
            message = f"rate limit of {key.per_minute} requests a minute reached"
            return error(429, message, "rate_limit_error", "rate_limit_exceeded"), None
        return None, key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN:
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal, key = await self.admit(scope["method"], headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        scope.setdefault("state", {})["key"] = key
        await self.app(scope, receive, send)
