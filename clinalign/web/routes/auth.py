"""Sign-in and sign-out: password (Argon2id, throttled) or the site's OpenID Connect provider."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from clinalign import accounts
from clinalign.web import oidc
from clinalign.web.pages import render
from clinalign.web.security import (
    LOGIN_CSRF_COOKIE,
    Visitor,
    check_csrf,
    client_address,
    close_session,
    open_session,
    set_cookie,
    visitor,
)

router = APIRouter()
HOME_BY_ROLE = {"admin": "/admin/users", "data_expert": "/campaigns", "clinician": "/work", "reviewer": "/review"}


def _safe_next(target: str | None) -> str | None:
    """Only same-site paths: an open redirect would let a phishing link borrow our sign-in page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@router.get("/login")
def login_page(request: Request, next: str | None = None):
    token = secrets.token_urlsafe(32)
    response = render(
        request, "login.html.j2", login_csrf=token, next=_safe_next(next) or "", oidc=oidc.enabled(request), error=None
    )
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
def login(
    request: Request,
    username: str = Form(max_length=100),
    password: str = Form(max_length=1000),
    csrf: str = Form(max_length=100),
    next: str = Form(default="", max_length=500),
):
    check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), csrf)
    try:
        user, error = accounts.authenticate(request.app.state.store, username, password, client_address(request)), None
    except accounts.SignInRefused as err:
        user, error = None, str(err)
    if error:
        response = render(
            request,
            "login.html.j2",
            status=401,
            login_csrf=csrf,
            next=_safe_next(next) or "",
            oidc=oidc.enabled(request),
            error=error,
        )
        return response
    response = RedirectResponse(_safe_next(next) or HOME_BY_ROLE[user.role], status_code=303)
    open_session(request, response, user)
    return response


@router.post("/logout")
def logout(request: Request, found: Visitor = Depends(visitor), csrf: str = Form(max_length=100)):
    check_csrf(found.csrf, csrf)
    close_session(request)
    from clinalign.audit import record_event

    with request.app.state.store.session() as session:
        record_event(session, found.user.username, "logout", f"user:{found.user.id}")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie("clinalign_session", path="/")
    return response


@router.get("/")
def home(found: Visitor = Depends(visitor)):
    return RedirectResponse(HOME_BY_ROLE[found.user.role], status_code=303)


@router.get("/healthz")
def health():
    return {"ok": True}


@router.get("/login/oidc")
async def oidc_start(request: Request):
    if not oidc.enabled(request):
        raise HTTPException(status_code=404, detail="Single sign-on is not configured on this server.")
    return await oidc.redirect(request)


@router.get("/login/oidc/callback")
async def oidc_callback(request: Request):
    if not oidc.enabled(request):
        raise HTTPException(status_code=404, detail="Single sign-on is not configured on this server.")
    username = await oidc.username(request)
    with request.app.state.store.session() as session:
        try:
            user, error = accounts.sso_user(session, username), None
        except accounts.SignInRefused as err:
            user, error = None, str(err)
    if error:
        raise HTTPException(status_code=403, detail=error)
    response = RedirectResponse(HOME_BY_ROLE[user.role], status_code=303)
    open_session(request, response, user)
    return response
