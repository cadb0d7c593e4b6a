"""The store: SQLAlchemy 2 tables every stage reads and writes, and small named queries.

SQLite (WAL, foreign keys on) by default; PostgreSQL through ``DATABASE_URL`` unchanged. The schema
is owned by Alembic migrations (``clinalign/migrations``); ``Store.open`` brings a database up to date.

PHI rule: ``RawRecord`` is the quarantine. Only ``ingest`` writes it and only ``deidentify`` reads
it; every later stage reads ``Record`` through ``deidentified_records()``, which is the PHI gate.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from clinalign.schemas import ClinalignError

DEIDENTIFIED = "deidentified"
QUARANTINED = "quarantined"
REJECTED = "rejected"


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class User(Base):
    """A person with a role (``accounts.ROLES``), or a clearly named simulated rater."""

    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(30))
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    profile: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    """Argon2id hash; empty for simulated raters and single-sign-on accounts."""
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    specialties: Mapped[list] = mapped_column(default=list, server_default="[]")
    """Specialties a clinician is routed items of, in campaigns that route by specialty."""


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored here."""

    __tablename__ = "web_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginAttempt(Base):
    """One sign-in attempt, kept to throttle password guessing across every server instance."""

    __tablename__ = "login_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    username_hash: Mapped[str] = mapped_column(String(64), index=True)
    """A keyed hash of the name as typed (``Store.secret``): people type passwords into that field."""
    ip: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RawRecord(Base):
    """An ingested case as it arrived: quarantined, may hold PHI."""

    __tablename__ = "raw_record"
    __table_args__ = (UniqueConstraint("external_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    source_line: Mapped[int]
    payload: Mapped[dict]
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))
    status: Mapped[str] = mapped_column(String(20), default=QUARANTINED, server_default=QUARANTINED)
    """``quarantined`` until de-identified; ``rejected`` when a data expert removed it (payload emptied)."""
    rejected_reason: Mapped[str | None] = mapped_column(String(500))


class Record(Base):
    """A de-identified case: the only form of a case that later stages may read."""

    __tablename__ = "record"
    id: Mapped[int] = mapped_column(primary_key=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_record.id"), unique=True)
    external_id: Mapped[str] = mapped_column(String(200))
    deid_status: Mapped[str] = mapped_column(String(20))
    persona: Mapped[str] = mapped_column(String(20))
    specialty: Mapped[str] = mapped_column(String(60))
    risk: Mapped[str] = mapped_column(String(20))
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    variants: Mapped[list] = mapped_column(default=list)
    phi_counts: Mapped[dict] = mapped_column(default=dict)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))


class Prompt(Base):
    """A curated prompt in one dataset version, with its split."""

    __tablename__ = "prompt"
    __table_args__ = (UniqueConstraint("dataset_version", "record_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id"))
    dataset_version: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str] = mapped_column(String(10))
    persona: Mapped[str] = mapped_column(String(20))
    specialty: Mapped[str] = mapped_column(String(60))
    risk: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    variants: Mapped[list] = mapped_column(default=list)
    tags: Mapped[dict] = mapped_column(default=dict, server_default="{}")
    """Curation tags: where specialty and risk came from (the case or rules), proposed ICD-10 codes."""
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))


class Candidate(Base):
    """One model answer to one prompt."""

    __tablename__ = "candidate"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id"), index=True)
    model_artifact_id: Mapped[int] = mapped_column(ForeignKey("artifact.id"))
    text: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))


class Campaign(Base):
    """A round of clinician annotation over one set of candidates, with its rules."""

    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    mode: Mapped[str] = mapped_column(String(10))
    """``pair`` (compare two answers) or ``single`` (rate one answer: thumbs up/down, for KTO)."""
    guidelines: Mapped[str] = mapped_column(Text, default="")
    axes: Mapped[list]
    overlap: Mapped[int]
    routing: Mapped[bool] = mapped_column(Boolean, default=False)
    """Route each item only to clinicians of its specialty (``general`` items go to everyone)."""
    disagreement: Mapped[float] = mapped_column(Float, default=0.34)
    """Items whose share of votes against the majority choice exceeds this go to adjudication."""
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))


class Task(Base):
    """An item to judge: a pair of candidates (or one, in single mode), wanting ``overlap`` judgements."""

    __tablename__ = "task"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id"), index=True)
    candidate_a_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    candidate_b_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id"))
    overlap: Mapped[int]
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id"), index=True)
    gold: Mapped[str | None] = mapped_column(String(20))
    """For a calibration item, the expected choice."""
    open_slots: Mapped[int] = mapped_column(default=0, server_default="0")
    """Slots no assignment has claimed yet (``overlap`` minus assignments): claiming one is a single
    conditional UPDATE, so asking for the next item costs the same in a campaign of any size."""
    priority: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Queue order (higher first): set by ``annotate.active.rank`` once a reward model exists."""
    specialty: Mapped[str | None] = mapped_column(String(60))


class Assignment(Base):
    """A clinician's claim on one of a task's ``overlap`` slots.

    ``(task_id, slot)`` is unique and ``slot < overlap``, so the database itself refuses a judgement
    beyond the target even when many clinicians ask for work at once. ``swapped`` is the side order
    this clinician was shown (sides are randomised per person; stored choices are in task order).
    """

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("task_id", "slot"), UniqueConstraint("task_id", "user_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    slot: Mapped[int]
    swapped: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    judgement_id: Mapped[int | None] = mapped_column(ForeignKey("judgement.id"))


class Judgement(Base):
    """One rater's verdict on one task. An edit keeps the earlier version as a ``JudgementRevision``."""

    __tablename__ = "judgement"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    choice: Mapped[str] = mapped_column(String(20))
    ratings_a: Mapped[dict]
    ratings_b: Mapped[dict | None]
    tags_a: Mapped[list] = mapped_column(default=list)
    tags_b: Mapped[list] = mapped_column(default=list)
    rationale: Mapped[str] = mapped_column(Text, default="")
    rewrite: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds: Mapped[float | None] = mapped_column(Float)
    """Time from the item's first view to submission."""
    original: Mapped[dict | None] = mapped_column(JSON)
    """The clinician's rationale and rewrite as typed, before the PHI scrub: kept only when the site asks
    (``CLINALIGN_KEEP_CLINICIAN_ORIGINALS``), never shown or exported."""


class AiJudgement(Base):
    """An AI judge's verdict on one task, in a clinician's shape (``JudgementIn``), kept in a table of its
    own: agreement figures, consensus, adjudication queues and dashboards read ``Judgement`` only, so an
    AI judge can never be counted as a clinician. Its author is a ``User`` with role ``ai_judge``."""

    __tablename__ = "ai_judgement"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), index=True)
    choice: Mapped[str] = mapped_column(String(20))
    ratings_a: Mapped[dict | None]
    ratings_b: Mapped[dict | None]
    tags_a: Mapped[list] = mapped_column(default=list)
    tags_b: Mapped[list] = mapped_column(default=list)
    rationale: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JudgementRevision(Base):
    """A judgement as it was before its author edited it."""

    __tablename__ = "judgement_revision"
    id: Mapped[int] = mapped_column(primary_key=True)
    judgement_id: Mapped[int] = mapped_column(ForeignKey("judgement.id"), index=True)
    content: Mapped[dict]
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Adjudication(Base):
    """A reviewer's decision on a disputed item; it overrides the panel's votes as the consensus."""

    __tablename__ = "adjudication"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), unique=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    choice: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """One execution of one stage: its config, code version, timing and outcome."""

    __tablename__ = "run"
    id: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), index=True)
    config: Mapped[dict]
    config_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(String(500))
    metrics: Mapped[dict] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    loop_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"), index=True)
    """The loop this run continues: the id of the run that began it (an ingest, or a run with no inputs)."""


class Artifact(Base):
    """Something a run produced: a file or folder (path + sha256) or a content-hashed slice of the store."""

    __tablename__ = "artifact"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    uri: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    meta: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunIO(Base):
    """A lineage edge: ``run`` read (``input``) or wrote (``output``) ``artifact``."""

    __tablename__ = "run_io"
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifact.id"), primary_key=True)
    direction: Mapped[str] = mapped_column(String(6), primary_key=True)


class _EventBody:
    """What an audit event says: when, who, what, to what, and ids or counts (never record text)."""

    ts: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)


class AuditEvent(_EventBody, Base):
    """Append-only, hash-chained record of a human or machine action (sealed from ``AuditPending``).

    ``prev_hash`` is unique, so were two sealers ever to read the same tip, the second insert would
    fail and its transaction with it: the chain cannot fork (see ``audit.seal``).
    """

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip and length, signed with the store's key at every seal (one row): removing the
    newest events leaves the chain shorter than its signed head, which ``verify_chain`` reports."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    events: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[str] = mapped_column(String(32))


class AuditPending(_EventBody, Base):
    """An event committed with the action it records, waiting for ``audit.seal`` to chain it."""

    __tablename__ = "audit_pending"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mac: Mapped[str] = mapped_column(String(64), server_default="")
    """HMAC of the event under the store's key: one written straight into the table has none that
    holds, and is chained as evidence of that instead of as what it claims (``audit.seal``)."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver's own BEGIN is replaced by _sqlite_begin's
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection) -> None:
    # Every transaction takes SQLite's write lock up front. A deferred transaction that reads and
    # then writes fails at once (SQLITE_BUSY, no waiting) when another writer committed in between,
    # which under a department's concurrent clicks would be an error page; IMMEDIATE waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class _WriterQueue:
    """SQLite's write transactions take turns: threads of one process on a lock, and processes (web
    workers, the CLI) on an advisory lock of a file beside the database; the kernel hands both over
    as soon as they are free. SQLite has one writer at a time anyway, and its own busy handler waits
    by sleeping (up to 100 ms a try). PostgreSQL writers need no queue: its row locks order them."""

    def __init__(self, url: URL):
        sqlite = url.get_backend_name() == "sqlite"
        self._threads = threading.Lock() if sqlite else None
        self._path = f"{url.database}.write-lock" if sqlite and url.database not in (None, "", ":memory:") else None
        self._file = None

    def __enter__(self):
        if self._threads is None:
            return self
        self._threads.acquire()
        if self._path:
            if self._file is None:
                self._file = open(self._path, "a")  # noqa: SIM115 - held for the life of the store
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._threads is None:
            return
        if self._path:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._threads.release()


def _key_file(path: Path) -> bytes:
    """The key in ``path``, made (mode 0600) if absent; two processes making it at once agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        draft.touch(mode=0o600)
        draft.write_text(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic, and refuses to replace a key another process made first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip().encode()


class Store:
    """An engine plus a session factory; ``Store.open(url)`` also migrates the schema to head."""

    def __init__(self, engine: Engine, reader: Engine):
        self.engine = engine
        # ``info["store"]``: what records an audit event reaches the store's key through its session.
        self._sessions = sessionmaker(engine, expire_on_commit=False, info={"store": self})
        self._readers = sessionmaker(reader, expire_on_commit=False, info={"store": self})
        self._writer = _WriterQueue(engine.url)
        self._secret: bytes | None = None

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Every web worker thread may hold a connection; the default pool (5 + 10) would make them queue.
        engine = create_engine(url, pool_size=40, max_overflow=20)
        # Readers run in autocommit: no BEGIN and ROLLBACK around their statements (two round trips
        # a page on PostgreSQL), and each statement sees the latest commit.
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            reader = create_engine(url, pool_size=40, max_overflow=20)  # no BEGIN IMMEDIATE on these
            event.listen(reader, "connect", _sqlite_pragmas)
        else:
            reader = engine.execution_options(isolation_level="AUTOCOMMIT")  # the same pool
        store = cls(engine, reader)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back whole on any error."""
        with self._writer, self._sessions() as session, session.begin():
            yield session

    def secret(self, purpose: str) -> bytes:
        """A key for ``purpose`` (the audit head's signature, pseudonyms, sign-in throttling), derived
        from the site's secret: ``CLINALIGN_SECRET_KEY`` when set (required when several machines share
        one database), else a random key kept in a file made on first use, readable by its owner only:
        beside a SQLite database, or in the data folder."""
        if self._secret is None:
            from clinalign.settings import Settings

            settings = Settings()
            if settings.secret_key:
                self._secret = settings.secret_key.encode()
            elif self.engine.url.get_backend_name() == "sqlite" and self.engine.url.database in (None, "", ":memory:"):
                self._secret = secrets.token_bytes(32)
            else:
                sqlite = self.engine.url.get_backend_name() == "sqlite"
                path = Path(f"{self.engine.url.database}.secret") if sqlite else settings.data_dir / "store.secret"
                self._secret = _key_file(path)
        return hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Reads only, in autocommit, outside the write queue: each statement sees the latest commit,
        and SQLite readers in WAL mode never wait for a writer."""
        with self._readers() as session:  # closing (not rolling back) keeps loaded objects readable
            yield session


def deidentified() -> Select:
    """The PHI gate: records whose de-identification finished. Every read of cases after
    ``deidentify`` starts from this query."""
    return select(Record).where(Record.deid_status == DEIDENTIFIED)


def deidentified_records(session: Session, run_ids: list[int] | None = None) -> list[Record]:
    """The cases later stages may read (``run_ids``: from these deidentify runs only)."""
    query = deidentified()
    if run_ids is not None:
        query = query.where(Record.run_id.in_(run_ids))
    return list(session.scalars(query.order_by(Record.id)))


def not_deidentified(session: Session, prompt_ids: set[int]) -> int:
    """How many of these prompts come from a record that is not de-identified: the PHI gate's other
    side, for stages (campaigns) that take prompts rather than records."""
    clean = deidentified().with_only_columns(Record.id)
    return session.scalar(
        select(func.count()).select_from(Prompt).where(Prompt.id.in_(prompt_ids), Prompt.record_id.not_in(clean))
    )


def prompts(session: Session, dataset_version: str, split: str | None = None) -> list[Prompt]:
    query = select(Prompt).where(Prompt.dataset_version == dataset_version)
    if split is not None:
        query = query.where(Prompt.split == split)
    return list(session.scalars(query.order_by(Prompt.id)))


def campaign_by_name(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise ClinalignError(f"no campaign named {name!r}")
    return campaign


# --- loops: every run continues one loop, named by the id of the run that began it ---------------


def loops(session: Session) -> list[int]:
    """Loops with at least one run that succeeded (a failed first ingest begins none)."""
    query = select(Run.loop_id).where(Run.loop_id.is_not(None), Run.status == "succeeded").distinct()
    return list(session.scalars(query.order_by(Run.loop_id)))


def loop_of(session: Session, run_id: int | None) -> int | None:
    return session.scalar(select(Run.loop_id).where(Run.id == run_id)) if run_id is not None else None


def loop_runs(session: Session, loop_id: int, stage: str | None = None) -> list[Run]:
    """The loop's succeeded runs, oldest first (of one stage when ``stage`` is given)."""
    query = select(Run).where(Run.loop_id == loop_id, Run.status == "succeeded")
    if stage is not None:
        query = query.where(Run.stage == stage)
    return list(session.scalars(query.order_by(Run.id)))


def loop_artifacts(session: Session, loop_id: int, kind: str) -> list[Artifact]:
    """Artifacts of ``kind`` made by the loop's succeeded runs, newest first."""
    query = (
        select(Artifact)
        .join(Run, Artifact.run_id == Run.id)
        .where(Artifact.kind == kind, Run.status == "succeeded", Run.loop_id == loop_id)
        .order_by(Artifact.id.desc())
    )
    return list(session.scalars(query))


def artifacts_of_kind(session: Session, kind: str) -> list[Artifact]:
    """Every artifact of ``kind`` from a succeeded run, in any loop, newest first: for a person to choose
    from (the campaign form), never for a stage to take by default."""
    query = (
        select(Artifact)
        .join(Run, Artifact.run_id == Run.id)
        .where(Artifact.kind == kind, Run.status == "succeeded")
        .order_by(Artifact.id.desc())
    )
    return list(session.scalars(query))
