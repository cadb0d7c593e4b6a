"""``clinalign users`` (accounts) and ``clinalign web`` (the clinician web app)."""

from __future__ import annotations

import os
import sys

import typer
from rich.table import Table

from clinalign.cli.base import GROUPS, app, console, fail, open_store
from clinalign.schemas import ClinalignError

group = GROUPS[("users",)]


def _actor() -> str:
    return os.environ.get("USER", "cli")


@group.command("add")
def users_add(
    username: str = typer.Argument(..., help="Lower-case login name."),
    role: str = typer.Option(..., "--role", help="admin | data_expert | clinician | reviewer"),
    specialty: list[str] = typer.Option([], "--specialty", help="Routes this specialty's items to them (repeatable)."),
    sso: bool = typer.Option(False, "--sso", help="No password: signs in through the OpenID Connect provider."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Create an account; asks for the password twice (hidden) unless --password-stdin or --sso."""
    from clinalign import accounts
    from clinalign.audit import seal

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sso:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = open_store(existing=False)
    try:
        with store.session() as session:
            user = accounts.create_user(session, username, role, password, _actor(), specialty)
        seal(store)
    except ClinalignError as err:
        fail(str(err))
    console.print(f"created {user.username} ({user.role})")


@group.command("list")
def users_list() -> None:
    """Every account, its role and whether it is active."""
    from sqlalchemy import select

    from clinalign.store import User

    table = Table("username", "role", "specialties", "active", title="accounts", title_justify="left")
    with open_store().reading() as session:
        for user in session.scalars(select(User).where(User.simulated.is_(False)).order_by(User.username)):
            table.add_row(user.username, user.role, ", ".join(user.specialties), "yes" if user.active else "no")
    console.print(table)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(2, min=1, help="Server processes (Python runs one request at a time per process)."),
) -> None:
    """Serve the clinician web app on the store named by the environment (migrated on start)."""
    from clinalign.web.server import serve

    open_store(existing=False).engine.dispose()  # migrate once, before the workers start
    console.print(f"clinalign web on http://{host}:{port} (Ctrl+C to stop)")
    serve(host, port, workers)
