"""Sign-in, sessions, CSRF and throttling, driven through the real forms."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from clinalign.audit import seal, verify_chain
from clinalign.settings import Settings
from clinalign.store import LoginAttempt, WebSession, utcnow
from clinalign.web.app import create_app
from tests.web.conftest import csrf
from tests.web.seed import PASSWORD


def test_a_fresh_install_greets_a_visitor_with_the_sign_in_page(web):
    client = web.client()
    response = client.get("/work", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    page = client.get("/login")
    assert page.status_code == 200 and 'name="password"' in page.text


def test_sign_in_sets_a_hardened_cookie_and_lands_on_the_role_home(web):
    client = web.client()
    page = client.get("/login")
    response = client.post(
        "/login", data={"username": "clin1", "password": PASSWORD, "csrf": csrf(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/work"
    cookie = [h for h in response.headers.get_list("set-cookie") if h.startswith("clinalign_session=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    token = cookie.split("=", 1)[1].split(";")[0]
    with web.store.session() as session:
        stored = [s.id for s in session.scalars(select(WebSession))]
        assert len(stored) == 1 and token not in stored[0]  # only a digest of the token is kept
    assert len(web.events("login")) == 1


def test_wrong_password_is_refused_recorded_and_says_nothing_about_which_part_was_wrong(web):
    client = web.client()
    page = client.get("/login")
    response = client.post("/login", data={"username": "clin1", "password": "nope" * 4, "csrf": csrf(page.text)})
    unknown = client.post("/login", data={"username": "nobody", "password": "nope" * 4, "csrf": csrf(page.text)})
    assert response.status_code == unknown.status_code == 401
    assert "wrong username or password" in response.text and "wrong username or password" in unknown.text
    with web.store.session() as session:
        assert session.scalar(select(func.count()).select_from(LoginAttempt).where(LoginAttempt.ok.is_(False))) == 2
    events = web.events("login.fail")
    assert len(events) == 2 and all("nope" not in e.payload + e.subject for e in events)


def test_five_failures_lock_the_account_even_for_the_right_password(web):
    client = web.client()
    token = csrf(client.get("/login").text)
    for _ in range(5):
        client.post("/login", data={"username": "clin2", "password": "wrong password!", "csrf": token})
    response = client.post("/login", data={"username": "clin2", "password": PASSWORD, "csrf": token})
    assert response.status_code == 401 and "too many failed sign-ins" in response.text
    web.login("clin1")  # another account is not affected


def test_the_sign_in_form_needs_its_csrf_cookie(web):
    client = web.client()
    response = client.post("/login", data={"username": "clin1", "password": PASSWORD, "csrf": "forged"})
    assert response.status_code == 403
    assert "did not come from clinalign" in response.text


def test_forms_without_the_session_token_are_refused(web):
    client = web.login("admin1")
    forged = client.post(
        "/admin/users", data={"csrf": "x" * 43, "username": "evil", "role": "admin", "password": "p" * 20}
    )
    missing = client.post("/admin/users", data={"username": "evil", "role": "admin", "password": "p" * 20})
    assert forged.status_code == 403 and missing.status_code == 422
    assert "evil" not in client.get("/admin/users").text


def test_sign_out_revokes_the_session_so_a_copied_cookie_is_useless(web):
    client = web.login("clin1")
    stolen = dict(client.cookies)
    page = client.get("/work")
    assert client.post("/logout", data={"csrf": csrf(page.text)}, follow_redirects=False).status_code == 303
    thief = web.client()
    thief.cookies.update(stolen)
    assert thief.get("/work", follow_redirects=False).status_code == 303  # back to sign-in
    assert thief.post("/logout", data={"csrf": "anything"}).status_code == 401


def test_an_idle_session_expires_and_a_post_gets_a_clear_401(web):
    client = web.login("clin1")
    page = client.get("/work")
    with web.store.session() as session:
        session.execute(update(WebSession).values(last_seen=utcnow() - timedelta(minutes=31)))
    response = client.post("/logout", data={"csrf": csrf(page.text)})
    assert response.status_code == 401 and "expired" in response.text
    assert "Traceback" not in response.text
    with web.store.session() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_next_only_redirects_within_the_site(web):
    client = web.client()
    token = csrf(client.get("/login").text)
    data = {"username": "clin1", "password": PASSWORD, "csrf": token}
    away = client.post("/login", data={**data, "next": "//evil.example/x"}, follow_redirects=False)
    assert away.headers["location"] == "/work"
    client = web.client()
    token = csrf(client.get("/login").text)
    inside = client.post("/login", data={**data, "csrf": token, "next": "/work/1/history"}, follow_redirects=False)
    assert inside.headers["location"] == "/work/1/history"


def test_an_admin_creates_a_user_who_can_then_sign_in_and_the_chain_holds(web):
    admin = web.login("admin1")
    page = admin.get("/admin/users")
    response = admin.post(
        "/admin/users",
        data={
            "csrf": csrf(page.text),
            "username": "dr.new",
            "role": "clinician",
            "password": "a long passphrase",
            "specialties": "Cardiology, dermatology",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    web.login("dr.new", "a long passphrase")
    short = admin.post(
        "/admin/users", data={"csrf": csrf(page.text), "username": "x2", "role": "clinician", "password": "short"}
    )
    assert short.status_code == 400 and "at least 12" in short.text
    seal(web.store)
    assert verify_chain(web.store).ok


def test_a_deactivated_account_loses_its_open_session(web):
    clinician = web.login("clin3")
    admin = web.login("admin1")
    page = admin.get("/admin/users")
    with web.store.session() as session:
        from clinalign.store import User

        user_id = session.scalar(select(User.id).where(User.username == "clin3"))
    admin.post(f"/admin/users/{user_id}/active", data={"csrf": csrf(page.text), "active": "false"})
    assert clinician.get("/work", follow_redirects=False).status_code == 303


def test_oidc_is_off_unless_configured(web):
    assert web.client().get("/login/oidc").status_code == 404
    assert "Sign in with your organisation" not in web.client().get("/login").text


def test_a_password_typed_into_the_username_field_is_kept_nowhere(web):
    typed = "Tr0ub4dor&3-Secret-Passphrase"
    client = web.client()
    token = csrf(client.get("/login").text)
    response = client.post("/login", data={"username": typed, "password": "wrong password!", "csrf": token})
    assert response.status_code == 401 and typed.lower() not in response.text.lower()
    web.login("clin1")
    with web.store.reading() as session:
        rows = [" ".join(map(str, row)) for row in session.execute(text("SELECT * FROM login_attempt")).all()]
        pending = [" ".join(map(str, row)) for row in session.execute(text("SELECT * FROM audit_pending")).all()]
    events = [" ".join((e.actor, e.action, e.subject, e.payload)) for e in web.events()]
    assert len(rows) == 2 and events
    for kept in rows + pending + events:
        assert typed.lower() not in kept.lower() and "secret-passphrase" not in kept.lower()


def _proxied_app(web, trusted: list[str]):
    return create_app(Settings(data_dir=web.data_dir, trusted_proxies=trusted), web.store)


def _failed_sign_in_from(client, forwarded_for: str) -> None:
    token = csrf(client.get("/login").text)
    data = {"username": "clin1", "password": "wrong password!", "csrf": token}
    assert client.post("/login", data=data, headers={"X-Forwarded-For": forwarded_for}).status_code == 401


def _login_cookie_over_http(client, proto: str) -> str:
    page = client.get("/login", headers={"X-Forwarded-Proto": proto})
    return [h for h in page.headers.get_list("set-cookie") if h.startswith("clinalign_login_csrf=")][0].lower()


def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(web):
    proxy = ("10.1.2.3", 50000)
    direct = TestClient(_proxied_app(web, []), base_url="http://testserver", client=proxy)
    _failed_sign_in_from(direct, "203.0.113.9")
    assert "secure" not in _login_cookie_over_http(direct, "https")
    trusted = TestClient(_proxied_app(web, ["10.1.2.3"]), base_url="http://testserver", client=proxy)
    _failed_sign_in_from(trusted, "203.0.113.9")
    assert "secure" in _login_cookie_over_http(trusted, "https")
    other = TestClient(_proxied_app(web, ["10.1.2.3"]), base_url="http://testserver", client=("10.9.9.9", 1))
    _failed_sign_in_from(other, "198.51.100.7")  # a client that is not the proxy chooses no address
    with web.store.reading() as session:
        addresses = list(session.scalars(select(LoginAttempt.ip).order_by(LoginAttempt.id)))
    assert addresses == ["10.1.2.3", "203.0.113.9", "10.9.9.9"]


def test_twenty_failures_through_a_forged_header_still_lock_the_real_address(web):
    client = TestClient(_proxied_app(web, []), base_url="http://testserver", client=("10.1.2.3", 50000))
    token = csrf(client.get("/login").text)
    for n in range(20):
        data = {"username": f"guess{n}", "password": "wrong password!", "csrf": token}
        client.post("/login", data=data, headers={"X-Forwarded-For": f"203.0.113.{n}"})
    data = {"username": "clin1", "password": PASSWORD, "csrf": token}
    refused = client.post("/login", data=data, headers={"X-Forwarded-For": "203.0.113.200"})
    assert refused.status_code == 401 and "too many" in refused.text
