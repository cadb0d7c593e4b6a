"""The report: self-contained HTML with the figures, plots, the simulation notice and lineage."""

import re


def test_the_report_is_self_contained_and_complete(loop):
    html = (loop / "report.html").read_text()
    assert "Simulated panel" in html and "Research use, not for clinical advice" in html
    assert html.count("data:image/png;base64,") >= 5  # models, agreement, per axis, calibration, loss curves
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing fetched from outside
    assert re.search(r"Multiple choice: \d+ items of <code>mcq.jsonl</code>", html)  # which set, how many
    for needle in (
        "Red-flag escalation",
        "Escalation of routine prompts",
        "Krippendorff",
        "Reward model",
        "ECE",
        "rests on only",  # the tiny loop's figures rest on few items: the report says so
        "Lineage of this evaluation",
        "source_file",
        'Audit chain: <span class="ok">intact',
    ):
        assert needle in html, needle


def test_the_report_shows_its_own_evaluation_not_the_newest_runs_of_another_loop(loop, tmp_path, tiny_model):
    """A second loop in the same store trains a newer model; the first loop's report still shows the
    first loop's training runs and curves, and the second loop cannot take the first loop's models."""
    import shutil
    import sqlite3

    import pytest
    from sqlalchemy import select

    from clinalign.schemas import ClinalignError
    from clinalign.stages import run_stage
    from clinalign.store import Run, Store, loops
    from tests.test_stages import _cases

    with sqlite3.connect(loop / "clinalign.db") as source, sqlite3.connect(tmp_path / "copy.db") as copy:
        source.backup(copy)
    shutil.copy(loop / "clinalign.db.secret", tmp_path / "copy.db.secret")
    store = Store.open(f"sqlite:///{tmp_path / 'copy.db'}")
    with store.reading() as session:
        (first,) = loops(session)
        first_runs = {r.id for r in session.scalars(select(Run).where(Run.loop_id == first))}
    second = run_stage("ingest", store, tmp_path, {"path": str(_cases(tmp_path / "new.jsonl", "round2", 8))}).run_id
    for stage in ("deidentify", "curate"):
        run_stage(stage, store, tmp_path, {}, loop=second)
    tiny = {"base": str(tiny_model), "lora": None, "trl": {"max_steps": 2}}
    newer_sft = run_stage("train.sft", store, tmp_path, tiny, loop=second).run_id
    with pytest.raises(ClinalignError, match=f"no preference_dataset in loop {second} yet"):
        run_stage("train.dpo", store, tmp_path, {}, loop=second)  # nothing of loop 1 is taken by default
    path = tmp_path / "again.html"
    made = run_stage("report", store, tmp_path, {"path": str(path)}, loop=first)
    html = path.read_text()
    shown = {int(n) for n in re.findall(r"<tr><td>(\d+)</td><td>[a-z.]+</td><td>succeeded", html)}
    assert shown and shown <= first_runs and newer_sft not in shown
    assert 'Audit chain: <span class="ok">intact' in html
    with store.reading() as session:
        assert session.get(Run, made.run_id).loop_id == first
