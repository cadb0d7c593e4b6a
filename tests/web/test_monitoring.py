"""The monitoring page: live rates, trips plot, fairness by tag, and the newest report's drift."""

from __future__ import annotations

from clinalign import stages
from tests.test_monitor import EMERGENCY, ROUTINE, serve


def test_the_monitoring_page_shows_rates_fairness_and_drift(web):
    assert "No report yet" in web.login("admin1").get("/monitor").text
    for i in range(12):
        serve(web.store, EMERGENCY if i % 2 else ROUTINE, "Rest at home.", {"language": "es" if i < 6 else "en"})
    stages.run_stage("monitor", web.store, web.data_dir, {"hours": 1})
    page = web.login("review1").get("/monitor")
    assert page.status_code == 200
    assert "Answers served" in page.text and "<td>12</td>" in page.text
    assert "Guardrail trip rates by rule" in page.text  # the plot's alt text
    assert "<h3>language</h3>" in page.text and "too few to compare" in page.text
    assert "no drift detected" in page.text or "fewer than 10 prompts" in page.text
    assert web.login("clin1").get("/monitor").status_code == 403
