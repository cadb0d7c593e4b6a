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


# --- the signed head, a kept head, and the rows the chain vouches for ------------------------------


def test_cutting_off_the_newest_events_is_caught_by_the_signed_head(any_store: Store):
    _events(any_store, 6)
    assert _report(any_store).ok
    with any_store.session() as session:
        newest = session.scalars(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(2)).all()
        session.execute(text("delete from audit_event where id in (:a, :b)"), {"a": newest[0], "b": newest[1]})
    report = _report(any_store)
    assert not report.ok and "holds 4 events but its signed head says 6" in report.reason
    _events(any_store, 3)  # later seals never re-sign a head that no longer matches
    assert "signed head says 6" in _report(any_store).reason


def test_a_forged_or_deleted_head_is_caught(any_store: Store):
    _events(any_store, 3)
    with any_store.session() as session:
        session.execute(text("update audit_head set events = 2"))
    assert "signature does not match" in _report(any_store).reason
    with any_store.session() as session:
        session.execute(text("delete from audit_head"))
    assert "no signed head" in _report(any_store).reason
    _events(any_store, 1)  # sealing does not quietly make a new head over an existing chain
    assert "no signed head" in _report(any_store).reason


def test_reset_signs_the_present_tip_and_is_itself_audited(any_store: Store):
    _events(any_store, 3)
    with any_store.session() as session:
        session.execute(text("delete from audit_head"))
    head = audit.reset_head(any_store, "dr.admin")
    report = _report(any_store)
    assert report.ok and head["events"] == report.events == 4  # the reset's own event is chained too
    with any_store.session() as session:
        assert session.scalar(select(AuditEvent.actor).where(AuditEvent.action == "audit.head.reset")) == "dr.admin"


def test_a_kept_head_proves_the_chain_was_not_rewritten_before_it(any_store: Store):
    _events(any_store, 4)
    kept = audit.head(any_store)
    _events(any_store, 3)  # the chain grows after the head was saved elsewhere: still fine
    assert verify_chain(any_store, kept).ok
    # Rewrite the whole chain consistently (as someone with the database but not the key could not sign,
    # but could try): recompute every hash from a changed first event. The kept head no longer fits.
    with any_store.session() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        prev = audit.GENESIS
        for row in rows:
            payload = '{"choice":"B"}' if row is rows[0] else row.payload
            row.payload, row.prev_hash = payload, prev
            row.hash = audit._event_hash(prev, row.ts, row.actor, row.action, row.subject, payload)
            prev = row.hash
    report = verify_chain(any_store, kept)
    assert not report.ok
    assert "kept head" in verify_chain(any_store, kept, check_head=False).reason
    assert "not a head" in verify_chain(any_store, {"nonsense": 1}, check_head=False).reason
    moved = {**kept, "events": kept["events"] - 1}  # an edited copy no longer carries a valid signature
    assert "signature does not hold" in verify_chain(any_store, moved, check_head=False).reason


def _judged(store: Store, tmp_path: Path) -> int:
    """One clinician judgement taken through the queue, as the web app takes it; its id."""
    from clinalign.annotate import queue
    from clinalign.schemas import AXES, JudgementIn
    from clinalign.stages import run_stage
    from clinalign.store import User, campaign_by_name
    from tests.web.seed import seed

    candidates = seed(store, tmp_path, prompts=2)
    run_stage("annotate.campaign", store, tmp_path, {"name": "c", "candidates": candidates}, actor="t")
    with store.reading() as session:
        campaign = campaign_by_name(session, "c")
        user = session.scalar(select(User).where(User.username == "clin1"))
    assignment = queue.claim_next(store, campaign, user)
    ratings = dict.fromkeys(AXES, 4)
    with store.session() as session:
        row = queue.submit(
            session,
            session.get(type(assignment), assignment.id),
            user,
            JudgementIn(choice="A", ratings_a=ratings, ratings_b=ratings, rationale="A escalates"),
            campaign,
        )
        return row.id


def test_a_judgement_changed_in_the_database_no_longer_matches_its_event(any_store: Store, tmp_path: Path):
    judgement = _judged(any_store, tmp_path)
    seal(any_store)
    report = _report(any_store)
    assert report.ok and report.rows_checked == 1
    with any_store.session() as session:
        stored = session.scalar(text("select choice from judgement where id = :i"), {"i": judgement})
        flipped = {"A": "B", "B": "A"}[stored]  # stored in the task's order: A as shown, or B if swapped
        session.execute(text("update judgement set choice = :c where id = :i"), {"c": flipped, "i": judgement})
    report = _report(any_store)
    assert not report.ok and f"judgement {judgement} was changed after event" in report.reason
    with any_store.session() as session:
        session.execute(text("update judgement set choice = :c where id = :i"), {"c": stored, "i": judgement})
    assert _report(any_store).ok  # put back exactly: it matches again
    with any_store.session() as session:
        session.execute(text("update assignment set judgement_id = null where judgement_id = :i"), {"i": judgement})
        session.execute(text("delete from judgement where id = :i"), {"i": judgement})
    assert f"judgement {judgement}, recorded by event" in _report(any_store).reason


def test_a_judgement_written_outside_the_app_has_no_event(any_store: Store, tmp_path: Path):
    from clinalign.store import Judgement

    judgement = _judged(any_store, tmp_path)
    with any_store.session() as session:
        row = session.get(Judgement, judgement)
        forged = Judgement(task_id=row.task_id, user_id=row.user_id + 1, choice="B", ratings_a={}, ratings_b={})
        session.add(forged)
        session.flush()
        forged_id = forged.id
    assert f"judgement {forged_id} has no audit event" in _report(any_store).reason


def test_an_event_written_into_the_pending_table_by_hand_cannot_vouch_for_an_edit(any_store: Store, tmp_path):
    """Someone with the database but not the key edits a judgement and adds the event that would
    vouch for it: the seal chains that event as evidence of a forgery, and verify names it."""
    import json

    from clinalign.store import Judgement

    judgement = _judged(any_store, tmp_path)
    seal(any_store)
    with any_store.session() as session:
        row = session.get(Judgement, judgement)
        row.choice = {"A": "B", "B": "A"}[row.choice]
        claim = json.dumps({"judgement": judgement, "choice": row.choice, "sha256": audit.row_digest(row)})
        session.add(
            AuditPending(ts="2026-12-01T00:00:00", actor="clin1", action="judgement.edit", subject="t", payload=claim)
        )
    seal(any_store)
    report = _report(any_store)
    assert not report.ok and "outside clinalign" in report.reason
    with any_store.session() as session:
        forged = session.scalar(select(AuditEvent).where(AuditEvent.action == audit.FORGED))
        assert forged.id == report.first_broken and json.loads(forged.payload)["action"] == "judgement.edit"
