"""Audit trail and lineage on SQLite and PostgreSQL."""

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from clinalign import curate
from clinalign.audit import lineage, record_event, track_run, verify_chain
from clinalign.schemas import ClinalignError
from clinalign.store import AuditEvent, Run, RunIO, Store


def _events(store: Store, n: int) -> None:
    with store.session() as session:
        for i in range(n):
            record_event(session, f"user-{i % 2}", "judgement.submit", f"task:{i}", {"choice": "A"})


def test_an_intact_chain_verifies(any_store: Store):
    _events(any_store, 5)
    with any_store.session() as session:
        report = verify_chain(session)
    assert report.ok and report.events == 5


def test_an_edited_row_is_named(any_store: Store):
    _events(any_store, 5)
    with any_store.session() as session:
        third = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()[2]
        session.execute(
            text("update audit_event set payload = :p where id = :i"), {"p": '{"choice":"B"}', "i": third.id}
        )
    with any_store.session() as session:
        report = verify_chain(session)
    assert report.first_broken == third.id and "edited" in report.reason


def test_a_removed_row_breaks_the_link(any_store: Store):
    _events(any_store, 5)
    with any_store.session() as session:
        ids = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).all()
        session.execute(text("delete from audit_event where id = :i"), {"i": ids[1]})
    with any_store.session() as session:
        report = verify_chain(session)
    assert report.first_broken == ids[2] and "removed" in report.reason


def test_concurrent_writers_never_fork_the_chain(any_store: Store):
    def writer(k: int) -> None:
        for i in range(10):
            with any_store.session() as session:
                record_event(session, f"writer-{k}", "x", f"item:{i}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with any_store.session() as session:
        report = verify_chain(session)
    assert report.ok and report.events == 40


def test_track_run_records_success_lineage_and_failure(any_store: Store, tmp_path: Path):
    config = curate.Config()
    with track_run(any_store, "first", config, tmp_path) as ctx:
        with any_store.session() as session:
            made = ctx.produce(session, "thing", "store://thing", "a" * 64)
    with track_run(any_store, "second", config, tmp_path) as ctx2:
        ctx2.use(made.id)
        with any_store.session() as session:
            child = ctx2.produce(session, "child", "store://child", "b" * 64)
    with pytest.raises(ValueError), track_run(any_store, "third", config, tmp_path):
        raise ValueError("a message that might quote a patient")
    with any_store.session() as session:
        runs = session.scalars(select(Run).order_by(Run.id)).all()
        assert [r.status for r in runs] == ["succeeded", "succeeded", "failed"]
        assert runs[2].error == "ValueError"  # the type only: library messages may quote PHI
        assert runs[0].config_hash == runs[1].config_hash and runs[0].seconds is not None
        edges = session.scalars(select(RunIO).where(RunIO.run_id == runs[1].id)).all()
        assert {(e.artifact_id, e.direction) for e in edges} == {(made.id, "input"), (child.id, "output")}
        steps = lineage(session, child.id)
        assert [(s.artifact.kind, s.depth) for s in steps] == [("child", 0), ("thing", 1)]
        assert verify_chain(session).ok
    with pytest.raises(ClinalignError, match="does not exist"), any_store.session() as session:
        lineage(session, 9999)
