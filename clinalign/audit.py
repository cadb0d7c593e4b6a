"""Audit trail and lineage: who did what, with which code and config, from which data.

* ``track_run`` wraps every stage run: it records a ``Run`` (stage, config and its hash, code version,
  timings, status) and the ``Artifact``s the run read and wrote, so lineage is a walk over ``RunIO``.
* ``record_event`` writes an event in the same transaction as the action it records, so the two
  commit together or not at all. ``seal`` then appends committed events to the chain, in batches:
  each ``AuditEvent``'s hash covers the previous event's hash, so editing, inserting or deleting any
  chained row breaks the chain, and ``verify_chain`` names the first broken event.

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
from clinalign.store import Artifact, AuditEvent, AuditPending, Run, RunIO, Store, utcnow

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


def record_event(session: Session, actor: str, action: str, subject: str, payload: dict | None = None) -> None:
    """Record one event inside ``session``'s transaction; ``seal`` chains it once committed.

    Payloads carry ids and counts, never record text. No lock is taken: any number of requests record
    at once.
    """
    session.add(
        AuditPending(
            ts=datetime.now(UTC).isoformat(timespec="microseconds"),
            actor=actor,
            action=action,
            subject=subject,
            payload=canonical_json(payload or {}),
        )
    )


# Sealers on PostgreSQL take turns on this advisory lock (held to the end of their transaction), so
# they read the chain's tip one at a time; on SQLite every write transaction already holds the
# database's single write lock from its start (BEGIN IMMEDIATE).
_AUDIT_LOCK = 0x636C696E  # "clin"
_SEAL_BATCH = 1000


def seal(store: Store) -> int:
    """Append every committed pending event to the chain, oldest first; returns how many.

    Safe from any number of threads and processes at once. Events of a transaction still open are
    not visible yet and are left for the next seal.
    """
    sealed = 0
    while True:
        with store.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK})
            pending = session.execute(
                select(
                    AuditPending.id,
                    AuditPending.ts,
                    AuditPending.actor,
                    AuditPending.action,
                    AuditPending.subject,
                    AuditPending.payload,
                )
                .order_by(AuditPending.id)
                .limit(_SEAL_BATCH)
            ).all()
            if not pending:
                return sealed
            prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS
            chained = []
            for event in pending:
                digest = _event_hash(prev, event.ts, event.actor, event.action, event.subject, event.payload)
                fields = {"ts": event.ts, "actor": event.actor, "action": event.action, "subject": event.subject}
                chained.append({**fields, "payload": event.payload, "prev_hash": prev, "hash": digest})
                prev = digest
            # Inserted in chain order, so ids follow it: verify_chain walks the chain by id.
            session.execute(insert(AuditEvent), chained)
            session.execute(delete(AuditPending).where(AuditPending.id.in_([e.id for e in pending])))
        sealed += len(pending)
        if len(pending) < _SEAL_BATCH:
            return sealed


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


@dataclass
class ChainReport:
    events: int
    first_broken: int | None
    reason: str | None
    pending: int  # recorded and committed, not yet sealed into the chain

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash in id order; report the first event whose link or content was altered."""
    pending = session.scalar(select(func.count()).select_from(AuditPending))
    prev = GENESIS
    count = 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)).yield_per(1000):
        count += 1
        if event.prev_hash != prev:
            return ChainReport(
                count, event.id, "does not link to the event before it (a row was removed or inserted)", pending
            )
        expected = _event_hash(prev, event.ts, event.actor, event.action, event.subject, event.payload)
        if event.hash != expected:
            return ChainReport(count, event.id, "its content no longer matches its hash (the row was edited)", pending)
        prev = event.hash
    return ChainReport(count, None, None, pending)


# --- runs and lineage ----------------------------------------------------------------------------


@dataclass
class RunContext:
    """What a stage sees of its own run: its id, output folder, and ways to declare lineage."""

    store: Store
    run_id: int
    out_dir: Path
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def use(self, artifact_id: int) -> None:
        """Declare that this run read ``artifact_id``."""
        if artifact_id not in self.inputs:
            self.inputs.append(artifact_id)

    def use_external(self, session: Session, kind: str, uri: str, sha256: str | None, meta: dict) -> Artifact:
        """Register something from outside the store (a source file, an outside model) and read it."""
        artifact = Artifact(kind=kind, uri=uri, sha256=sha256, run_id=None, meta=meta)
        session.add(artifact)
        session.flush()
        self.use(artifact.id)
        return artifact

    def produce(self, session: Session, kind: str, uri: str, sha256: str | None, meta: dict | None = None) -> Artifact:
        """Register an output inside the stage's own transaction, so it exists only if the work does."""
        artifact = Artifact(kind=kind, uri=uri, sha256=sha256, run_id=self.run_id, meta=meta or {})
        session.add(artifact)
        session.flush()
        self.outputs.append(artifact.id)
        return artifact

    def produce_path(self, session: Session, kind: str, path: Path, meta: dict | None = None) -> Artifact:
        return self.produce(session, kind, str(path.resolve()), sha256_path(path), meta)


@contextmanager
def track_run(store: Store, stage: str, config: BaseModel, data_dir: Path) -> Iterator[RunContext]:
    """Record one stage run around the block; the run row survives a failure, with the error's type."""
    config_dict = config.model_dump(mode="json")
    with store.session() as session:
        run = Run(
            stage=stage,
            config=config_dict,
            config_hash=sha256_text(canonical_json(config_dict)),
            code_version=code_version(),
            status="running",
        )
        session.add(run)
        session.flush()
        record_event(session, "system", "run.start", f"run:{run.id}", {"stage": stage})
        run_id = run.id
    out_dir = data_dir / "artifacts" / str(run_id)
    ctx = RunContext(store=store, run_id=run_id, out_dir=out_dir)
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
                {"stage": stage, "inputs": ctx.inputs, "outputs": ctx.outputs},
            )
        seal(store)
        log.info("run %s: %s %s in %.1fs", run_id, stage, status, time.perf_counter() - started)


def artifacts(session: Session, kind: str) -> list[Artifact]:
    """Artifacts of ``kind`` from runs that succeeded, newest first."""
    query = (
        select(Artifact)
        .join(Run, Artifact.run_id == Run.id)
        .where(Artifact.kind == kind, Run.status == "succeeded")
        .order_by(Artifact.id.desc())
    )
    return list(session.scalars(query))


def latest_artifact(session: Session, kind: str) -> Artifact | None:
    found = artifacts(session, kind)
    return found[0] if found else None


# The command that makes each kind of artifact, for errors that tell the user what to run.
MADE_BY = {
    "raw_records": "ingest",
    "records": "deidentify",
    "prompt_set": "curate",
    "candidates": "generate",
    "judgements": "annotate",
    "preference_dataset": "preferences",
    "reward_model": "train reward",
    "model": "train sft",
    "eval_report": "evaluate",
}


def require_artifact(session: Session, kind: str, artifact_id: int | None) -> Artifact:
    """The artifact named by id (checked to be of ``kind``), or the latest one of that kind."""
    artifact = session.get(Artifact, artifact_id) if artifact_id is not None else latest_artifact(session, kind)
    if artifact is None:
        which = f"artifact {artifact_id} does not exist" if artifact_id is not None else f"no {kind} in the store yet"
        raise ClinalignError(f"{which}: run `clinalign {MADE_BY.get(kind, '...')}` first")
    if artifact.kind != kind:
        raise ClinalignError(f"artifact {artifact.id} is a {artifact.kind}, not a {kind}")
    return artifact


def model_artifact(session: Session, ctx: RunContext, ref: str | None, kinds: tuple[str, ...]) -> tuple[Artifact, str]:
    """Resolve a model reference to (artifact, loadable path or hub id) and declare it as an input.

    ``ref`` is an artifact id, a local Hugging Face model folder, a hub id already in the local cache,
    or None for the newest model of the first kind in ``kinds`` that exists.
    """
    if ref is None:
        for kind in kinds:
            artifact = latest_artifact(session, kind)
            if artifact is not None:
                break
        else:
            raise ClinalignError(f"no model in the store yet (looked for {', '.join(kinds)}): pass --set model=PATH")
    elif ref.isdigit():
        artifact = session.get(Artifact, int(ref))
        if artifact is None or artifact.kind not in kinds:
            raise ClinalignError(f"artifact {ref} is not a model of kind {' or '.join(kinds)}")
    else:
        path = Path(ref)
        local = path.exists()
        if not local and (ref.startswith((".", "/")) or ref.count("/") > 1):
            raise ClinalignError(f"model not found: {ref} is not a folder")
        uri = str(path.resolve()) if local else ref
        artifact = session.scalar(select(Artifact).where(Artifact.uri == uri, Artifact.kind == "external_model"))
        if artifact is None:
            # An outside model enters the lineage once, hashed when it is a local folder.
            return ctx.use_external(
                session,
                "external_model",
                uri,
                sha256_path(path) if local else None,
                {"source": "local folder" if local else "hugging face cache"},
            ), uri
    ctx.use(artifact.id)
    return artifact, artifact.uri


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
            inputs = session.scalars(
                select(Artifact)
                .join(RunIO, RunIO.artifact_id == Artifact.id)
                .where(RunIO.run_id == run.id, RunIO.direction == "input")
                .order_by(Artifact.id.desc())
            )
            stack.extend((parent, depth + 1) for parent in inputs)
    return steps
