"""Audit trail and lineage: who did what, with which code and config, from which data, in which loop.

Reads: ``AuditPending``, ``AuditEvent``, ``AuditHead``, ``Run``, ``Artifact``, ``RunIO``, and the
judgements and adjudications the chain vouches for.
Writes: ``Run`` rows, ``RunIO`` lineage edges, ``AuditPending`` events, and at each seal ``AuditEvent``
rows and the signed ``AuditHead``.

* ``track_run`` wraps every stage run: it records a ``Run`` (stage, config and its hash, code version,
  timings, status, loop) and the ``Artifact``s the run read and wrote, so lineage is a walk over
  ``RunIO``. A stage takes its inputs through ``RunContext.input``/``.model``: an explicit id, or the
  newest of that kind in the loop the run continues (never another loop's), and ``ancestor`` finds an
  input by lineage (the policy whose answers were judged, the prompt set a model descends from).
* ``record_event`` writes an event in the same transaction as the action it records, so the two
  commit together or not at all. ``seal`` then appends committed events to the chain, in batches:
  each ``AuditEvent``'s hash covers the previous event's hash, so editing, inserting or deleting any
  chained row breaks the chain, and ``verify_chain`` names the first broken event.
* Each seal also signs the chain's head (its length and last hash, HMAC with the store's key): cutting
  off the newest events leaves a chain shorter than its signed head. ``clinalign audit head`` exports
  the head to keep elsewhere; ``verify_chain(store, kept)`` proves the chain still holds it.
* Judgement and adjudication events carry the SHA-256 of the row they record (``row_digest``), so a
  judgement edited in the database behind the app's back no longer matches its event.

Sealing is apart from recording because the chain is one sequence: every append must read the tip
and hold the chain's lock until it commits. In a request that is several round trips under one
global lock, each waiting its turn for the process's GIL. Taking it off the request path (and with
it the in-process queue of PostgreSQL writers that only existed for that lock) took the p95 of
"next item" at 200 clinicians on PostgreSQL from 65 to 50 ms (bench/annotate_load.py). One sealer
chains everyone's events in a single short transaction instead. The web app seals in the
background (``Sealer``, every 0.25 s); every stage run seals when it ends (``track_run``), and
``clinalign audit verify`` seals before it checks. Until it is sealed, an event is durable but not
yet tamper-evident; ``verify_chain`` counts such events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from clinalign import __version__
from clinalign.schemas import ClinalignError
from clinalign.store import (
    Adjudication,
    AiJudgement,
    Artifact,
    AuditEvent,
    AuditHead,
    AuditPending,
    Judgement,
    Run,
    RunIO,
    Store,
    loop_artifacts,
    loop_of,
    loops,
    utcnow,
)

log = logging.getLogger(__name__)

GENESIS = "0" * 64


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_path(path: Path) -> str:
    """Hash a file, or a folder as the sorted list of (relative name, file hash)."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    entries = [f"{p.relative_to(path).as_posix()}:{sha256_path(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return sha256_text("\n".join(entries))


def stat_fingerprint(path: Path) -> str:
    """A cheap stand-in for a folder's content hash: every file's name, size and modification time."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return sha256_text(canonical_json([[str(p.relative_to(path.parent)), *_stat(p)] for p in files]))


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


@cache
def code_version() -> str:
    """Package version plus the git commit when running from a checkout (``+dirty`` if modified)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


# --- hash-chained events -------------------------------------------------------------------------


def _event_hash(prev_hash: str, ts: str, actor: str, action: str, subject: str, payload: str) -> str:
    return sha256_text(canonical_json([prev_hash, ts, actor, action, subject, payload]))


def loop_evaluation(artifact: Artifact) -> bool:
    """An ``eval_report`` of the loop's own evaluation (``clinalign evaluate``), not of a benchmark suite:
    the one the release gate and the report read (``ctx.input(..., keep=loop_evaluation)``)."""
    return "suite" not in (artifact.meta or {})


def record_event(session: Session, actor: str, action: str, subject: str, payload: dict | None = None) -> None:
    """Record one event inside ``session``'s transaction; ``seal`` chains it once committed.

    Payloads carry ids and counts, never record text. No lock is taken: any number of requests record
    at once. The event is signed with the store's key, so ``seal`` can tell it from one written into
    the table by hand.
    """
    ts, body = datetime.now(UTC).isoformat(timespec="microseconds"), canonical_json(payload or {})
    store: Store = session.info["store"]
    mac = _pending_mac(store, ts, actor, action, subject, body)
    session.add(AuditPending(ts=ts, actor=actor, action=action, subject=subject, payload=body, mac=mac))


def _pending_mac(store: Store, ts: str, actor: str, action: str, subject: str, payload: str) -> str:
    message = canonical_json([ts, actor, action, subject, payload]).encode()
    return hmac.new(store.secret("audit-pending"), message, hashlib.sha256).hexdigest()


FORGED = "audit.forged"  # a pending event whose signature did not hold, chained as evidence of itself


def _as_chained(store: Store, event) -> dict:
    """What the chain records of a pending event: itself, or, when its signature does not hold, a
    record that someone wrote it outside clinalign (the action and subject it claimed, and the hash of
    its payload), so it can never vouch for a row yet is never lost."""
    mac = _pending_mac(store, event.ts, event.actor, event.action, event.subject, event.payload)
    if hmac.compare_digest(event.mac or "", mac):
        return {
            "ts": event.ts,
            "actor": event.actor,
            "action": event.action,
            "subject": event.subject,
            "payload": event.payload,
        }
    claimed = {
        "action": event.action,
        "actor": event.actor,
        "subject": event.subject,
        "payload_sha256": sha256_text(event.payload),
    }
    return {
        "ts": event.ts,
        "actor": "system",
        "action": FORGED,
        "subject": f"pending:{event.id}",
        "payload": canonical_json(claimed),
    }


# Sealers on PostgreSQL take turns on this advisory lock (held to the end of their transaction), so
# they read the chain's tip one at a time; on SQLite every write transaction already holds the
# database's single write lock from its start (BEGIN IMMEDIATE).
_AUDIT_LOCK = 0x636C696E  # "clin"
_SEAL_BATCH = 1000


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK})


def seal(store: Store) -> int:
    """Append every committed pending event to the chain, oldest first; returns how many.

    Safe from any number of threads and processes at once. Events of a transaction still open are
    not visible yet and are left for the next seal.
    """
    sealed = 0
    while True:
        with store.session() as session:
            _lock_chain(session)
            pending = session.execute(
                select(
                    AuditPending.id,
                    AuditPending.ts,
                    AuditPending.actor,
                    AuditPending.action,
                    AuditPending.subject,
                    AuditPending.payload,
                    AuditPending.mac,
                )
                .order_by(AuditPending.id)
                .limit(_SEAL_BATCH)
            ).all()
            if not pending:
                return sealed
            tip = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
            prev = tip or GENESIS
            chained = []
            for event in pending:
                fields = _as_chained(store, event)
                digest = _event_hash(
                    prev, fields["ts"], fields["actor"], fields["action"], fields["subject"], fields["payload"]
                )
                chained.append({**fields, "prev_hash": prev, "hash": digest})
                prev = digest
            # Inserted in chain order, so ids follow it: verify_chain walks the chain by id.
            session.execute(insert(AuditEvent), chained)
            session.execute(delete(AuditPending).where(AuditPending.id.in_([e.id for e in pending])))
            _extend_head(session, store, tip, len(pending), prev)
        sealed += len(pending)
        if len(pending) < _SEAL_BATCH:
            return sealed


def _extend_head(session: Session, store: Store, old_tip: str | None, added: int, new_tip: str) -> None:
    """Move the signed head forward by ``added`` events, only from a head that is itself intact: a
    missing head over a non-empty chain, or one whose signature fails, stays as it is for
    ``verify_chain`` to report (re-signing it here would launder a truncation)."""
    signed = session.get(AuditHead, 1)
    if signed is None:
        if old_tip is None:
            _sign_head(session, store, added, new_tip)
        return
    if signed.hash == old_tip and hmac.compare_digest(signed.mac, _head_mac(store, signed.events, signed.hash)):
        _sign_head(session, store, signed.events + added, new_tip)
    else:
        log.warning("audit: the signed head does not match the chain; run `clinalign audit verify`")


def _has_pending(store: Store) -> bool:
    with store.reading() as session:
        return session.scalar(select(AuditPending.id).limit(1)) is not None


class Sealer:
    """Seals every ``every`` seconds in a background thread, for a process that records events on its
    request path (each web worker); ``close`` stops it after a last seal."""

    def __init__(self, store: Store, every: float = 0.25):
        self._store, self._every = store, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> Sealer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._seal_once()

    def _seal_once(self) -> None:
        try:
            if _has_pending(self._store):  # an idle server only reads
                seal(self._store)
        except Exception as err:  # noqa: BLE001 - the events stay pending, committed; the next tick retries
            log.warning("audit: sealing failed (%s); will retry", type(err).__name__)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._seal_once()


# --- what the chain vouches for beyond itself -----------------------------------------------------

# Rows whose content an event vouches for: the event's payload carries the row's id under ``key`` and
# the SHA-256 of these fields (``row_digest``). The latest such event of a row must match it.
COVERED: dict[str, tuple[type, str, tuple[str, ...]]] = {
    "judgement": (
        Judgement,
        "judgement",
        ("task_id", "user_id", "choice", "ratings_a", "ratings_b", "tags_a", "tags_b", "rationale", "rewrite"),
    ),
    "adjudication": (Adjudication, "adjudication", ("task_id", "reviewer_id", "choice", "reason")),
    "ai_judgement": (
        AiJudgement,
        "ai_judgement",
        ("task_id", "user_id", "choice", "ratings_a", "ratings_b", "tags_a", "tags_b", "rationale"),
    ),
}


def row_digest(row: object) -> str:
    """SHA-256 of a covered row's content, as its audit event records it."""
    for model, _key, fields in COVERED.values():
        if isinstance(row, model):
            return sha256_text(canonical_json({name: getattr(row, name) for name in fields}))
    raise TypeError(f"{type(row).__name__} rows are not covered by the audit trail")


def _head_mac(store: Store, events: int, tip: str) -> str:
    return hmac.new(store.secret("audit-head"), f"{events}:{tip}".encode(), hashlib.sha256).hexdigest()


def _sign_head(session: Session, store: Store, events: int, tip: str) -> None:
    head = session.get(AuditHead, 1)
    if head is None:
        head = AuditHead(id=1)
        session.add(head)
    head.events, head.hash, head.mac = events, tip, _head_mac(store, events, tip)
    head.sealed_at = datetime.now(UTC).isoformat(timespec="seconds")


def head(store: Store) -> dict | None:
    """The signed head (events, hash, mac, sealed_at), to keep somewhere the database's users cannot
    write (``clinalign audit head``): ``verify_chain(store, kept)`` then proves the chain still holds it."""
    with store.reading() as session:
        row = session.get(AuditHead, 1)
        return None if row is None else {k: getattr(row, k) for k in ("events", "hash", "mac", "sealed_at")}


def reset_head(store: Store, actor: str) -> dict:
    """Sign the chain's present tip as its head: once for a store made before heads were signed, or
    after the site's key changed. Audited; refused while the chain itself is broken."""
    seal(store)
    report = verify_chain(store, check_head=False)
    if not report.ok:
        raise ClinalignError(f"the chain is broken at event {report.first_broken}; its head cannot be re-signed")
    with store.session() as session:
        _lock_chain(session)  # no seal may slip in between counting the chain and signing its tip
        events = session.scalar(select(func.count()).select_from(AuditEvent))
        tip = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS
        _sign_head(session, store, events, tip)
        record_event(session, actor, "audit.head.reset", "audit", {"events": events})
    seal(store)
    return head(store)


@dataclass
class ChainReport:
    events: int
    first_broken: int | None  # the event at fault (or the one that vouches for an altered row)
    reason: str | None
    pending: int  # recorded and committed, not yet sealed into the chain
    rows_checked: int = 0  # judgements and adjudications whose content matched their event

    @property
    def ok(self) -> bool:
        return self.reason is None


def _walk(session: Session) -> tuple[int, str, int | None, str | None, dict]:
    """Recompute every hash in id order: (events, tip, first broken id, reason, covered rows' digests)."""
    prev, count, forged = GENESIS, 0, None
    digests: dict[tuple[str, int], tuple[str, int]] = {}
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)).yield_per(1000):
        count += 1
        if event.prev_hash != prev:
            return count, prev, event.id, "does not link to the event before it (a row was removed or inserted)", {}
        expected = _event_hash(prev, event.ts, event.actor, event.action, event.subject, event.payload)
        if event.hash != expected:
            return count, prev, event.id, "its content no longer matches its hash (the row was edited)", {}
        if event.action == FORGED:
            forged = forged or event.id
        else:
            _note_digest(digests, event.payload, event.id)
        prev = event.hash
    if forged is not None:
        reason = "records an event written into the pending table outside clinalign (its signature did not hold)"
        return count, prev, forged, reason, digests
    return count, prev, None, None, digests


def _note_digest(digests: dict, payload: str, event_id: int) -> None:
    if '"sha256"' not in payload:  # most events vouch for no row: skip parsing them
        return
    values = json.loads(payload)
    for table, (_model, key, _fields) in COVERED.items():
        if key in values and "sha256" in values:
            digests[table, values[key]] = (values["sha256"], event_id)


def _check_rows(session: Session, digests: dict) -> tuple[int, int | None, str | None]:
    """Each covered row against its latest event: (rows checked, event at fault, reason)."""
    checked = 0
    for table, (model, _key, _fields) in COVERED.items():
        rows = {row.id: row for row in session.scalars(select(model))}
        for (kind, row_id), (digest, event_id) in sorted(digests.items(), key=lambda item: item[1][1]):
            if kind != table:
                continue
            row = rows.pop(row_id, None)
            event = f"event {event_id}" if event_id > 0 else f"pending event {-event_id}"
            if row is None:
                return checked, event_id, f"{table} {row_id}, recorded by {event}, was deleted"
            if row_digest(row) != digest:
                return checked, event_id, f"{table} {row_id} was changed after {event} recorded it"
            checked += 1
        if rows:
            row_id = min(rows)
            return checked, None, f"{table} {row_id} has no audit event (it was written outside clinalign)"
    return checked, None, None


def verify_chain(store: Store, kept_head: dict | None = None, check_head: bool = True) -> ChainReport:
    """Recompute every hash; check the signed head (and ``kept_head``, a head exported earlier) against
    the chain's tip and length, and every judgement and adjudication against the event that recorded
    it. Reports the first problem found."""
    with store.reading() as session:
        pending = session.scalar(select(func.count()).select_from(AuditPending))
        count, tip, broken, reason, digests = _walk(session)
        if reason is not None:
            return ChainReport(count, broken, reason, pending)
        for row in session.execute(select(AuditPending).order_by(AuditPending.id)).scalars():
            if _as_chained(store, row)["action"] != FORGED:  # committed with its row, not yet sealed
                _note_digest(digests, row.payload, -row.id)
        signed = session.get(AuditHead, 1)
        checked, at_fault, reason = _check_rows(session, digests)
    if reason is not None:
        return ChainReport(count, at_fault if at_fault and at_fault > 0 else None, reason, pending, checked)
    if check_head and count and signed is None:
        reason = "the chain has no signed head (run `clinalign audit head --reset` once if this store predates them)"
    elif check_head and signed is not None:
        if not hmac.compare_digest(signed.mac, _head_mac(store, signed.events, signed.hash)):
            reason = "the signed head's signature does not match (forged, or the site's key changed)"
        elif (signed.events, signed.hash) != (count, tip):
            reason = (
                f"the chain holds {count} events but its signed head says {signed.events}: "
                "the newest events were removed (or added) outside clinalign"
            )
    if reason is None and kept_head is not None:
        reason = _check_kept(store, kept_head)
    return ChainReport(count, None, reason, pending, checked)


def _check_kept(store: Store, kept: dict) -> str | None:
    """Whether the chain still holds a head exported earlier (signed with this store's key), at the
    same position."""
    try:
        events, digest, mac = int(kept["events"]), str(kept["hash"]), str(kept["mac"])
    except (KeyError, TypeError, ValueError):
        return "the kept head is not a head exported by `clinalign audit head`"
    if events < 0 or not hmac.compare_digest(mac, _head_mac(store, events, digest)):
        return "the kept head's signature does not hold under this store's key (another store's head, or edited)"
    if events == 0:
        return None
    with store.reading() as session:
        found = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id).offset(events - 1).limit(1))
    if found != digest:
        return f"the chain no longer holds the kept head (event number {events}): it was rewritten or cut short"
    return None


# --- runs, loops and lineage ----------------------------------------------------------------------


@dataclass
class RunContext:
    """What a stage sees of its own run: its id, output folder, the loop it continues, and ways to
    take inputs and declare lineage."""

    store: Store
    run_id: int
    out_dir: Path
    loop_id: int | None = None
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    stage: str = ""
    config_hash: str = ""
    resume_from: Path | None = None
    main: bool = True
    """False in the other processes of a distributed launch: they train, the main process records."""

    def resume_point(self, session: Session) -> Path | None:
        """Where this run continues: ``resume_from`` when given (refused unless it is a complete
        checkpoint), else the newest complete checkpoint (a ``checkpoints/<name>-N`` folder holding
        ``COMPLETE``: PPO's and the reward model's ``step-N``, the TRL trainers' ``checkpoint-N``) that an
        earlier run of this stage with this very config left unfinished (killed, or failed). None when
        there is none."""
        if self.resume_from is not None:
            if not self.resume_from.is_dir():
                raise ClinalignError(f"--resume-from {self.resume_from}: no such checkpoint folder")
            if not (self.resume_from / "COMPLETE").is_file():
                raise ClinalignError(
                    f"--resume-from {self.resume_from}: not a complete checkpoint (no COMPLETE mark: "
                    "its writing was cut short, or it is not a checkpoint folder)"
                )
            return self.resume_from
        earlier = session.scalars(
            select(Run.id)
            .where(
                Run.stage == self.stage,
                Run.config_hash == self.config_hash,
                Run.id < self.run_id,
                Run.status != "succeeded",
            )
            .order_by(Run.id.desc())
        )
        for run_id in earlier:
            folder = self.out_dir.parent / str(run_id) / "checkpoints"
            done = [p for p in folder.glob("*-*") if (p / "COMPLETE").is_file() and p.name.rsplit("-", 1)[1].isdigit()]
            if done:
                return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]))
        return None

    def use(self, artifact_id: int) -> None:
        """Declare that this run read ``artifact_id``."""
        if artifact_id not in self.inputs:
            self.inputs.append(artifact_id)

    def join(self, session: Session, run_id: int | None) -> None:
        """Continue the loop of the run that made an input this run was given explicitly (unless a
        loop was named)."""
        if self.loop_id is None:
            self.loop_id = loop_of(session, run_id)

    def loop(self, session: Session, wanted: str = "input") -> int:
        """The loop this run continues: named, joined through an explicit input, or the store's only one."""
        if self.loop_id is None:
            found = loops(session)
            if not found:
                raise ClinalignError(f"no {wanted} in the store yet: run `clinalign {_made_by(wanted)}` first")
            if len(found) > 1:
                shown = ", ".join(map(str, found[-8:]))
                raise ClinalignError(
                    f"the store holds {len(found)} loops ({shown}; see `clinalign loops`): "
                    "name one with --loop, or pass the input's artifact id"
                )
            self.loop_id = found[0]
        return self.loop_id

    def input(self, session: Session, kind: str, ref: int | None, keep=None) -> Artifact:
        """The artifact ``ref`` (checked to be a ``kind``), or the loop's newest ``kind`` (that ``keep``,
        a test on an artifact, accepts when given); declared read."""
        if ref is not None:
            artifact = session.get(Artifact, ref)
            if artifact is None:
                raise ClinalignError(f"artifact {ref} does not exist")
            if artifact.kind != kind:
                raise ClinalignError(f"artifact {ref} is a {artifact.kind}, not a {kind}")
            self.join(session, artifact.run_id)
        else:
            loop_id = self.loop(session, kind)
            found = [a for a in loop_artifacts(session, loop_id, kind) if keep is None or keep(a)]
            if not found:
                raise ClinalignError(f"no {kind} in loop {loop_id} yet: run `clinalign {_made_by(kind)}` first")
            artifact = found[0]
        self.use(artifact.id)
        return artifact

    def every(self, session: Session, kind: str) -> list[Artifact]:
        """Every ``kind`` the loop holds (a stage that reads all of them: deidentify, curate), declared read."""
        loop_id = self.loop(session, kind)
        found = loop_artifacts(session, loop_id, kind)
        if not found:
            raise ClinalignError(f"no {kind} in loop {loop_id} yet: run `clinalign {_made_by(kind)}` first")
        for artifact in found:
            self.use(artifact.id)
        return found

    def model(self, session: Session, ref: str | None, default: Artifact | None = None) -> tuple[Artifact, str]:
        """A model to load, as (artifact, path or hub id), declared read.

        ``ref`` is an artifact id, a bundled model's name (``smollm2``: ``bundled.py``), a local Hugging
        Face model folder, or a hub id already in the local cache; None takes ``default`` (a model the
        caller found by lineage), else the loop's newest trained model.
        """
        from clinalign import bundled

        if ref in bundled.BUNDLED:
            model = bundled.BUNDLED[ref]
            return self._outside_model(session, str(bundled.folder(model)), model.meta())
        if ref is None:
            artifact = default or self.input(session, "model", None)
        elif ref.isdigit():
            artifact = session.get(Artifact, int(ref))
            if artifact is None or artifact.kind not in MODEL_KINDS:
                raise ClinalignError(f"artifact {ref} is not a model")
            self.join(session, artifact.run_id)
        else:
            return self._outside_model(session, ref)
        self.use(artifact.id)
        return artifact, artifact.uri

    def _outside_model(self, session: Session, ref: str, about: dict | None = None) -> tuple[Artifact, str]:
        path = Path(ref)
        local = path.exists()
        if not local and (ref.startswith((".", "/")) or ref.count("/") > 1):
            raise ClinalignError(f"model not found: {ref} is not a folder")
        uri = str(path.resolve()) if local else ref
        # An outside model enters the store once per content (a folder's hash; a hub id's name). A
        # folder unchanged since it was hashed (same files, sizes and times) is not hashed again:
        # real models are gigabytes.
        stamp = stat_fingerprint(path) if local else None
        known = session.scalars(select(Artifact).where(Artifact.kind == "external_model", Artifact.uri == uri))
        artifact = next((a for a in known if a.meta.get("fingerprint") == stamp), None)
        if artifact is None:
            meta = {"source": "local folder" if local else "hugging face cache", **(about or {}), "fingerprint": stamp}
            digest = sha256_path(path) if local else None
            return self.use_external(session, "external_model", uri, digest, meta), uri
        self.use(artifact.id)
        return artifact, uri

    def use_external(self, session: Session, kind: str, uri: str, sha256: str | None, meta: dict) -> Artifact:
        """Register something from outside the store (a source file, an outside model) and read it."""
        artifact = Artifact(kind=kind, uri=uri, sha256=sha256, run_id=None, meta=meta)
        session.add(artifact)
        session.flush()
        self.use(artifact.id)
        return artifact

    def produce(self, session: Session, kind: str, uri: str, sha256: str | None, meta: dict | None = None) -> Artifact:
        """Register an output inside the stage's own transaction, so it exists only if the work does."""
        if not self.main:
            raise RuntimeError("only the main process of a distributed launch records outputs")
        artifact = Artifact(kind=kind, uri=uri, sha256=sha256, run_id=self.run_id, meta=meta or {})
        session.add(artifact)
        session.flush()
        self.outputs.append(artifact.id)
        return artifact

    def produce_path(self, session: Session, kind: str, path: Path, meta: dict | None = None) -> Artifact:
        return self.produce(session, kind, str(path.resolve()), sha256_path(path), meta)


MODEL_KINDS = ("model", "external_model")


def _begins_loop(session: Session, status: str, outputs: list[int]) -> bool:
    """A run that continued no loop begins one when it succeeded and made something a stage reads
    (an ingest's raw records); a failed run, or one whose output no stage takes (file-mode
    de-identification), belongs to no loop."""
    from clinalign.stages import STAGES

    if status != "succeeded" or not outputs:
        return False
    read = {kind for stage in STAGES for kind in stage.reads}
    return any(kind in read for kind in session.scalars(select(Artifact.kind).where(Artifact.id.in_(outputs))))


def _made_by(kind: str) -> str:
    from clinalign.stages import made_by  # the stage table names the command

    return made_by(kind) or "..."


@contextmanager
def track_run(
    store: Store,
    stage: str,
    config: BaseModel,
    data_dir: Path,
    loop_id: int | None = None,
    resume_from: Path | None = None,
) -> Iterator[RunContext]:
    """Record one stage run around the block; the run row survives a failure, with the error's type.

    The run continues ``loop_id`` when given; otherwise the loop of the first input it was given
    explicitly, else the store's only loop; a run that took no input begins a loop of its own when it
    made something a stage reads (``_begins_loop``). In a distributed launch only the main process
    records; the others get the same run's context, marked as followers (``distributed.py``).
    """
    from clinalign import distributed

    config_dict = config.model_dump(mode="json")
    config_hash = sha256_text(canonical_json(config_dict))
    if not distributed.is_main():
        run_id = distributed.share(None)
        yield RunContext(
            store=store,
            run_id=run_id,
            out_dir=data_dir / "artifacts" / str(run_id),
            loop_id=loop_id,
            stage=stage,
            config_hash=config_hash,
            resume_from=resume_from,
            main=False,
        )
        return
    with store.session() as session:
        if loop_id is not None and loop_id not in loops(session):
            raise ClinalignError(f"no loop {loop_id} in the store (see `clinalign loops`)")
        run = Run(
            stage=stage,
            config=config_dict,
            config_hash=config_hash,
            code_version=code_version(),
            status="running",
            loop_id=loop_id,
        )
        session.add(run)
        session.flush()
        record_event(session, "system", "run.start", f"run:{run.id}", {"stage": stage})
        run_id = run.id
    distributed.share(run_id)  # committed: the other processes may now read it
    out_dir = data_dir / "artifacts" / str(run_id)
    ctx = RunContext(
        store=store,
        run_id=run_id,
        out_dir=out_dir,
        loop_id=loop_id,
        stage=stage,
        config_hash=config_hash,
        resume_from=resume_from,
    )
    started = time.perf_counter()
    log.info("run %s: %s started", run_id, stage)
    status, error = "succeeded", None
    try:
        yield ctx
    except BaseException as exc:
        # Only the exception's type and our own messages: a library's message may quote PHI.
        status = "failed"
        error = str(exc)[:500] if isinstance(exc, ClinalignError) else type(exc).__name__
        raise
    finally:
        with store.session() as session:
            run = session.get(Run, run_id)
            run.status, run.error, run.metrics = status, error, ctx.metrics
            run.finished_at, run.seconds = utcnow(), time.perf_counter() - started
            run.loop_id = ctx.loop_id or (run_id if _begins_loop(session, status, ctx.outputs) else None)
            if status == "succeeded":
                for artifact_id in ctx.inputs:
                    session.add(RunIO(run_id=run_id, artifact_id=artifact_id, direction="input"))
                for artifact_id in ctx.outputs:
                    session.add(RunIO(run_id=run_id, artifact_id=artifact_id, direction="output"))
            record_event(
                session,
                "system",
                f"run.{status}",
                f"run:{run_id}",
                {"stage": stage, "loop": run.loop_id, "inputs": ctx.inputs, "outputs": ctx.outputs},
            )
        seal(store)
        log.info("run %s: %s %s in %.1fs", run_id, stage, status, time.perf_counter() - started)


@dataclass
class LineageStep:
    artifact: Artifact
    run: Run | None
    depth: int


def lineage(session: Session, artifact_id: int) -> list[LineageStep]:
    """Walk back from an artifact through the runs that produced it and the artifacts they read."""
    root = session.get(Artifact, artifact_id)
    if root is None:
        raise ClinalignError(f"artifact {artifact_id} does not exist")
    steps: list[LineageStep] = []
    seen: set[int] = set()
    stack = [(root, 0)]
    while stack:
        artifact, depth = stack.pop()
        if artifact.id in seen:
            continue
        seen.add(artifact.id)
        run = session.get(Run, artifact.run_id) if artifact.run_id else None
        steps.append(LineageStep(artifact, run, depth))
        if run is not None:
            stack.extend((parent, depth + 1) for parent in _inputs(session, run.id))
    return steps


def _inputs(session: Session, run_id: int) -> list[Artifact]:
    return list(
        session.scalars(
            select(Artifact)
            .join(RunIO, RunIO.artifact_id == Artifact.id)
            .where(RunIO.run_id == run_id, RunIO.direction == "input")
            .order_by(Artifact.id.desc())
        )
    )


def ancestor(session: Session, artifact: Artifact, kinds: tuple[str, ...]) -> Artifact | None:
    """The nearest artifact of one of ``kinds`` that ``artifact`` was made from (breadth first): e.g. the
    policy whose answers became a preference dataset, or the prompt set a model was trained on."""
    frontier, seen = [artifact], {artifact.id}
    while frontier:
        parents = []
        for current in frontier:
            for parent in _inputs(session, current.run_id) if current.run_id else []:
                if parent.kind in kinds:
                    return parent
                if parent.id not in seen:
                    seen.add(parent.id)
                    parents.append(parent)
        frontier = parents
    return None
