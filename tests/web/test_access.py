"""Every route x every role (and no sign-in): the access rules, declared here once and walked for real."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from tests.web.conftest import csrf, judgement_form, open_item
from tests.web.seed import ROLES

PUBLIC = "public"
SIGNED_IN = {"admin", "data_expert", "clinician", "reviewer"}
CLINICIAN = {"clinician"}
EXPERTS = {"data_expert", "admin"}
READERS = {"data_expert", "admin", "reviewer"}
REVIEWER = {"reviewer"}
CLINICAL = {"clinician", "reviewer"}
ADMIN = {"admin"}

EXPECTED = {
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/login/oidc"): PUBLIC,
    ("GET", "/login/oidc/callback"): PUBLIC,
    ("GET", "/"): SIGNED_IN,
    ("POST", "/logout"): SIGNED_IN,
    ("GET", "/work"): CLINICIAN,
    ("GET", "/work/{campaign_id}/next"): CLINICIAN,
    ("GET", "/items/{assignment_id}"): CLINICIAN,
    ("POST", "/items/{assignment_id}"): CLINICIAN,
    ("GET", "/work/{campaign_id}/history"): CLINICIAN,
    ("GET", "/judgements/{judgement_id}/edit"): CLINICIAN,
    ("POST", "/judgements/{judgement_id}/edit"): CLINICIAN,
    ("GET", "/campaigns"): READERS,
    ("GET", "/campaigns/new"): EXPERTS,
    ("POST", "/campaigns"): EXPERTS,
    ("GET", "/campaigns/{campaign_id}"): READERS,
    ("POST", "/campaigns/{campaign_id}/export"): EXPERTS,
    ("GET", "/review"): REVIEWER,
    ("GET", "/review/{campaign_id}"): REVIEWER,
    ("POST", "/review/items/{task_id}"): REVIEWER,
    ("GET", "/oversight"): CLINICAL,
    ("GET", "/oversight/{interaction_id}"): CLINICAL,
    ("POST", "/oversight/{interaction_id}/decide"): CLINICAL,
    ("POST", "/oversight/{interaction_id}/flag"): CLINICAL,
    ("GET", "/monitor"): READERS,
    ("GET", "/admin/users"): ADMIN,
    ("POST", "/admin/users"): ADMIN,
    ("POST", "/admin/users/{user_id}/active"): ADMIN,
    ("POST", "/admin/users/{user_id}/unlock"): ADMIN,
    ("POST", "/admin/users/{user_id}/password"): ADMIN,
    ("POST", "/admin/users/{user_id}/role"): ADMIN,
}
USER_FOR_ROLE = {"admin": "admin1", "data_expert": "expert1", "clinician": "clin1", "reviewer": "review1"}


def routes(app) -> dict[tuple[str, str], APIRoute]:
    """Every API route, looking inside included routers (FastAPI 0.16x wraps them; no prefixes are used)."""
    found, pending = {}, list(app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):
            pending += route.original_router.routes
        elif isinstance(route, APIRoute):
            for method in route.methods - {"HEAD"}:
                found[method, route.path] = route
    return found


def declared_roles(route: APIRoute) -> set[str] | None:
    """The roles named by the route's ``require(...)`` dependency (None: no role check)."""
    for dependency in route.dependant.dependencies:
        roles = getattr(dependency.call, "roles", None)
        if roles is not None:
            return set(roles)
    return None


def test_every_route_is_in_the_matrix_and_declares_exactly_its_roles(web):
    found = routes(web.app)
    assert set(found) == set(EXPECTED), "a route was added or removed: declare who may use it in EXPECTED"
    for key, route in found.items():
        expected = EXPECTED[key]
        roles = declared_roles(route)
        if expected == PUBLIC or expected == SIGNED_IN:
            assert roles is None, f"{key} should not be limited to roles"
        else:
            assert roles == expected, f"{key} admits {roles}, expected {expected}"


@pytest.mark.parametrize("role", [None, *sorted(SIGNED_IN)])
def test_each_role_gets_in_exactly_where_the_matrix_says(web, role):
    campaign = web.campaign()
    worker = web.login("clin2")
    assignment, page = open_item(worker, campaign)
    worker.post(f"/items/{assignment}", data={"csrf": csrf(page), "choice": "cannot_judge"})
    params = {
        "campaign_id": campaign,
        "assignment_id": assignment,
        "judgement_id": 1,
        "task_id": 1,
        "user_id": 1,
        "interaction_id": 1,
    }
    client = web.login(USER_FOR_ROLE[role]) if role else web.client()
    token = csrf(client.get("/login").text) if role is None else csrf(client.get("/").text)
    for (method, path), expected in EXPECTED.items():
        if path in ("/login", "/logout"):
            continue  # signing in and out changes the client itself; test_auth covers both
        url = path.format(**params)
        response = client.request(
            method, url, data={"csrf": token} if method == "POST" else None, follow_redirects=False
        )
        where = f"{role or 'anonymous'} {method} {url}: {response.status_code}"
        if expected == PUBLIC:
            assert response.status_code not in (401, 403), where
        elif role is None:
            assert response.status_code in (401, 303), where
            if response.status_code == 303:
                assert response.headers["location"].startswith("/login"), where
        elif role in expected:
            assert response.status_code not in (401, 403), where
        else:
            assert response.status_code == 403, where
    assert set(USER_FOR_ROLE.values()) <= set(ROLES)


HUGE = "99999999999999999999"  # past PostgreSQL's integer and bigint


def test_huge_numbers_in_paths_and_forms_are_404_or_422_never_500(any_web):
    web = any_web
    campaign = web.campaign()
    clients = {role: web.login(name) for role, name in USER_FOR_ROLE.items()}
    tokens = {role: csrf(client.get("/").text) for role, client in clients.items()}
    for (method, path), expected in EXPECTED.items():
        if "{" not in path:
            continue
        role = "clinician" if expected == CLINICIAN else sorted(expected)[0]
        for number in (HUGE, str(2**31), str(2**31 - 1), "-1", "0"):
            url = re.sub(r"\{\w+\}", number, path)
            data = {"csrf": tokens[role], "active": "true", "role": "clinician", "choice": "A", "reason": "why not"}
            response = clients[role].request(method, url, data=data if method == "POST" else None)
            assert response.status_code in (404, 422), f"{method} {url}: {response.status_code}"
            assert "Traceback" not in response.text
    expert = clients["data_expert"]
    for field in ("candidates", "overlap", "gold", "disagreement"):
        for number in (HUGE, "-" + HUGE, "1e999", "nan"):
            response = web.post_campaign(f"huge {field}", **{field: number})
            assert response.status_code == 422, f"{field}={number}: {response.status_code}"
    assert expert.get(f"/campaigns/{campaign}").status_code == 200
    worker = clients["clinician"]
    assignment, page = open_item(worker, campaign)
    response = worker.post(f"/items/{assignment}", data={**judgement_form(page, rating=HUGE)})
    assert response.status_code == 422
