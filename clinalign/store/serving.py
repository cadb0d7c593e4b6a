"""The serving tables: API keys, every served interaction (de-identified) with its verdict and its
review, and clinicians' flags on served answers.

Reads: nothing.  Writes: nothing (the classes; ``Store`` opens the database).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clinalign.store.tables import Base, utcnow


class ApiKey(Base):
    """A client of ``clinalign serve``. The key is shown once; only its SHA-256 is stored (keys are
    32 random bytes, so a plain hash cannot be reversed by guessing)."""

    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    audience: Mapped[str] = mapped_column(String(20))
    """Who reads this client's answers (patient, caregiver, clinician, educator, payer): the scope rules."""
    per_minute: Mapped[int]
    """Requests allowed per minute (a moving window)."""
    callback_url: Mapped[str | None] = mapped_column(String(500))
    """Where a held (tier 2) answer is posted once a clinician has decided; set by an admin, never by a request."""
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Interaction(Base):
    """One served request and what became of it. Every text here is de-identified."""

    __tablename__ = "interaction"
    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    audience: Mapped[str] = mapped_column(String(20))
    messages: Mapped[list]
    """The request's chat messages, de-identified."""
    answer: Mapped[str | None] = mapped_column(Text)
    """The model's answer as generated (de-identified); empty when the request was blocked first."""
    checked: Mapped[str | None] = mapped_column(Text)
    """The answer after the output rails: what goes out, or what a reviewer approves."""
    sent: Mapped[str | None] = mapped_column(Text)
    """What the client received: the answer after the rails, or the reviewer's version; None while held."""
    action: Mapped[str] = mapped_column(String(10))
    tier: Mapped[int]
    escalate: Mapped[bool] = mapped_column(Boolean)
    disposition: Mapped[str] = mapped_column(String(10))
    reasons: Mapped[list]
    policy: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), index=True)
    """``sent``, ``held`` (tier 2, waiting), ``approved``, ``edited``, ``rejected``, ``blocked``, ``failed``,
    ``cut`` (the client left a stream midway; ``sent`` holds what it had received)."""
    tags: Mapped[dict] = mapped_column(default=dict)
    """Demographic and context tags the client sent (``metadata``), for the fairness breakdowns."""
    seconds: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    review_reason: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Flag(Base):
    """A clinician's (or a client's) report that a served answer was wrong, with error tags and a
    correction; ``feedback`` turns flags into annotation tasks for the next round."""

    __tablename__ = "flag"
    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interaction.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_key.id"))
    error_tags: Mapped[list]
    correction: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    feedback_run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    """The ``feedback`` run that turned the flag into a case for the next round."""
