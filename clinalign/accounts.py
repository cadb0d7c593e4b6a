"""People and their roles: creating and managing accounts, checking passwords, throttling guessers.

Shared by the CLI (``clinalign users ...``) and the web app's admin page. Passwords are hashed with
Argon2id (``argon2-cffi``, RFC 9106 parameters). Sign-in is throttled per username and per address
from the ``LoginAttempt`` table, so every server instance on the same database enforces one limit;
an administrator lifts a name's lock with ``unlock``. A site always keeps one active admin: the last
one can be neither deactivated nor demoted, and a signed-in admin never deactivates or demotes
themselves (another admin, or the command line, does). Deactivation and password resets close the
account's sessions for good; deactivation (and a role other than clinician) frees the items it held.

Reads: ``User``, ``LoginAttempt``.
Writes: ``User`` (accounts, roles, passwords), ``LoginAttempt``, ``WebSession`` (closed),
``Assignment`` (claims released), audit events (sign-ins, every account change, by id).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from clinalign.audit import record_event
from clinalign.schemas import ClinalignError
from clinalign.store import Assignment, LoginAttempt, Store, User, WebSession, utcnow

ROLES = ("admin", "data_expert", "clinician", "reviewer")
# The role of an AI judge's account (``annotate.ai_judge``): not a role anyone can be given, it never signs
# in, claims an item or counts as a clinician.
AI_JUDGE_ROLE = "ai_judge"
MIN_PASSWORD = 12  # NIST SP 800-63B-4 asks for at least 15 without MFA, 8 with; 12 is this project's floor
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")

_hasher = PasswordHasher()
# Checked against when the username is unknown, so a miss takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone's")


class SignInRefused(ClinalignError):
    """Wrong credentials or too many attempts; the message never says which username exists."""


class NoAccount(ClinalignError):
    """No such account (simulated raters are not accounts anyone manages)."""


def create_user(
    session: Session, username: str, role: str, password: str | None, actor: str, specialties: list[str] = ()
) -> User:
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise ClinalignError("username: 2-63 characters, lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise ClinalignError(f"role must be one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise ClinalignError(f"password: at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.username == username)):
        raise ClinalignError(f"user {username!r} already exists")
    user = User(
        username=username,
        role=role,
        password_hash=_hasher.hash(password) if password else None,
        specialties=sorted({s.strip().lower() for s in specialties if s.strip()}),
    )
    session.add(user)
    session.flush()
    record_event(session, actor, "user.create", f"user:{user.id}", {"role": role})
    return user


def account(session: Session, who: int | str) -> User:
    """The account with this id (web forms) or username (the command line)."""
    if isinstance(who, int):
        user = session.get(User, who)
    else:
        user = session.scalar(select(User).where(User.username == who.strip().lower()))
    if user is None or user.simulated:
        raise NoAccount(f"no account {who}" if isinstance(who, int) else f"no account named {who.strip()!r}")
    return user


def _keep_an_admin(session: Session, user: User, acting_id: int | None) -> None:
    """Refuse to take ``user``'s admin rights away (deactivation or another role) when it would leave
    the site without an active admin, or when ``user`` is the admin doing it (``acting_id``: the
    signed-in account; the command line passes none, being the way back in)."""
    if user.role == "admin" and user.active:
        # Locks the active admins' rows on PostgreSQL, so two admins removing each other at the same
        # moment are taken in turn and the second sees the first's change (SQLite writers already queue).
        admins = session.scalars(
            select(User.id)
            .where(User.role == "admin", User.active.is_(True), User.simulated.is_(False))
            .with_for_update()
        ).all()
        if not set(admins) - {user.id}:
            raise ClinalignError("this is the last active admin: make another account admin first")
    if acting_id == user.id:
        raise ClinalignError("you cannot deactivate or demote your own account: ask another administrator")


def _release(session: Session, user: User) -> int:
    """Free the items ``user`` claimed and has not judged: their lease ends now, so other clinicians
    take them (after the unclaimed ones) instead of waiting up to a session timeout."""
    now = utcnow()
    return session.execute(
        update(Assignment)
        .where(Assignment.user_id == user.id, Assignment.judgement_id.is_(None), Assignment.expires_at > now)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def _close_sessions(session: Session, user: User) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def set_active(session: Session, who: int | str, active: bool, actor: str, acting_id: int | None = None) -> User:
    """Deactivate an account (its sessions are closed for good, its claimed items freed) or reactivate it."""
    user = account(session, who)
    if user.active == active:
        return user  # nothing changes, nothing to record
    if active:
        user.active = True
        record_event(session, actor, "user.activate", f"user:{user.id}")
        return user
    _keep_an_admin(session, user, acting_id)
    user.active = False
    _close_sessions(session, user)
    record_event(session, actor, "user.deactivate", f"user:{user.id}", {"released": _release(session, user)})
    return user


def set_role(session: Session, who: int | str, role: str, actor: str, acting_id: int | None = None) -> User:
    """Give an account another role; it applies from the account's next request."""
    if role not in ROLES:
        raise ClinalignError(f"role must be one of {', '.join(ROLES)}")
    user = account(session, who)
    if role == user.role:
        return user
    if role != "admin":
        _keep_an_admin(session, user, acting_id)
    payload = {"from": user.role, "to": role}
    if user.role == "clinician":
        payload["released"] = _release(session, user)  # their items are for clinicians
    user.role = role
    record_event(session, actor, "user.role", f"user:{user.id}", payload)
    return user


def reset_password(store: Store, who: int | str, password: str, actor: str) -> User:
    """Set a new password (Argon2id), close the account's sessions and lift its sign-in lock: the
    person gets in with the new password at once, and whoever held the old one is out."""
    if len(password) < MIN_PASSWORD:
        raise ClinalignError(f"password: at least {MIN_PASSWORD} characters")
    hashed = _hasher.hash(password)  # slow on purpose: outside the transaction
    with store.session() as session:
        user = account(session, who)
        if user.password_hash is None:
            raise ClinalignError(
                f"{user.username} signs in through single sign-on; their password is the identity provider's"
            )
        user.password_hash = hashed
        _close_sessions(session, user)
        record_event(session, actor, "user.password", f"user:{user.id}", {"failures": _forget(store, session, user)})
    return user


def unlock(store: Store, who: int | str, actor: str) -> int:
    """Forget the account's failed sign-ins, lifting its lock; how many were forgotten."""
    with store.session() as session:
        user = account(session, who)
        forgotten = _forget(store, session, user)
        record_event(session, actor, "user.unlock", f"user:{user.id}", {"failures": forgotten})
    return forgotten


def _forget(store: Store, session: Session, user: User) -> int:
    """Delete the account's failed sign-ins (the chain keeps its ``login.fail`` events)."""
    return session.execute(
        delete(LoginAttempt).where(
            LoginAttempt.username_hash == name_hash(store, user.username), LoginAttempt.ok.is_(False)
        )
    ).rowcount


def failures(store: Store, session: Session, users: list[User]) -> dict[int, int]:
    """Failed sign-ins within the throttle window, per account id (accounts without any left out);
    ``MAX_FAILURES_PER_USER`` or more means the account is locked."""
    hashes = {name_hash(store, u.username): u.id for u in users}
    rows = session.execute(
        select(LoginAttempt.username_hash, func.count())
        .where(
            LoginAttempt.username_hash.in_(hashes),
            LoginAttempt.ok.is_(False),
            LoginAttempt.at > utcnow() - THROTTLE_WINDOW,
        )
        .group_by(LoginAttempt.username_hash)
    ).all()
    return {hashes[h]: n for h, n in rows}


def name_hash(store: Store, username: str) -> str:
    """What a sign-in attempt keeps of the name typed: a keyed hash (people type passwords into that
    field), enough to count one name's failures and to lift its lock."""
    return hmac.new(store.secret("sign-in-names"), username.encode(), hashlib.sha256).hexdigest()


def _failures(session: Session, column, value: str) -> int:
    since = utcnow() - THROTTLE_WINDOW
    return session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(column == value, LoginAttempt.ok.is_(False), LoginAttempt.at > since)
    )


def authenticate(store: Store, username: str, password: str, address: str) -> User:
    """The user these credentials belong to; every attempt is recorded and audited.

    Argon2 is slow on purpose (tens of milliseconds), so the hash is checked between two short
    transactions, never inside one: a sign-in never holds up other people's writes.
    """
    username = username.strip().lower()[:100]
    typed = name_hash(store, username)
    with store.reading() as session:
        throttled = (
            _failures(session, LoginAttempt.username_hash, typed) >= MAX_FAILURES_PER_USER
            or _failures(session, LoginAttempt.ip, address) >= MAX_FAILURES_PER_ADDRESS
        )
        user = session.scalar(select(User).where(User.username == username))
    ok = False
    if not throttled:
        try:
            _hasher.verify(user.password_hash if user and user.password_hash else _DUMMY_HASH, password)
            ok = bool(user and user.password_hash and user.active and not user.simulated)
        except (VerificationError, InvalidHashError):
            pass
    with store.session() as session:
        if throttled:
            record_event(session, "anonymous", "login.throttled", f"address:{address}")
        else:
            session.add(LoginAttempt(username_hash=typed, ip=address, ok=ok))
        if ok:
            if _hasher.check_needs_rehash(user.password_hash):
                session.get(User, user.id).password_hash = _hasher.hash(password)
            record_event(session, user.username, "login", f"user:{user.id}")
        elif not throttled:
            # The attempted name is not recorded in the chain: people type passwords into that field.
            record_event(session, "anonymous", "login.fail", f"address:{address}")
    if throttled:
        raise SignInRefused("too many failed sign-ins: wait 15 minutes, or ask an administrator")
    if not ok:
        raise SignInRefused("wrong username or password")
    return user


def sso_user(session: Session, username: str) -> User:
    """An account signed in through the site's identity provider: it must exist and be active here."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or not user.active or user.simulated:
        record_event(session, "anonymous", "login.fail", "oidc")
        raise SignInRefused("this identity has no active clinalign account; ask an administrator")
    record_event(session, user.username, "login", f"user:{user.id}", {"method": "oidc"})
    return user
