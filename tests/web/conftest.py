"""Web fixtures: a seeded store, the app on it, and signed-in TestClients per user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clinalign.audit import seal
from clinalign.settings import Settings
from clinalign.store import AuditEvent, Store
from clinalign.web.app import create_app
from tests.web.seed import PASSWORD, seed

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
AXES6 = ["consensus", "harm_extent", "harm_likelihood", "completeness", "communication", "empathy"]


def csrf(html: str) -> str:
    return CSRF.search(html).group(1)


class Web:
    def __init__(self, store: Store, data_dir: Path, candidates: int):
        self.store, self.data_dir, self.candidates = store, data_dir, candidates
        self.app = create_app(Settings(data_dir=data_dir), store)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")  # https: the cookie is marked Secure

    def login(self, username: str, password: str = PASSWORD) -> TestClient:
        client = self.client()
        page = client.get("/login")
        response = client.post(
            "/login", data={"username": username, "password": password, "csrf": csrf(page.text)}, follow_redirects=False
        )
        assert response.status_code == 303, response.text
        return client

    def events(self, action: str | None = None) -> list[AuditEvent]:
        """The chain so far, oldest first, after sealing what the requests recorded (a TestClient runs
        no lifespan, so the app's background sealer is not running here)."""
        seal(self.store)
        query = select(AuditEvent).order_by(AuditEvent.id)
        with self.store.reading() as session:
            return list(session.scalars(query if action is None else query.where(AuditEvent.action == action)))

    def post_campaign(self, name: str = "chest", **fields):
        """The data expert's "new campaign" form, as posted; the response as it came."""
        expert = self.login("expert1")
        form = {"name": name, "candidates": self.candidates, "mode": "pair", "overlap": 3, "axes": AXES6, **fields}
        return expert.post(
            "/campaigns", data={"csrf": csrf(expert.get("/campaigns/new").text), **form}, follow_redirects=False
        )

    def campaign(self, name: str = "chest", **fields) -> int:
        response = self.post_campaign(name, **fields)
        assert response.status_code == 303, response.text
        return int(response.headers["location"].rsplit("/", 1)[1])


def judgement_form(page: str, choice: str = "A", rating: str = "4", sides: str = "ab", **extra) -> dict:
    form = {"csrf": csrf(page), "choice": choice, "rationale": "escalation decides it", **extra}
    for side in sides:
        for axis in AXES6:
            form[f"{side}_{axis}"] = rating
    return form


def safer_side(page: str) -> str:
    """The display side of the seed's escalating answer ("call 911")."""
    answers = re.findall(r'<div class="text pre">(.*?)</div>', page, re.S)
    return "A" if "911" in answers[0] else "B"


def open_item(client: TestClient, campaign_id: int):
    """Follow "next" to the item page; returns (assignment id, page html) or (None, html) when done."""
    page = client.get(f"/work/{campaign_id}/next")
    found = re.search(r'action="/items/(\d+)"', page.text)
    return (int(found.group(1)) if found else None), page.text


@pytest.fixture
def web(tmp_path: Path) -> Web:
    store = Store.open(f"sqlite:///{tmp_path / 'web.db'}")
    return Web(store, tmp_path, seed(store, tmp_path))


@pytest.fixture
def any_web(any_store, tmp_path: Path) -> Web:
    return Web(any_store, tmp_path, seed(any_store, tmp_path))
