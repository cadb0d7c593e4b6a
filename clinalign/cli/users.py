"""``clinalign users`` (accounts: add, list, activate, deactivate, unlock, password, role) and
``clinalign web`` (the clinician web app)."""

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
    """Every account, its role, whether it is active, and whether failed sign-ins lock it."""
    from sqlalchemy import select

    from clinalign import accounts
    from clinalign.store import User

    table = Table("username", "role", "specialties", "active", "sign-in", title="accounts", title_justify="left")
    store = open_store()
    with store.reading() as session:
        users = list(session.scalars(select(User).where(User.simulated.is_(False)).order_by(User.username)))
        failed = accounts.failures(store, session, users)
    for user in users:
        n = failed.get(user.id, 0)
        locked = f"locked ({n} failed)" if n >= accounts.MAX_FAILURES_PER_USER else f"{n} failed" if n else ""
        active = "yes" if user.active else "no"
        table.add_row(user.username, user.role, ", ".join(user.specialties), active, locked)
    console.print(table)


def _change(change) -> None:
    """Run one account change on the environment's store, then seal the audit chain, as ``users add`` does;
    a refusal is one line."""
    from clinalign.audit import seal

    store = open_store()
    try:
        change(store)
        seal(store)
    except ClinalignError as err:
        fail(str(err))


@group.command("activate")
def users_activate(username: str = typer.Argument(..., help="The account to reactivate.")) -> None:
    """Let a deactivated account sign in again."""
    from clinalign import accounts

    def change(store):
        with store.session() as session:
            accounts.set_active(session, username, True, _actor())

    _change(change)
    console.print(f"{username.strip().lower()} is active")


@group.command("deactivate")
def users_deactivate(username: str = typer.Argument(..., help="The account to deactivate.")) -> None:
    """Stop an account signing in: its open sessions close and the items it held go to others. The
    last active admin cannot be deactivated."""
    from clinalign import accounts

    def change(store):
        with store.session() as session:
            accounts.set_active(session, username, False, _actor())

    _change(change)
    console.print(f"{username.strip().lower()} is deactivated")


@group.command("unlock")
def users_unlock(username: str = typer.Argument(..., help="The account locked by failed sign-ins.")) -> None:
    """Forget an account's failed sign-ins, so its owner can sign in again at once."""
    from clinalign import accounts

    forgotten = []
    _change(lambda store: forgotten.append(accounts.unlock(store, username, _actor())))
    console.print(f"unlocked {username.strip().lower()} ({forgotten[0]} failed sign-ins forgotten)")


@group.command("password")
def users_password(
    username: str = typer.Argument(..., help="The account whose password to set."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Set a new password (asked twice, hidden, unless --password-stdin); the account's sessions close
    and its sign-in lock is lifted."""
    from clinalign import accounts

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    _change(lambda store: accounts.reset_password(store, username, password, _actor()))
    console.print(f"password changed for {username.strip().lower()}")


@group.command("role")
def users_role(
    username: str = typer.Argument(..., help="The account."),
    role: str = typer.Argument(..., help="admin | data_expert | clinician | reviewer"),
) -> None:
    """Give an account another role (the last active admin keeps theirs)."""
    from clinalign import accounts

    def change(store):
        with store.session() as session:
            accounts.set_role(session, username, role, _actor())

    _change(change)
    console.print(f"{username.strip().lower()} is now {role}")


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
