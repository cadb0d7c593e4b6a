"""The administrator's accounts page: deactivate and reactivate, unlock, reset a password, change a role;
every action a CSRF-checked form, an audit event, and never one that leaves the site without an admin."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from clinalign import accounts
from clinalign.store import Assignment, LoginAttempt, User, WebSession, aware, utcnow
from tests.web.conftest import csrf, judgement_form, open_item
from tests.web.seed import PASSWORD


def _id(web, name: str) -> int:
    with web.store.reading() as session:
        return session.scalar(select(User.id).where(User.username == name))


def _account(web, name: str) -> User:
    with web.store.reading() as session:
        return session.scalar(select(User).where(User.username == name))


def _fail(web, name: str, times: int) -> None:
    client = web.client()
    token = csrf(client.get("/login").text)
    for _ in range(times):
        client.post("/login", data={"username": name, "password": "wrong password!", "csrf": token})


def test_the_page_offers_each_action_per_account_and_shows_who_is_locked(web):
    _fail(web, "clin2", accounts.MAX_FAILURES_PER_USER)
    _fail(web, "clin3", 1)
    page = web.login("admin1").get("/admin/users").text
    clin2 = _id(web, "clin2")
    for action in ("active", "unlock", "password", "role"):
        assert f'action="/admin/users/{clin2}/{action}"' in page, action
    assert "locked (5 failed sign-ins)" in page and "active · 1 failed sign-in<" in page
    admin1 = _id(web, "admin1")  # one's own account: no deactivation or demotion offered
    assert f'action="/admin/users/{admin1}/active"' not in page and f'action="/admin/users/{admin1}/role"' not in page


def test_an_admin_unlocks_an_account_and_its_owner_signs_in_again(web):
    _fail(web, "clin2", accounts.MAX_FAILURES_PER_USER)
    locked = web.client()
    token = csrf(locked.get("/login").text)
    refused = locked.post("/login", data={"username": "clin2", "password": PASSWORD, "csrf": token})
    assert refused.status_code == 401 and "too many" in refused.text
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    response = admin.post(f"/admin/users/{_id(web, 'clin2')}/unlock", data={"csrf": csrf(page)}, follow_redirects=False)
    assert response.status_code == 303
    assert "Unlocked clin2" in admin.get(response.headers["location"]).text
    web.login("clin2")
    events = web.events("user.unlock")
    assert [(e.actor, e.subject, json.loads(e.payload)) for e in events] == [
        ("admin1", f"user:{_id(web, 'clin2')}", {"failures": 5})
    ]


def test_an_admin_resets_a_password_and_the_old_one_and_its_sessions_stop_working(web):
    owner = web.login("clin3")
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    url = f"/admin/users/{_id(web, 'clin3')}/password"
    differ = admin.post(
        url, data={"csrf": csrf(page), "password": "a new long passphrase", "repeat": "a new long pass"}
    )
    assert differ.status_code == 400 and "differ" in differ.text and "passphrase" not in differ.text
    short = admin.post(url, data={"csrf": csrf(page), "password": "short", "repeat": "short"})
    assert short.status_code == 400 and "at least 12" in short.text
    done = admin.post(
        url,
        data={"csrf": csrf(page), "password": "a new long passphrase", "repeat": "a new long passphrase"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert owner.get("/work", follow_redirects=False).status_code == 303  # signed out
    web.login("clin3", "a new long passphrase")
    client = web.client()
    old = client.post(
        "/login", data={"username": "clin3", "password": PASSWORD, "csrf": csrf(client.get("/login").text)}
    )
    assert old.status_code == 401
    assert _account(web, "clin3").password_hash.startswith("$argon2id$")
    events = web.events("user.password")
    assert len(events) == 1 and events[0].actor == "admin1" and "passphrase" not in events[0].payload


def test_an_admin_changes_a_role_and_the_new_role_applies_at_once(web):
    reviewer = web.login("review1")
    assert reviewer.get("/work").status_code == 403
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    url = f"/admin/users/{_id(web, 'review1')}/role"
    assert admin.post(url, data={"csrf": csrf(page), "role": "king"}).status_code == 400
    assert admin.post(url, data={"csrf": csrf(page), "role": "clinician"}, follow_redirects=False).status_code == 303
    assert reviewer.get("/work").status_code == 200
    assert [json.loads(e.payload) for e in web.events("user.role")] == [{"from": "reviewer", "to": "clinician"}]


def test_the_last_admin_cannot_deactivate_or_demote_themselves(web):
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    me = _id(web, "admin1")
    off = admin.post(f"/admin/users/{me}/active", data={"csrf": csrf(page), "active": "false"})
    assert off.status_code == 400 and "admin" in off.text
    demoted = admin.post(f"/admin/users/{me}/role", data={"csrf": csrf(page), "role": "clinician"})
    assert demoted.status_code == 400
    assert _account(web, "admin1").active and _account(web, "admin1").role == "admin"
    assert admin.get("/admin/users").status_code == 200  # still signed in and still an admin


def test_even_with_another_admin_an_admin_does_not_deactivate_themselves(web):
    with web.store.session() as session:
        accounts.create_user(session, "admin2", "admin", PASSWORD, "test")
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    off = admin.post(f"/admin/users/{_id(web, 'admin1')}/active", data={"csrf": csrf(page), "active": "false"})
    assert off.status_code == 400 and "another administrator" in off.text
    other = web.login("admin2")  # another admin may, and may reactivate them
    token = csrf(other.get("/admin/users").text)
    url = f"/admin/users/{_id(web, 'admin1')}/active"
    assert "admin1 is deactivated" in other.post(url, data={"csrf": token, "active": "false"}).text
    assert not _account(web, "admin1").active
    assert admin.get("/admin/users", follow_redirects=False).status_code == 303  # signed out
    assert "admin1 can sign in again" in other.post(url, data={"csrf": token, "active": "true"}).text
    assert _account(web, "admin1").active
    assert [e.action for e in web.events() if e.action.startswith("user.") and e.actor == "admin2"] == [
        "user.deactivate",
        "user.activate",
    ]


def test_every_admin_form_checks_its_csrf_token_and_changes_nothing_without_it(web):
    _fail(web, "clin2", accounts.MAX_FAILURES_PER_USER)
    admin = web.login("admin1")
    target = _id(web, "clin2")
    forms = {
        "active": {"active": "false"},
        "unlock": {},
        "password": {"password": "a new long passphrase", "repeat": "a new long passphrase"},
        "role": {"role": "reviewer"},
    }
    before = _account(web, "clin2")
    for action, fields in forms.items():
        response = admin.post(f"/admin/users/{target}/{action}", data={"csrf": "x" * 43, **fields})
        assert response.status_code == 403, action
    after = _account(web, "clin2")
    assert (after.active, after.role, after.password_hash) == (before.active, before.role, before.password_hash)
    with web.store.reading() as session:
        assert session.scalar(select(func.count()).select_from(LoginAttempt).where(LoginAttempt.ok.is_(False))) == 5
    assert not [e for e in web.events() if e.action.startswith("user.") and e.actor == "admin1"]


def test_deactivating_a_clinician_frees_the_item_they_held(web):
    campaign = web.campaign(overlap=1)
    holder = web.login("clin1")
    held, _ = open_item(holder, campaign)
    admin = web.login("admin1")
    page = admin.get("/admin/users").text
    admin.post(f"/admin/users/{_id(web, 'clin1')}/active", data={"csrf": csrf(page), "active": "false"})
    with web.store.reading() as session:
        assert aware(session.get(Assignment, held).expires_at) <= utcnow()
        sessions = select(func.count()).select_from(WebSession).where(WebSession.user_id == _id(web, "clin1"))
        assert session.scalar(sessions) == 0
    [event] = web.events("user.deactivate")
    assert json.loads(event.payload) == {"released": 1}
    other = web.login("clin2")  # without waiting for the lease, every item reaches the next clinician
    judged = []
    while (found := open_item(other, campaign))[0] is not None:
        other.post(f"/items/{found[0]}", data=judgement_form(found[1]))
        judged.append(found[0])
    assert len(judged) == 12 and judged[-1] == held
