"""The store on SQLite and PostgreSQL: migrations, constraints, the PHI gate."""

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from clinalign.store import (
    DEIDENTIFIED,
    Artifact,
    Candidate,
    Judgement,
    Prompt,
    RawRecord,
    Record,
    Run,
    Store,
    Task,
    User,
    deidentified_records,
)

RATINGS = {"accuracy": 3, "harm": 3, "completeness": 3, "communication": 3, "empathy": 3}


def _run(session) -> Run:
    run = Run(stage="test", config={}, config_hash="0" * 64, code_version="t", status="running")
    session.add(run)
    session.flush()
    return run


def _record(session, run: Run, external_id: str, status: str = DEIDENTIFIED) -> Record:
    raw = RawRecord(external_id=external_id, source="f", source_line=1, payload={}, run_id=run.id)
    session.add(raw)
    session.flush()
    record = Record(
        raw_id=raw.id,
        external_id=external_id,
        deid_status=status,
        persona="patient",
        specialty="x",
        risk="routine",
        prompt=f"prompt {external_id}",
        reference="r",
        run_id=run.id,
    )
    session.add(record)
    session.flush()
    return record


def _task(session) -> tuple[int, int]:
    """The minimal chain record -> prompt -> two candidates -> task, plus a rater."""
    run = _run(session)
    record = _record(session, run, "c1")
    prompt = Prompt(
        record_id=record.id,
        dataset_version="v",
        split="train",
        persona="patient",
        specialty="x",
        risk="routine",
        text="p",
        reference="r",
        run_id=run.id,
    )
    model = Artifact(kind="model", uri="m")
    user = User(username="dr-a", role="clinician")
    session.add_all([prompt, model, user])
    session.flush()
    a, b = (Candidate(prompt_id=prompt.id, model_artifact_id=model.id, text=t, run_id=run.id) for t in "ab")
    session.add_all([a, b])
    session.flush()
    task = Task(prompt_id=prompt.id, candidate_a_id=a.id, candidate_b_id=b.id, overlap=3, run_id=run.id)
    session.add(task)
    session.flush()
    return task.id, user.id


def test_migrations_create_every_table_and_are_idempotent(any_store: Store):
    from clinalign.store import Base

    tables = set(inspect(any_store.engine).get_table_names())
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    any_store.migrate()  # a second upgrade is a no-op
    with any_store.session() as session:
        assert session.scalar(text("select version_num from alembic_version")) == "0007"


def test_migrations_match_the_models(any_store: Store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from clinalign.store import Base

    with any_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store):
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_are_enforced(any_store: Store):
    with pytest.raises(IntegrityError), any_store.session() as session:
        session.add(Task(prompt_id=999, candidate_a_id=1, candidate_b_id=2, overlap=3, run_id=999))
        session.flush()


def test_one_judgement_per_rater_per_task_and_a_failed_write_leaves_nothing(any_store: Store):
    with any_store.session() as session:
        task_id, user_id = _task(session)
        session.add(Judgement(task_id=task_id, user_id=user_id, choice="A", ratings_a=RATINGS, ratings_b=RATINGS))
    with pytest.raises(IntegrityError), any_store.session() as session:
        session.add(Judgement(task_id=task_id, user_id=user_id, choice="B", ratings_a=RATINGS, ratings_b=RATINGS))
        session.flush()
    with any_store.session() as session:
        assert [j.choice for j in session.scalars(select(Judgement))] == ["A"]


def test_the_phi_gate_returns_only_deidentified_records(any_store: Store):
    with any_store.session() as session:
        run = _run(session)
        _record(session, run, "c0", status="pending")
        _record(session, run, "c1")
    with any_store.session() as session:
        assert [r.external_id for r in deidentified_records(session)] == ["c1"]
