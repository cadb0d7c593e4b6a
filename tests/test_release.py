"""The registry: promotion gated on safety (a refusal names the metric), versions, rollback; and the
served model is the current release."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clinalign import release
from clinalign.cli import app
from clinalign.schemas import ClinalignError
from clinalign.stages import run_stage
from clinalign.store import Artifact, Run


def rate(value: float, n: int = 20) -> dict:
    return {"value": value, "n": n, "low": max(0.0, value - 0.1), "high": min(1.0, value + 0.1)}


def figures(**changes) -> dict:
    """Safety figures for before and after: the same unless changed (metric=(before, after))."""
    found = {metric: {"before": rate(0.5), "after": rate(0.5)} for metric in release.SAFETY}
    for metric, (before, after) in changes.items():
        found[metric] = {"before": rate(before), "after": rate(after)}
    return found


def made(store, kind: str, uri: str = "", meta: dict | None = None) -> int:
    """An artifact as a succeeded run leaves it (the stages that make models are tested elsewhere)."""
    with store.session() as session:
        run = Run(stage="train.dpo", config={}, config_hash="x", code_version="test", status="succeeded")
        session.add(run)
        session.flush()
        run.loop_id = run.id
        artifact = Artifact(kind=kind, uri=uri or f"/models/{kind}", sha256="0" * 64, run_id=run.id, meta=meta or {})
        session.add(artifact)
        session.flush()
        return artifact.id


def evaluation(store, before: int, after: int, **changes) -> int:
    models = [
        {"key": "before", "label": "base", "artifact": before},
        {"key": "after", "label": "dpo", "artifact": after},
    ]
    return made(store, "eval_report", meta={"models": models, **figures(**changes)})


def promote(store, tmp_path, report: int, **margins):
    config = {"eval_report": report} | ({"margins": margins} if margins else {})
    return run_stage("release", store, tmp_path, config).metrics


def test_promote_gate_versions_and_rollback(store, tmp_path):
    base, first, second = (made(store, "model", f"/models/m{i}") for i in range(3))
    assert promote(store, tmp_path, evaluation(store, base, first))["version"] == 1
    with pytest.raises(ClinalignError, match="already the current release"):
        promote(store, tmp_path, evaluation(store, base, first))
    with pytest.raises(ClinalignError, match=rf"not with the current release \(v1, model {first}\)"):
        promote(store, tmp_path, evaluation(store, base, second))  # must be evaluated against what is served

    worse = evaluation(store, first, second, red_flag_escalation_rate=(0.8, 0.5), dismissive_rate=(0.1, 0.12))
    with pytest.raises(ClinalignError) as refused:
        promote(store, tmp_path, worse)
    message = str(refused.value)
    assert "red_flag_escalation_rate went from 0.800 (n=20) to 0.500 (n=20)" in message
    assert "dismissive_rate" in message and "over_escalation_rate" not in message
    with pytest.raises(ClinalignError, match="margins: unknown safety metric"):
        promote(store, tmp_path, worse, mcq_accuracy=1.0)
    assert promote(store, tmp_path, worse, red_flag_escalation_rate=0.3, dismissive_rate=0.05)["version"] == 2

    with store.reading() as session:
        assert release.current(session).meta["model"] == second
    assert run_stage("release.rollback", store, tmp_path, {}).metrics == {"version": 3, "model": first, "restores": 1}
    with store.reading() as session:
        assert release.current(session).meta["model"] == first
    with pytest.raises(ClinalignError, match="no release v9"):
        run_stage("release.rollback", store, tmp_path, {"version": 9})


def test_rollback_needs_an_earlier_model(store, tmp_path):
    with pytest.raises(ClinalignError, match="nothing is released"):
        run_stage("release.rollback", store, tmp_path, {})
    base, only = made(store, "model"), made(store, "model", "/models/only")
    promote(store, tmp_path, evaluation(store, base, only))
    with pytest.raises(ClinalignError, match="the only model ever released"):
        run_stage("release.rollback", store, tmp_path, {})


def test_the_cli_lists_releases(tmp_path, monkeypatch):
    from clinalign.settings import Settings
    from clinalign.store import Store

    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    store = Store.open(Settings().url)
    base, first = made(store, "model"), made(store, "model", "/models/first")
    report = evaluation(store, base, first)
    runner = CliRunner()
    assert "nothing released yet" in runner.invoke(app, ["releases"]).output
    promoted = runner.invoke(app, ["promote", "--eval-report", str(report)])
    assert promoted.exit_code == 0 and f"released v1: model {first}" in promoted.output
    listed = runner.invoke(app, ["releases"]).output.split()
    assert listed == ["v1", "promote", "model", str(first), "evaluation", str(report), "<-", "served"]
