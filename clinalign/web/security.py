"""Sessions, CSRF tokens and role checks for every route.

* The session cookie holds 32 random bytes; the store keeps only their SHA-256 (``WebSession``), so a
  copy of the database opens no session. The cookie is HttpOnly, SameSite=Strict, and Secure whenever
  the request came over TLS (directly, or through a proxy named in ``trusted_proxies``). Sign-out
  deletes the row.
* A session unused for ``session_idle_minutes`` is closed on its next request.
* CSRF: synchroniser tokens. Every form carries the session's token and every POST is checked
  against it; the sign-in form, which has no session yet, uses a double-submit cookie instead.
* Roles: each route names the roles it admits through ``require(...)``; ``tests/web`` walks every
  route with every role.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Depends, HTTPException, Request
from sqlalchemy import delete, select, update

from clinalign.store import User, WebSession, aware, utcnow

COOKIE = "clinalign_session"
LOGIN_CSRF_COOKIE = "clinalign_login_csrf"
_TOUCH_EVERY = timedelta(seconds=60)  # last_seen is written at most once a minute per session


class SessionExpired(HTTPException):
    def __init__(self, detail: str = "Please sign in."):
        super().__init__(status_code=401, detail=detail)


@dataclass
class Visitor:
    """The signed-in user of one request, and the CSRF token their forms must carry."""

    user: User
    csrf: str
    session_id: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_cookie(request: Request, response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def open_session(request: Request, response, user: User) -> None:
    """Start a session for ``user`` (after a password or single sign-on check) and set its cookie."""
    token = secrets.token_urlsafe(32)
    with request.app.state.store.session() as session:
        session.add(WebSession(id=_digest(token), user_id=user.id, csrf=secrets.token_urlsafe(32)))
    set_cookie(request, response, COOKIE, token)


def close_session(request: Request) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        with request.app.state.store.session() as session:
            session.execute(delete(WebSession).where(WebSession.id == _digest(token)))


def visitor(request: Request) -> Visitor:
    """The signed-in user, or 401. Closes sessions idle for longer than the configured limit."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SessionExpired()
    store = request.app.state.store
    idle = timedelta(minutes=request.app.state.settings.session_idle_minutes)
    now = utcnow()
    with store.reading() as session:  # most requests only read their session: no write lock
        found = session.execute(
            select(WebSession, User).join(User, User.id == WebSession.user_id).where(WebSession.id == _digest(token))
        ).first()
    if found is None or not found[1].active:
        raise SessionExpired()
    row, user = found
    last_seen = aware(row.last_seen)
    if now - last_seen > idle:
        with store.session() as session:
            session.execute(delete(WebSession).where(WebSession.id == row.id))
        raise SessionExpired("Your session expired after a period without activity. Please sign in again.")
    if now - last_seen > _TOUCH_EVERY:
        with store.session() as session:
            session.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen=now))
    request.state.visitor = Visitor(user, row.csrf, row.id)
    return request.state.visitor


def require(*roles: str):
    """A dependency admitting only signed-in users holding one of ``roles``."""

    def check(found: Visitor = Depends(visitor)) -> Visitor:
        if found.user.role not in roles:
            raise HTTPException(status_code=403, detail="Your role does not give access to this page.")
        return found

    check.roles = roles  # read by the route x role test
    return check


def check_csrf(expected: str | None, sent: str | None) -> None:
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(
            status_code=403,
            detail="This form has expired or did not come from clinalign. Reload the page and try again.",
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
