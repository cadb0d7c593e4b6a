"""Accounts: the rules that keep a site administrable (always one active admin), unlocking, password
resets and role changes, from the domain functions and from ``clinalign users``."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from clinalign import accounts
from clinalign.audit import verify_chain
from clinalign.cli import app
from clinalign.schemas import ClinalignError
from clinalign.store import AuditEvent, AuditPending, LoginAttempt, Store, User, WebSession

runner = CliRunner()
PASSWORD = "correct horse battery staple"


def _user(store: Store, name: str) -> User:
    with store.reading() as session:
        return session.scalar(select(User).where(User.username == name))


def _fail_sign_ins(store: Store, name: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(accounts.SignInRefused):
            accounts.authenticate(store, name, "wrong password!", "10.0.0.1")


@pytest.fixture
def people(any_store: Store) -> Store:
    store = any_store
    with store.session() as session:
        accounts.create_user(session, "boss", "admin", PASSWORD, "test")
        accounts.create_user(session, "doc", "clinician", PASSWORD, "test")
        accounts.create_user(session, "sso.doc", "clinician", None, "test")
    return store


def test_the_last_active_admin_can_be_neither_deactivated_nor_demoted(people):
    boss = _user(people, "boss")
    with people.session() as session, pytest.raises(ClinalignError, match="last active admin"):
        accounts.set_active(session, boss.id, False, "test")
    with people.session() as session, pytest.raises(ClinalignError, match="last active admin"):
        accounts.set_role(session, boss.id, "clinician", "test")
    with people.session() as session:
        second = accounts.create_user(session, "boss2", "admin", PASSWORD, "test")
        accounts.set_active(session, boss.id, False, "test")  # another admin is left: allowed
    with people.session() as session, pytest.raises(ClinalignError, match="last active admin"):
        accounts.set_role(session, second.id, "reviewer", "test")
    with people.session() as session:
        accounts.set_active(session, boss.id, True, "test")  # reactivation
        accounts.set_role(session, second.id, "reviewer", "test")
    assert (_user(people, "boss").active, _user(people, "boss2").role) == (True, "reviewer")


def test_an_admin_signed_in_cannot_lock_themselves_out(people):
    with people.session() as session:
        accounts.create_user(session, "boss2", "admin", PASSWORD, "test")
    boss = _user(people, "boss")
    with people.session() as session, pytest.raises(ClinalignError, match="another administrator"):
        accounts.set_active(session, boss.id, False, "boss", acting_id=boss.id)
    with people.session() as session, pytest.raises(ClinalignError, match="another administrator"):
        accounts.set_role(session, boss.id, "clinician", "boss", acting_id=boss.id)
    assert _user(people, "boss").active and _user(people, "boss").role == "admin"


def test_deactivation_closes_sessions_for_good(people):
    doc = _user(people, "doc")
    with people.session() as session:
        session.add(WebSession(id="0" * 64, user_id=doc.id, csrf="x"))
    with people.session() as session:
        accounts.set_active(session, doc.id, False, "test")
        accounts.set_active(session, doc.id, True, "test")
    with people.reading() as session:  # reactivating does not bring a copied cookie back to life
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_unlock_forgets_only_that_names_failures(people):
    _fail_sign_ins(people, "doc", accounts.MAX_FAILURES_PER_USER)
    _fail_sign_ins(people, "boss", 2)
    with pytest.raises(accounts.SignInRefused, match="too many"):
        accounts.authenticate(people, "doc", PASSWORD, "10.0.0.2")
    doc, boss = _user(people, "doc"), _user(people, "boss")
    with people.reading() as session:
        assert accounts.failures(people, session, [doc, boss]) == {doc.id: 5, boss.id: 2}
    assert accounts.unlock(people, doc.id, "test") == 5
    assert accounts.authenticate(people, "doc", PASSWORD, "10.0.0.2").username == "doc"
    with people.reading() as session:
        assert session.scalar(select(func.count()).select_from(LoginAttempt).where(LoginAttempt.ok.is_(False))) == 2


def test_a_password_reset_hashes_with_argon2id_unlocks_and_closes_sessions(people):
    doc = _user(people, "doc")
    _fail_sign_ins(people, "doc", accounts.MAX_FAILURES_PER_USER)
    with people.session() as session:
        session.add(WebSession(id="1" * 64, user_id=doc.id, csrf="x"))
    with pytest.raises(ClinalignError, match="at least 12"):
        accounts.reset_password(people, doc.id, "short", "test")
    with pytest.raises(ClinalignError, match="single sign-on"):
        accounts.reset_password(people, _user(people, "sso.doc").id, "a new long passphrase", "test")
    accounts.reset_password(people, doc.id, "a new long passphrase", "test")
    stored = _user(people, "doc").password_hash
    assert stored.startswith("$argon2id$") and "a new long passphrase" not in stored
    assert accounts.authenticate(people, "doc", "a new long passphrase", "10.0.0.3").id == doc.id
    with pytest.raises(accounts.SignInRefused):
        accounts.authenticate(people, "doc", PASSWORD, "10.0.0.3")
    with people.reading() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0
        payloads = [p.payload for p in session.scalars(select(AuditPending))]
    assert all("passphrase" not in str(p) for p in payloads)


def test_roles_must_exist_and_every_change_is_audited_by_id(people):
    doc = _user(people, "doc")
    with people.session() as session, pytest.raises(ClinalignError, match="role must be one of"):
        accounts.set_role(session, doc.id, "king", "test")
    with people.session() as session, pytest.raises(accounts.NoAccount):
        accounts.set_role(session, 424242, "reviewer", "test")
    with people.session() as session:
        accounts.set_role(session, doc.id, "reviewer", "test")
    with people.reading() as session:
        events = [(e.action, e.subject, json.loads(e.payload)) for e in session.scalars(select(AuditPending))]
    assert ("user.role", f"user:{doc.id}", {"from": "clinician", "to": "reviewer", "released": 0}) in events


# The command line


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CLINALIGN_DATABASE_URL", raising=False)
    for name, role in (("boss", "admin"), ("doc", "clinician")):
        added = runner.invoke(app, ["users", "add", name, "--role", role, "--password-stdin"], input=PASSWORD + "\n")
        assert added.exit_code == 0, added.output
    from clinalign.settings import Settings

    return Store.open(Settings().url, migrate=False)


def _one_line_error(result, says: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.output


def test_the_cli_deactivates_activates_changes_roles_and_guards_the_last_admin(env):
    _one_line_error(runner.invoke(app, ["users", "deactivate", "boss"]), "last active admin")
    _one_line_error(runner.invoke(app, ["users", "role", "boss", "clinician"]), "last active admin")
    _one_line_error(runner.invoke(app, ["users", "role", "doc", "king"]), "role must be one of")
    _one_line_error(runner.invoke(app, ["users", "deactivate", "nobody"]), "no account named")
    assert runner.invoke(app, ["users", "deactivate", "doc"]).exit_code == 0
    assert not _user(env, "doc").active
    shown = runner.invoke(app, ["users", "activate", "doc"])
    assert shown.exit_code == 0 and "doc is active" in shown.output
    assert runner.invoke(app, ["users", "role", "doc", "admin"]).exit_code == 0
    assert runner.invoke(app, ["users", "role", "boss", "reviewer"]).exit_code == 0  # doc is an admin now
    assert (_user(env, "doc").role, _user(env, "boss").role) == ("admin", "reviewer")
    with env.reading() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent))]  # sealed by each command
    assert actions[-4:] == ["user.deactivate", "user.activate", "user.role", "user.role"]
    assert verify_chain(env).ok


def test_the_cli_unlocks_and_resets_passwords(env):
    _fail_sign_ins(env, "doc", accounts.MAX_FAILURES_PER_USER)
    listed = runner.invoke(app, ["users", "list"], terminal_width=200)
    assert "locked" in listed.output
    unlocked = runner.invoke(app, ["users", "unlock", "doc"])
    assert unlocked.exit_code == 0 and "5 failed sign-ins forgotten" in unlocked.output
    assert accounts.authenticate(env, "doc", PASSWORD, "10.0.0.9").username == "doc"
    _one_line_error(
        runner.invoke(app, ["users", "password", "doc", "--password-stdin"], input="short\n"), "at least 12"
    )
    changed = runner.invoke(app, ["users", "password", "doc", "--password-stdin"], input="another long passphrase\n")
    assert changed.exit_code == 0 and "password changed for doc" in changed.output
    prompted = runner.invoke(app, ["users", "password", "doc"], input="third long passphrase\nthird long passphrase\n")
    assert prompted.exit_code == 0, prompted.output
    assert accounts.authenticate(env, "doc", "third long passphrase", "10.0.0.9").username == "doc"
    with env.reading() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent))]
    assert {"user.unlock", "user.password"} <= set(actions)
    assert verify_chain(env).ok
