"""Tiered clinician oversight of served answers: recording every interaction (de-identified), the
review queue of tier 2, clinicians' decisions, flags on served answers, and override rates.

Reads and writes: ``Interaction``, ``Flag``, ``ApiKey`` and audit events in the store.

The rules live here, not in the routes, because the serving API, the web app's review pages and
``feedback`` all use them. Tiers: 1 goes out at once; 2 is held until a clinician approves, edits or
rejects it; 3 (escalation) goes out at once with emergency guidance, and is flagged to clinicians.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from clinalign import guardrails, phi
from clinalign.audit import record_event
from clinalign.guardrails import Verdict
from clinalign.schemas import ERROR_TAGS, ClinalignError
from clinalign.store import ApiKey, Flag, Interaction, User, utcnow

AUDIENCES = ("patient", "caregiver", "clinician", "educator", "payer")
DECISIONS = ("approve", "edit", "reject")
DECIDED = {"approve": "approved", "edit": "edited", "reject": "rejected"}
REVIEWER_ROLES = ("clinician", "reviewer")
MAX_TEXT = 20_000


# --- API keys ---------------------------------------------------------------------------------------


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_key(
    session: Session, name: str, audience: str, per_minute: int, created_by: str, callback_url: str | None = None
) -> tuple[ApiKey, str]:
    """A new client key; the secret is returned once and only its hash is stored."""
    if audience not in AUDIENCES:
        raise ClinalignError(f"audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
    if per_minute < 1:
        raise ClinalignError(f"per_minute must be at least 1, got {per_minute}")
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise ClinalignError(f"callback_url must be an http(s) URL, got {callback_url!r}")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ClinalignError(f"an API key named {name!r} exists already")
    secret = "cla-" + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        digest=digest(secret),
        audience=audience,
        per_minute=per_minute,
        callback_url=callback_url,
        created_by=created_by,
    )
    session.add(key)
    session.flush()
    record_event(session, created_by, "serve.key.add", f"api_key:{key.id}", {"audience": audience})
    return key, secret


def revoke_key(session: Session, name: str, actor: str) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise ClinalignError(f"no API key named {name!r}")
    key.revoked_at = key.revoked_at or utcnow()
    record_event(session, actor, "serve.key.revoke", f"api_key:{key.id}", {})
    return key


def key_for(session: Session, secret: str) -> ApiKey | None:
    """The live key whose secret this is (a lookup by hash: no timing signal about other keys)."""
    key = session.scalar(select(ApiKey).where(ApiKey.digest == digest(secret)))
    return key if key is not None and key.revoked_at is None else None


# --- interactions -----------------------------------------------------------------------------------


def deidentify_messages(messages: list[dict]) -> list[dict]:
    """The messages with PHI replaced by type tags: what the model sees and the store keeps."""
    return [{**m, "content": phi.scrub(m["content"])[0]} for m in messages]


def record(
    session: Session,
    *,
    key: ApiKey,
    model: str,
    messages: list[dict],
    answer: str | None,
    checked: str | None,
    sent: str | None,
    verdict: Verdict,
    status: str,
    tags: dict,
    seconds: float | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> Interaction:
    """Store one interaction. Every text must be de-identified already: ``messages`` by
    ``deidentify_messages``, ``answer`` (the model's own words: a model can make PHI up) and
    ``checked`` by the output rails (``Checked.deidentified`` and ``Checked.text``), ``sent`` made of
    those and of policy texts."""
    interaction = Interaction(
        api_key_id=key.id,
        model=model,
        audience=key.audience,
        messages=messages,
        answer=answer,
        checked=checked,
        sent=sent,
        action=str(verdict.action),
        tier=verdict.tier,
        escalate=verdict.escalate,
        disposition=verdict.disposition,
        reasons=[r.as_dict() for r in verdict.reasons if r.rule != "phi_leak"]
        + [{"rule": "phi_leak", "category": r.category} for r in verdict.reasons if r.rule == "phi_leak"],
        policy=verdict.policy,
        status=status,
        tags={phi.scrub(str(k)[:40])[0]: phi.scrub(str(v)[:80])[0] for k, v in list(tags.items())[:16]},
        seconds=seconds,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    session.add(interaction)
    session.flush()
    payload = {"tier": interaction.tier, "action": interaction.action, "status": status}
    record_event(session, f"api_key:{key.id}", "serve.answer", f"interaction:{interaction.id}", payload)
    if verdict.escalate:
        record_event(session, "serve", "serve.escalation", f"interaction:{interaction.id}", {"tier": 3})
    return interaction


def pending(session: Session, limit: int = 50) -> list[Interaction]:
    """Tier 2 answers waiting for a clinician, oldest first."""
    query = select(Interaction).where(Interaction.status == "held").order_by(Interaction.id).limit(limit)
    return list(session.scalars(query))


def decide(
    session: Session, interaction_id: int, reviewer: User, decision: str, text: str | None, reason: str
) -> Interaction:
    """A clinician's decision on a held answer: approve it as it is, send an edited version, or reject
    it (the client gets the policy's text for a rejection, or the clinician's own words). An edit of an
    escalated answer must still send the reader to emergency care."""
    if reviewer.role not in REVIEWER_ROLES:
        raise ClinalignError(f"only a clinician or a reviewer may review answers, not a {reviewer.role}")
    if decision not in DECISIONS:
        raise ClinalignError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    # Locked until commit (PostgreSQL; SQLite writes one at a time): two clinicians deciding the same
    # answer at once cannot both pass the "held" check.
    interaction = session.get(Interaction, interaction_id, with_for_update=True)
    if interaction is None:
        raise ClinalignError(f"no interaction {interaction_id}")
    if interaction.status != "held":
        raise ClinalignError(f"interaction {interaction_id} is not waiting for review (it is {interaction.status})")
    reason = phi.scrub(reason.strip())[0][:2000]
    if decision != "approve" and not reason:
        raise ClinalignError(f"say why you {decision} this answer (reason)")
    policy = guardrails.load()
    if decision == "approve":
        sent = interaction.checked
    else:
        edited = phi.scrub((text or "").strip())[0][:MAX_TEXT]
        if decision == "edit" and not edited:
            raise ClinalignError("an edit needs the text to send")
        sent = edited or policy.texts.rejected
        if interaction.escalate and not guardrails.escalates(sent, policy):
            raise ClinalignError("this case escalated: the text sent must still send the reader to emergency care")
    interaction.sent = sent
    interaction.status = DECIDED[decision]
    interaction.reviewer_id = reviewer.id
    interaction.review_reason = reason
    interaction.reviewed_at = utcnow()
    record_event(session, reviewer.username, f"serve.review.{decision}", f"interaction:{interaction.id}", {})
    return interaction


def result(interaction: Interaction) -> dict:
    """What a client polling for a held answer sees."""
    found = {"id": interaction.id, "status": interaction.status, "tier": interaction.tier}
    if interaction.status != "held":
        found["content"] = interaction.sent
    if interaction.review_reason and interaction.status in ("edited", "rejected"):
        found["review_reason"] = interaction.review_reason
    return found


# --- flags -----------------------------------------------------------------------


def flag(
    session: Session,
    interaction_id: int,
    *,
    error_tags: list[str],
    correction: str | None,
    user: User | None = None,
    key: ApiKey | None = None,
) -> Flag:
    """A report that a served answer was wrong: error tags from the annotation vocabulary and an
    optional correction (PHI-scrubbed). A client may flag only its own interactions."""
    interaction = session.get(Interaction, interaction_id)
    if interaction is None or (key is not None and interaction.api_key_id != key.id):
        raise ClinalignError(f"no interaction {interaction_id}")
    unknown = [t for t in error_tags if t not in ERROR_TAGS]
    if unknown or not error_tags:
        raise ClinalignError(f"error_tags: give one or more of {', '.join(ERROR_TAGS)} (unknown: {unknown[:3]})")
    correction = phi.scrub(correction.strip())[0][:MAX_TEXT] if correction and correction.strip() else None
    found = Flag(
        interaction_id=interaction.id,
        user_id=user.id if user else None,
        api_key_id=key.id if key else None,
        error_tags=sorted(set(error_tags)),
        correction=correction,
    )
    session.add(found)
    session.flush()
    actor = user.username if user else f"api_key:{key.id}" if key else "unknown"
    record_event(session, actor, "serve.flag", f"interaction:{interaction.id}", {"flag": found.id})
    return found
