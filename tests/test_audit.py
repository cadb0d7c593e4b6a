"""Audit trail and lineage on SQLite and PostgreSQL."""

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from clinalign import audit, curate
from clinalign.audit import Sealer, lineage, record_event, seal, track_run, verify_chain
from clinalign.schemas import ClinalignError
from clinalign.store import AuditEvent, AuditPending, Run, RunIO, Store


def _record(store: Store, n: int, actor: str = "user") -> None:
    with store.session() as session:
        for i in range(n):
            record_event(session, f"{actor}-{i % 2}", "judgement.submit", f"task:{i}", {"choice": "A"})


def _events(store: Store, n: int) -> None:
    _record(store, n)
    seal(store)


def _report(store: Store):
    return verify_chain(store)


def test_an_event_waits_committed_until_sealed_into_the_chain(any_store: Store):
    _record(any_store, 5)
    waiting = _report(any_store)
    assert waiting.ok and (waiting.events, waiting.pending) == (0, 5)
    assert seal(any_store) == 5 and seal(any_store) == 0
    report = _report(any_store)
    assert report.ok and (report.events, report.pending) == (5, 0)
    with any_store.session() as session:
        subjects = session.scalars(select(AuditEvent.subject).order_by(AuditEvent.id)).all()
    assert subjects == [f"task:{i}" for i in range(5)]  # recorded order is chained order


def test_an_event_is_rolled_back_with_its_action(any_store: Store):
    with pytest.raises(RuntimeError), any_store.session() as session:
        record_event(session, "clin1", "judgement.submit", "task:1")
        raise RuntimeError("the judgement could not be stored")
    assert seal(any_store) == 0 and _report(any_store).events == 0


def test_sealing_in_batches_keeps_one_chain(any_store: Store, monkeypatch):
    monkeypatch.setattr(audit, "_SEAL_BATCH", 3)
    _record(any_store, 10)
    assert seal(any_store) == 10
    report = _report(any_store)
    assert report.ok and (report.events, report.pending) == (10, 0)


def test_an_edited_row_is_named(any_store: Store):
    _events(any_store, 5)
    with any_store.session() as session:
        third = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()[2]
        session.execute(
            text("update audit_event set payload = :p where id = :i"), {"p": '{"choice":"B"}', "i": third.id}
        )
    report = verify_chain(any_store)
    assert report.first_broken == third.id and "edited" in report.reason


def test_a_removed_row_breaks_the_link(any_store: Store):
    _events(any_store, 5)
    with any_store.session() as session:
        ids = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).all()
        session.execute(text("delete from audit_event where id = :i"), {"i": ids[1]})
    report = verify_chain(any_store)
    assert report.first_broken == ids[2] and "removed" in report.reason


def test_concurrent_writers_and_sealers_never_fork_the_chain(any_store: Store):
    """Four writers record while two sealers, each on a store of its own (as two server processes),
    chain what they find."""
    url = any_store.engine.url.render_as_string(hide_password=False)
    writing = True

    def writer(k: int) -> None:
        for i in range(10):
            with any_store.session() as session:
                record_event(session, f"writer-{k}", "x", f"item:{i}")

    def sealer() -> None:
        store = Store.open(url, migrate=False)
        while writing:
            seal(store)
        store.engine.dispose()

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    sealers = [threading.Thread(target=sealer) for _ in range(2)]
    for t in writers + sealers:
        t.start()
    for t in writers:
        t.join()
    writing = False
    for t in sealers:
        t.join()
    seal(any_store)
    report = _report(any_store)
    assert report.ok and (report.events, report.pending) == (40, 0)


def test_the_background_sealer_chains_soon_and_on_close(any_store: Store):
    sealer = Sealer(any_store, every=0.05).start()
    _record(any_store, 3)
    deadline = time.monotonic() + 10
    while _report(any_store).events < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _report(any_store).events == 3  # chained by the thread, not by a call here
    _record(any_store, 2, actor="late")
    sealer.close()  # the last seal takes what was recorded just before shutdown
    report = _report(any_store)
    assert report.ok and (report.events, report.pending) == (5, 0)
    with any_store.session() as session:
        assert session.scalar(select(AuditPending.id)) is None


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
    assert verify_chain(any_store).ok
    with pytest.raises(ClinalignError, match="does not exist"), any_store.session() as session:
        lineage(session, 9999)
