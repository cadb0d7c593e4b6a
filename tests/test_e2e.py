"""The whole loop in miniature: every stage ran, outputs agree with each other, the trail holds."""

from sqlalchemy import func, select, text
from typer.testing import CliRunner

from clinalign import demo
from clinalign.audit import lineage, verify_chain
from clinalign.cli import app
from clinalign.stages import LOOP
from clinalign.store import Artifact, Judgement, Run, Task
from tests.conftest import loop_evaluation, newest


def test_every_stage_ran_once_and_succeeded(loop_store, loop):
    with loop_store.session() as session:
        runs = session.scalars(select(Run).order_by(Run.id)).all()
    # The loop as the stage table orders it, then the scenarios and the suites before the report.
    suites = ["scenarios"] + ["evaluate"] * len(demo.SUITES)
    assert [r.stage for r in runs] == list(LOOP[:-1]) + suites + list(LOOP[-1:])
    assert {r.status for r in runs} == {"succeeded"}
    assert (loop / "report.html").exists()


def test_outputs_are_consistent(loop_store):
    with loop_store.session() as session:
        prefs = newest(session, "preference_dataset")
        tasks = session.scalar(select(func.count()).select_from(Task))
        judgements = session.scalar(select(func.count()).select_from(Judgement))
        reward = newest(session, "reward_model")
    assert judgements == 3 * tasks  # the panel's overlap
    meta = prefs.meta
    assert meta["train_pairs"] + meta["test_pairs"] + meta["no_consensus"] + meta["tie_or_unacceptable"] == tasks
    assert reward.meta["train_pairs"] == prefs.meta["train_pairs"]


def test_lineage_reaches_from_the_report_back_to_the_source_file(loop_store):
    with loop_store.session() as session:
        report = newest(session, "report")
        kinds = {step.artifact.kind for step in lineage(session, report.id)}
    assert {
        "eval_report",
        "model",
        "reward_model",
        "preference_dataset",
        "judgements",
        "candidates",
        "prompt_set",
        "records",
        "raw_records",
        "source_file",
    } <= kinds


def test_audit_verify_passes_then_names_an_edited_row(loop, monkeypatch, tmp_path):
    import shutil

    from clinalign.store import Store

    copy = tmp_path / "copy"
    shutil.copytree(loop, copy)
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(copy))
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    store = Store.open(f"sqlite:///{copy / 'clinalign.db'}")
    assert verify_chain(store).ok
    with store.session() as session:
        victim = session.scalar(text("select id from audit_event where action = 'judgement.submit' limit 1 offset 7"))
        session.execute(text("update audit_event set actor = 'someone-else' where id = :i"), {"i": victim})
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 2 and f"failed at event {victim}" in result.output
    lineage_out = runner.invoke(app, ["lineage", str(_report_id(store))])
    assert lineage_out.exit_code == 0 and "source_file" in lineage_out.output


def _report_id(store) -> int:
    with store.session() as session:
        return session.scalar(select(Artifact.id).where(Artifact.kind == "report"))


def test_the_loop_can_tune_with_ppo_and_evaluates_every_model_of_its_lineage(tiny_model, tmp_path):
    from clinalign import demo
    from clinalign.store import Store
    from tests.tiny_model import TINY_LOOP

    sizes = {
        **TINY_LOOP,
        "train.ppo": {"steps": 2, "batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "lora": {"layers": None}},
    }
    demo.run(tmp_path / "ppo", base=str(tiny_model), sizes=sizes, algorithm="ppo")
    store = Store.open(f"sqlite:///{tmp_path / 'ppo' / 'clinalign.db'}")
    with store.session() as session:
        stages = session.scalars(select(Run.stage).order_by(Run.id)).all()
        evaluated = loop_evaluation(session).meta
    assert "train.ppo" in stages and "train.dpo" not in stages
    assert [m["label"] for m in evaluated["models"]][1:] == ["sft", "ppo"], evaluated["models"]
    report = (tmp_path / "ppo" / "report.html").read_text()
    assert "train.ppo: reward, KL and length, step by step" in report and "Reward-hacking monitor:" in report


def test_an_unknown_algorithm_is_refused_before_anything_runs(tmp_path):
    import pytest

    from clinalign import demo
    from clinalign.schemas import ClinalignError

    with pytest.raises(ClinalignError, match="unknown algorithm 'ppx'"):
        demo.run(tmp_path / "x", algorithm="ppx")
    assert not (tmp_path / "x").exists()


def test_the_demo_takes_stage_settings_and_refuses_wrong_ones_before_anything_runs(tmp_path):
    import pytest

    from clinalign import demo
    from clinalign.schemas import ClinalignError

    stages = demo.order("ppo")
    assert demo.by_stage(["train.ppo.steps=24", "train.ppo.kl.target=3", "generate.max_new_tokens=8"], stages) == {
        "train.ppo": ["steps=24", "kl.target=3"],
        "generate": ["max_new_tokens=8"],
    }
    for items, says in [
        (["train.dpo.beta=0.2"], "begin the key with one of the demo's stages"),  # not in a PPO loop
        (["train.ppo.stepz=24"], "stepz"),
        (["train.ppo.steps=-1"], "steps"),
    ]:
        with pytest.raises(ClinalignError, match=says):
            demo.run(tmp_path / "x", algorithm="ppo", overrides=items)
        assert not (tmp_path / "x").exists()
