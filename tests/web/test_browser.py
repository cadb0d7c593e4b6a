"""End to end in real Chromium (Debian's, driven by Playwright): sign in, label three items with the
keyboard only, adjudicate the disputed one, export. Keeps a screenshot of the comparison screen at
1366x768 in ``test-artifacts/`` (or ``$CLINALIGN_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bench.annotate_load import free_port, prepare, start_server
from clinalign.store import Adjudication, Judgement, Store
from tests.web.seed import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)
AXES6 = ["consensus", "harm_extent", "harm_likelihood", "completeness", "communication", "empathy"]


def _tie_votes(base: str, campaign: int, items: int) -> None:
    """clin2 judges the first items "tie" over plain HTTP, so clin1's choices split each of them."""
    with httpx.Client(base_url=base) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": "clin2", "password": PASSWORD, "csrf": token})
        for _ in range(items):
            page = client.get(f"/work/{campaign}/next", follow_redirects=True)
            item = re.search(r'action="(/items/\d+)"', page.text).group(1)
            form = {"csrf": re.search(r'name="csrf" value="([^"]+)"', page.text).group(1), "choice": "tie"}
            form.update({f"{side}_{axis}": "3" for side in "ab" for axis in AXES6})
            assert client.post(item, data=form).status_code in (200, 303)


def _sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_label_adjudicate_and_export_in_a_real_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'browser.db'}"
    campaign = prepare(url, tmp_path, clinicians=0, prompts=6, overlap=2)
    port = free_port()
    server = start_server(url, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("CLINALIGN_TEST_ARTIFACTS", "test-artifacts"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        _tie_votes(base, campaign, 3)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
            page = context.new_page()
            _sign_in(page, base, "clin1")
            page.click(f"a[href='/work/{campaign}/next']")
            for n in range(3):
                page.wait_for_selector("form#judge")
                page.keyboard.press("a")  # "A is better"
                for _ in range(12):  # six axes for each answer: the highlighted row moves on by itself
                    page.keyboard.press("4")
                if n == 0:
                    assert page.is_checked("input[name=choice][value=A]")
                    button = page.locator(".decision button[type=submit]").bounding_box()
                    assert button["y"] + button["height"] <= 768  # "save and next" is on screen at 1366x768
                    page.screenshot(path=str(shots / "comparison-screen.png"))
                page.keyboard.press("Control+Enter")
                page.wait_for_load_state("networkidle")
            _sign_in(page, base, "review1")
            page.goto(f"{base}/review/{campaign}")
            page.check("input[name=choice][value=A]")
            page.fill("textarea[name=reason]", "A sends the patient to emergency care")
            page.click("form.card button[type=submit]")
            page.wait_for_load_state("networkidle")
            _sign_in(page, base, "expert1")
            page.goto(f"{base}/campaigns/{campaign}")
            with page.expect_download() as download:
                page.click("text=Export training data")
            target = tmp_path / download.value.suggested_filename
            download.value.save_as(target)
            browser.close()
        assert "judgements.parquet" in zipfile.ZipFile(target).namelist()
    finally:
        server.terminate()
        server.wait(timeout=30)
    with Store.open(url, migrate=False).session() as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 6  # 3 by keyboard, 3 by clin2
        assert session.scalar(select(func.count()).select_from(Adjudication)) == 1
    assert (shots / "comparison-screen.png").stat().st_size > 10_000
