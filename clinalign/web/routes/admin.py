"""Administrators' pages: accounts (create, deactivate)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from clinalign import accounts
from clinalign.store import User
from clinalign.web.pages import Id, render
from clinalign.web.security import Visitor, check_csrf, require

router = APIRouter()
admin = require("admin")


@router.get("/admin/users")
def users(request: Request, found: Visitor = Depends(admin)):
    with request.app.state.store.session() as session:
        rows = list(session.scalars(select(User).where(User.simulated.is_(False)).order_by(User.username)))
    return render(request, "users.html.j2", users=rows, roles=accounts.ROLES, min_password=accounts.MIN_PASSWORD)


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
        accounts.create_user(session, username, role, password, found.user.username, specialties.split(","))
    return RedirectResponse("/admin/users", status_code=303)


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
        accounts.set_active(session, user_id, active, found.user.username)
    return RedirectResponse("/admin/users", status_code=303)
