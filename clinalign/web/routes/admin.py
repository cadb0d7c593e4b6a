"""Administrators' pages: accounts (create, deactivate and reactivate, unlock, reset a password, change a role).

Each action is a CSRF-checked form that calls one ``accounts`` function (which records the audit
event and keeps the site from losing its last admin), then comes back to the list saying what was done.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from clinalign import accounts
from clinalign.schemas import ClinalignError
from clinalign.store import User
from clinalign.web.pages import Id, render
from clinalign.web.security import Visitor, check_csrf, require

router = APIRouter()
admin = require("admin")
DONE = {  # what the list says after an action (the query names the action, never free text)
    "added": "Added {name}.",
    "activate": "{name} can sign in again.",
    "deactivate": "{name} is deactivated: their sessions are closed and the items they held are freed.",
    "unlock": "Unlocked {name}: their failed sign-ins are forgotten.",
    "password": "New password set for {name}: their sessions are closed.",
    "role": "{name} has a new role.",
}


def _back(action: str, user_id: int) -> RedirectResponse:
    return RedirectResponse(f"/admin/users?done={action}&user={user_id}", status_code=303)


@router.get("/admin/users")
def users(request: Request, found: Visitor = Depends(admin), done: str = "", user: str = ""):
    store = request.app.state.store
    with store.reading() as session:
        rows = list(session.scalars(select(User).where(User.simulated.is_(False)).order_by(User.username)))
        failed = accounts.failures(store, session, rows)
    names = {str(u.id): u.username for u in rows}
    notice = DONE[done].format(name=names[user]) if done in DONE and user in names else None
    return render(
        request,
        "users.html.j2",
        users=rows,
        failed=failed,
        lock_at=accounts.MAX_FAILURES_PER_USER,
        roles=accounts.ROLES,
        min_password=accounts.MIN_PASSWORD,
        notice=notice,
    )


@router.post("/admin/users")
def add_user(
    request: Request,
    found: Visitor = Depends(admin),
    csrf: str = Form(max_length=100),
    username: str = Form(max_length=100),
    role: str = Form(max_length=30),
    password: str = Form(max_length=1000),
    specialties: str = Form(default="", max_length=1000),
):
    check_csrf(found.csrf, csrf)
    with request.app.state.store.session() as session:
        user = accounts.create_user(session, username, role, password, found.user.username, specialties.split(","))
    return _back("added", user.id)


@router.post("/admin/users/{user_id}/active")
def set_active(
    request: Request,
    user_id: Id,
    found: Visitor = Depends(admin),
    csrf: str = Form(max_length=100),
    active: bool = Form(),
):
    check_csrf(found.csrf, csrf)
    with request.app.state.store.session() as session:
        accounts.set_active(session, user_id, active, found.user.username, acting_id=found.user.id)
    return _back("activate" if active else "deactivate", user_id)


@router.post("/admin/users/{user_id}/unlock")
def unlock(request: Request, user_id: Id, found: Visitor = Depends(admin), csrf: str = Form(max_length=100)):
    check_csrf(found.csrf, csrf)
    accounts.unlock(request.app.state.store, user_id, found.user.username)
    return _back("unlock", user_id)


@router.post("/admin/users/{user_id}/password")
def reset_password(
    request: Request,
    user_id: Id,
    found: Visitor = Depends(admin),
    csrf: str = Form(max_length=100),
    password: str = Form(max_length=1000),
    repeat: str = Form(max_length=1000),
):
    check_csrf(found.csrf, csrf)
    if password != repeat:
        raise ClinalignError("the two passwords differ: type the same new password twice")
    accounts.reset_password(request.app.state.store, user_id, password, found.user.username)
    return _back("password", user_id)


@router.post("/admin/users/{user_id}/role")
def set_role(
    request: Request,
    user_id: Id,
    found: Visitor = Depends(admin),
    csrf: str = Form(max_length=100),
    role: str = Form(max_length=30),
):
    check_csrf(found.csrf, csrf)
    with request.app.state.store.session() as session:
        accounts.set_role(session, user_id, role, found.user.username, acting_id=found.user.id)
    return _back("role", user_id)
