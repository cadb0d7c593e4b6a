"""The stage table and lineage-first inputs: a stage continues one loop and never takes another
loop's newest artifact by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from clinalign.schemas import ClinalignError
from clinalign.stages import BY_NAME, LOOP, STAGES, made_by, run_stage
from clinalign.store import Prompt, Record, Run, loops


def _cases(path: Path, prefix: str, n: int = 6) -> Path:
    rows = [
        {
            "id": f"{prefix}-{i}",
            "prompt": f"{prefix} question {i}: I have had a sore throat for {i + 2} days. Should I see someone?",
            "reference": "See your doctor if it lasts more than a week, or sooner if you cannot swallow.",
            "risk": "routine",
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_the_table_is_whole():
    assert len({s.name for s in STAGES}) == len(STAGES) and set(LOOP) <= set(BY_NAME)
    for stage in STAGES:
        assert stage.configs.startswith("configs/") and stage.summary.endswith(".")
        for kind in stage.reads:
            assert kind in ("source_file", "external_model") or made_by(kind), (stage.name, kind)
    assert made_by("prompt_set") == "curate" and made_by("reward_model") == "train reward"


def test_each_ingest_begins_a_loop_and_later_stages_stay_in_theirs(store, tmp_path):
    first = run_stage("ingest", store, tmp_path, {"path": str(_cases(tmp_path / "a.jsonl", "alpha"))})
    second = run_stage("ingest", store, tmp_path, {"path": str(_cases(tmp_path / "b.jsonl", "beta", 4))})
    with store.reading() as session:
        assert loops(session) == [first.run_id, second.run_id]
    with pytest.raises(ClinalignError, match=r"the store holds 2 loops .*name one with --loop"):
        run_stage("deidentify", store, tmp_path, {})
    run_stage("deidentify", store, tmp_path, {}, loop=first.run_id)
    with store.reading() as session:
        prompts = [r.prompt for r in session.scalars(select(Record))]
    assert len(prompts) == 6 and all(p.startswith("alpha") for p in prompts)
    with pytest.raises(ClinalignError, match=f"no records in loop {second.run_id} yet: run `clinalign deidentify`"):
        run_stage("curate", store, tmp_path, {}, loop=second.run_id)  # loop 1's records are not loop 2's
    run_stage("deidentify", store, tmp_path, {}, loop=second.run_id)
    curated = run_stage("curate", store, tmp_path, {"test_fraction": 0.25}, loop=second.run_id)
    with store.reading() as session:
        texts = [p.text for p in session.scalars(select(Prompt).where(Prompt.run_id == curated.run_id))]
        runs = {r.id: r.loop_id for r in session.scalars(select(Run))}
    assert len(texts) == 4 and all(t.startswith("beta") for t in texts)
    assert runs[curated.run_id] == second.run_id
    with pytest.raises(ClinalignError, match="no loop 999"):
        run_stage("curate", store, tmp_path, {}, loop=999)


def test_an_explicit_input_takes_its_own_loop(store, tmp_path):
    from tests.web.seed import seed

    run_stage("ingest", store, tmp_path, {"path": str(_cases(tmp_path / "a.jsonl", "alpha"))})
    candidates = seed(store, tmp_path, prompts=3)  # a generate run of its own: a second loop
    with pytest.raises(ClinalignError, match="the store holds 2 loops"):
        run_stage("annotate.campaign", store, tmp_path, {"name": "x"}, actor="t")
    made = run_stage("annotate.campaign", store, tmp_path, {"name": "x", "candidates": candidates}, actor="t")
    with store.reading() as session:
        seeded = session.scalar(select(Run.loop_id).where(Run.stage == "generate"))
        assert session.get(Run, made.run_id).loop_id == seeded


def test_a_failed_first_ingest_begins_no_loop(store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(ClinalignError):
        run_stage("ingest", store, tmp_path, {"path": str(bad)})
    with store.reading() as session:
        assert loops(session) == []
    with pytest.raises(ClinalignError, match="no raw_records in the store yet: run `clinalign ingest` first"):
        run_stage("deidentify", store, tmp_path, {})


def test_file_mode_and_failed_runs_begin_no_loop(store, tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"text": "Seen by Dr Maria Delgado on 03/04/2026."}) + "\n")
    run_stage("ingest", store, tmp_path, {"path": str(_cases(tmp_path / "a.jsonl", "alpha"))})
    run_stage("deidentify.file", store, tmp_path, {}, source=notes, target=tmp_path / "clean.jsonl")
    with pytest.raises(ClinalignError):
        run_stage("ingest", store, tmp_path, {"path": str(tmp_path / "missing.jsonl")})
    with store.reading() as session:
        assert len(loops(session)) == 1
    run_stage("deidentify", store, tmp_path, {})  # nothing to name: the store still holds one loop
