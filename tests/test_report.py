"""The report: self-contained HTML with the figures, plots, the simulation notice and lineage."""

import re


def test_the_report_is_self_contained_and_complete(loop):
    html = (loop / "report.html").read_text()
    assert "Simulated panel" in html
    assert html.count("data:image/png;base64,") >= 3  # before/after, agreement, loss curves
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing fetched from outside
    for needle in (
        "Red-flag escalation",
        "Krippendorff",
        "Lineage of this evaluation",
        "source_file",
        'Audit chain: <span class="ok">intact',
    ):
        assert needle in html, needle
