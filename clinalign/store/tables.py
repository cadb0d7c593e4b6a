"""The store's tables: SQLAlchemy 2 declarative classes for every stage's records, the web app's
accounts and sessions, runs and lineage, and the audit chain.

Reads: nothing.  Writes: nothing (the classes; ``Store`` opens the database).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
