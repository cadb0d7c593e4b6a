"""The assignment queue: which item a clinician sees next, and how a judgement is taken in.

Each task has ``overlap`` slots. A claim is one conditional UPDATE (``open_slots = open_slots - 1
WHERE open_slots > 0 RETURNING``), atomic on SQLite and PostgreSQL alike, and the slot it returns is
written on the ``Assignment``, where ``(task_id, slot)`` is unique: two clinicians asking at the same
moment can never both take the last slot, and the database refuses a judgement beyond it. A claim
that is neither judged nor renewed within ``LEASE`` (the web session's idle timeout, so its holder
has been signed out) frees its slot for the next clinician, once no unclaimed slot is left.
Blind mode: nothing here ever returns another clinician's judgement.

Sides are shown in a random order per clinician (``Assignment.swapped``); judgements are stored in
the task's own order, so agreement and consensus compare like with like.

A rationale or rewrite is free text a clinician typed: it passes the PHI scrub before it is stored
(``phi.scrub``), since reviewers read it and rewrites become training data; the text as typed is kept
aside only when the site asks (``keep_original``). Each submission and edit is an audit event carrying
the SHA-256 of the stored judgement, so ``audit verify`` notices a row changed behind the app's back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from clinalign import phi
from clinalign.accounts import AI_JUDGE_ROLE
from clinalign.audit import record_event, row_digest
from clinalign.schemas import PAIR_CHOICES, SINGLE_CHOICES, ClinalignError, JudgementIn
from clinalign.store import (
    Adjudication,
    Assignment,
    Campaign,
    Candidate,
    Judgement,
    JudgementRevision,
    Prompt,
    Store,
    Task,
    User,
    aware,
    utcnow,
)

LEASE = timedelta(minutes=30)
_CANDIDATES = 20  # tasks read per plan; one claim statement picks the best of them still open
_TRIES = 3  # plans read per request: one goes stale when others claim all its tasks first


class NotFound(ClinalignError):
    """The item does not exist or is not this clinician's (the two are not told apart)."""


class Conflict(ClinalignError):
    """The request is valid but can no longer be applied (already submitted, slot taken, adjudicated)."""


@dataclass
class Item:
    """What the comparison screen shows: never the model's identity, never others' judgements."""

    assignment: Assignment
    campaign: Campaign
    prompt: Prompt
    answers: list[str]  # in display order
    done: int
    total: int


def _routed(query, campaign: Campaign, user: User):
    if not campaign.routing:
        return query
    return query.where(or_(Task.specialty == "general", Task.specialty.in_(user.specialties or [])))


def _counts(campaign: Campaign, user: User) -> tuple:
    """(items this clinician has judged, items in the campaign they may see), as scalar subqueries."""
    done = (
        select(func.count())
        .select_from(Assignment)
        .join(Task, Task.id == Assignment.task_id)
        .where(Task.campaign_id == campaign.id, Assignment.user_id == user.id, Assignment.judgement_id.is_not(None))
    )
    total = _routed(select(func.count()).select_from(Task).where(Task.campaign_id == campaign.id), campaign, user)
    return done.scalar_subquery(), total.scalar_subquery()


def progress(session: Session, campaign: Campaign, user: User) -> tuple[int, int]:
    """(items this clinician has judged, items in the campaign they may see)."""
    return tuple(session.execute(select(*_counts(campaign, user))).one())


def _open_assignment(session: Session, campaign: Campaign, user: User, now: datetime) -> Assignment | None:
    return session.scalar(
        select(Assignment)
        .join(Task, Task.id == Assignment.task_id)
        .where(
            Task.campaign_id == campaign.id,
            Assignment.user_id == user.id,
            Assignment.judgement_id.is_(None),
            Assignment.expires_at > now,
        )
        .order_by(Assignment.id)
        .limit(1)
    )


def _claim(session: Session, task_ids: list[int], user: User, now: datetime, lease: timedelta):
    """Take an unclaimed slot of the best of ``task_ids`` still open: the conditional decrement is the
    claim, atomic on any database. None when other clinicians took them all first.

    On PostgreSQL the choice skips tasks another request is claiming this instant instead of queueing
    on their row lock (everyone's best candidate is often the same task); SQLite ignores the clause,
    its writers already take turns. Tasks this clinician already holds are excluded here, and
    ``(task_id, user_id)`` is unique besides: a claim that slipped past the check would fail to insert
    and roll back whole, its slot with it.
    """
    mine = select(Assignment.id).where(Assignment.task_id == Task.id, Assignment.user_id == user.id)
    best = (
        select(Task.id)
        .where(Task.id.in_(task_ids), Task.open_slots > 0, ~mine.exists())
        .order_by(Task.priority.desc(), Task.open_slots, Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = session.execute(
        update(Task)
        .where(Task.id == best, Task.open_slots > 0)
        .values(open_slots=Task.open_slots - 1)
        .returning(Task.id, Task.open_slots)
        .execution_options(synchronize_session=False)
    ).first()
    if claimed is None:
        return None
    assignment = Assignment(
        task_id=claimed.id,
        user_id=user.id,
        slot=claimed.open_slots,
        swapped=random.random() < 0.5,
        created_at=now,
        expires_at=now + lease,
    )
    session.add(assignment)
    session.flush()
    return assignment


def _reclaim(session: Session, assignment_id: int, user: User, now: datetime, lease: timedelta):
    """Take over a slot whose holder let the lease run out without judging (only if still so)."""
    claimed = session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.judgement_id.is_(None), Assignment.expires_at <= now)
        .values(user_id=user.id, swapped=random.random() < 0.5, created_at=now, expires_at=now + lease)
        .execution_options(synchronize_session=False)
    ).rowcount
    return session.get(Assignment, assignment_id, populate_existing=True) if claimed else None


@dataclass
class Plan:
    """What a clinician could be given next, read without taking the write lock (``candidates``)."""

    current: int | None  # an assignment they already hold
    fresh: list[int]  # task ids with an unclaimed slot, best first
    lapsed: list[int]  # assignment ids whose lease ran out unjudged (read only when nothing is fresh)

    @property
    def empty(self) -> bool:
        return self.current is None and not self.fresh and not self.lapsed


def candidates(session: Session, campaign: Campaign, user: User) -> Plan:
    """Reads only: the clinician's open item, else the best tasks with a free slot, else lapsed slots."""
    now = utcnow()
    if user.role == AI_JUDGE_ROLE:
        return Plan(None, [], [])  # an AI judge takes no clinician's slot (annotate.ai_judge)
    if not (campaign.status == "open" or (campaign.status == "simulated" and user.simulated)):
        return Plan(None, [], [])  # a closed campaign, or the simulated panel's own
    current = _open_assignment(session, campaign, user, now)
    if current is not None:
        return Plan(current.id, [], [])
    seen = select(Assignment.task_id).where(Assignment.user_id == user.id)
    fresh = (
        select(Task.id)
        .where(Task.campaign_id == campaign.id, Task.open_slots > 0, Task.id.not_in(seen))
        .order_by(Task.priority.desc(), Task.open_slots, Task.id)
        .limit(_CANDIDATES)
    )
    fresh_ids = list(session.scalars(_routed(fresh, campaign, user)))
    if fresh_ids:
        return Plan(None, fresh_ids, [])
    lapsed = (
        select(Assignment.id)
        .join(Task, Task.id == Assignment.task_id)
        .where(
            Task.campaign_id == campaign.id,
            Assignment.judgement_id.is_(None),
            Assignment.expires_at <= now,
            Task.id.not_in(seen),
        )
        .order_by(Task.priority.desc(), Assignment.id)
        .limit(_CANDIDATES)
    )
    return Plan(None, [], list(session.scalars(_routed(lapsed, campaign, user))))


def take(session: Session, plan: Plan, user: User, lease: timedelta = LEASE) -> Assignment | None:
    """Claim from the plan; each claim re-checks atomically, so a stale plan is safe (it may yield None)."""
    now = utcnow()
    if plan.current is not None:
        return session.get(Assignment, plan.current)
    if plan.fresh:
        return _claim(session, plan.fresh, user, now, lease)
    for assignment_id in plan.lapsed:
        assignment = _reclaim(session, assignment_id, user, now, lease)
        if assignment is not None:
            return assignment
    return None


def claim_next(store: Store, campaign: Campaign, user: User, lease: timedelta = LEASE) -> Assignment | None:
    """The clinician's open item, or a newly claimed one, recorded as shown: highest priority first,
    then items closest to their overlap (so consensus forms early), then oldest; lapsed slots last.
    None when nothing is left. The plan is read outside the write lock; only the claim and the view
    take it."""
    for _ in range(_TRIES):
        with store.reading() as session:
            plan = candidates(session, campaign, user)
        if plan.empty:
            return None
        try:
            with store.session() as session:
                assignment = take(session, plan, user, lease=lease)
                if assignment is not None:
                    viewed(session, user, assignment)
                    return assignment
        except IntegrityError:  # the unique (task, clinician) refused a claim that slipped past the check
            continue
    return None


def owned(session: Session, assignment_id: int, user: User) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.user_id != user.id:
        raise NotFound(f"item {assignment_id} is not assigned to you")
    return assignment


def item(session: Session, assignment: Assignment, user: User, campaign: Campaign | None = None) -> Item:
    """Load what the screen shows, in one query once the campaign is known (``campaign``: the
    assignment's, when the caller has it). Reads only; the view is audited by ``viewed``."""
    if campaign is None:
        campaign = session.scalar(select(Campaign).join(Task).where(Task.id == assignment.task_id))
    first, second = aliased(Candidate), aliased(Candidate)
    prompt, *answers, done, total = session.execute(
        select(Prompt, first.text, second.text, *_counts(campaign, user))
        .select_from(Task)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .join(first, first.id == Task.candidate_a_id)
        .outerjoin(second, second.id == Task.candidate_b_id)
        .where(Task.id == assignment.task_id)
    ).one()
    answers = [text for text in answers if text is not None]  # one answer in a single-answer campaign
    if assignment.swapped:
        answers.reverse()
    return Item(assignment, campaign, prompt, answers, done, total)


def viewed(session: Session, user: User, assignment: Assignment) -> None:
    record_event(session, user.username, "item.view", f"assignment:{assignment.id}", {"task": assignment.task_id})


def _task_order(judgement: JudgementIn, swapped: bool) -> dict:
    """Map what the clinician saw (display order) back to the task's order, or back again: swapping
    the sides twice is no swap."""
    values = judgement.model_dump(mode="json")
    if not swapped or values["ratings_b"] is None:
        return values
    flip = {"A": "B", "B": "A"}
    values["choice"] = flip.get(values["choice"], values["choice"])
    values["ratings_a"], values["ratings_b"] = values["ratings_b"], values["ratings_a"]
    values["tags_a"], values["tags_b"] = values["tags_b"], values["tags_a"]
    return values


def as_displayed(judgement: JudgementIn, swapped: bool) -> JudgementIn:
    """A judgement written in the task's order, as its rater would hand it in from the screen."""
    return JudgementIn.model_validate(_task_order(judgement, swapped))


def _scrubbed(values: dict, keep_original: bool) -> dict:
    """The free text with residual PHI tagged; what was typed goes aside only when the site asks."""
    typed = {"rationale": values["rationale"], "rewrite": values["rewrite"]}
    values["rationale"] = phi.scrub(values["rationale"])[0] if values["rationale"] else ""
    values["rewrite"] = phi.scrub(values["rewrite"])[0] if values["rewrite"] else None
    changed = typed != {"rationale": values["rationale"], "rewrite": values["rewrite"]}
    values["original"] = typed if keep_original and changed else None
    return values


def validate(judgement: JudgementIn, campaign: Campaign) -> None:
    """The campaign's rules on top of the schema's: mode, and exactly the campaign's axes."""
    pair = campaign.mode == "pair"
    if judgement.choice not in (PAIR_CHOICES if pair else SINGLE_CHOICES) + ("cannot_judge",):
        raise ClinalignError(f"choice {judgement.choice!r} does not fit a {campaign.mode} campaign")
    if judgement.choice == "cannot_judge":
        return  # nothing to rate: the clinician declined the item
    sides = [("ratings_a", judgement.ratings_a)] + ([("ratings_b", judgement.ratings_b)] if pair else [])
    for name, ratings in sides:
        if ratings is None or set(ratings) != set(campaign.axes):
            missing = sorted(set(campaign.axes) - set(ratings or {}))
            raise ClinalignError(f"{name}: rate every axis (missing: {', '.join(missing) or 'none'}; no others)")
    if not pair and (judgement.ratings_b is not None or judgement.tags_b):
        raise ClinalignError("a single-answer item has no second answer to rate")


def submit(
    session: Session,
    assignment: Assignment,
    user: User,
    judgement: JudgementIn,
    campaign: Campaign | None = None,
    keep_original: bool = False,
) -> Judgement:
    """Store one judgement for one claimed slot; a second submission of the same item is a Conflict.
    ``campaign`` is the assignment's, when the caller has it already."""
    if assignment.user_id != user.id:
        raise NotFound(f"item {assignment.id} is not assigned to you")
    if assignment.judgement_id is not None:
        raise Conflict("this item is already submitted; edit it from your history instead")
    if campaign is None:
        campaign = session.get(Campaign, session.get(Task, assignment.task_id).campaign_id)
    validate(judgement, campaign)
    seconds = (utcnow() - aware(assignment.created_at)).total_seconds()
    values = _scrubbed(_task_order(judgement, assignment.swapped), keep_original)
    row = Judgement(task_id=assignment.task_id, user_id=user.id, seconds=seconds, **values)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a parallel submission of the same item; this transaction rolls back whole
        raise Conflict("this item is already submitted") from None
    assignment.judgement_id = row.id
    record_event(
        session,
        user.username,
        "judgement.submit",
        f"task:{assignment.task_id}",
        {"judgement": row.id, "choice": row.choice, "sha256": row_digest(row)},
    )
    return row


def edit(
    session: Session, judgement_id: int, user: User, judgement: JudgementIn, keep_original: bool = False
) -> Judgement:
    """Replace one's own judgement (the earlier version is kept); refused once the item is adjudicated."""
    row = session.get(Judgement, judgement_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"judgement {judgement_id} is not yours")
    task = session.get(Task, row.task_id)
    if session.scalar(select(Adjudication).where(Adjudication.task_id == task.id)):
        raise Conflict("this item has been adjudicated; it can no longer be edited")
    validate(judgement, session.get(Campaign, task.campaign_id))
    assignment = session.scalar(select(Assignment).where(Assignment.judgement_id == row.id))
    fields = ("choice", "ratings_a", "ratings_b", "tags_a", "tags_b", "rationale", "rewrite")
    session.add(JudgementRevision(judgement_id=row.id, content={f: getattr(row, f) for f in fields}))
    values = _scrubbed(_task_order(judgement, bool(assignment and assignment.swapped)), keep_original)
    for name, value in values.items():
        setattr(row, name, value)
    row.created_at = utcnow()
    record_event(
        session,
        user.username,
        "judgement.edit",
        f"task:{task.id}",
        {"judgement": row.id, "choice": row.choice, "sha256": row_digest(row)},
    )
    return row


def history(session: Session, campaign: Campaign, user: User, limit: int = 50) -> list[tuple[Assignment, Judgement]]:
    rows = session.execute(
        select(Assignment, Judgement)
        .join(Judgement, Judgement.id == Assignment.judgement_id)
        .join(Task, Task.id == Assignment.task_id)
        .where(Task.campaign_id == campaign.id, Assignment.user_id == user.id)
        .order_by(Judgement.created_at.desc())
        .limit(limit)
    ).all()
    return [(a, j) for a, j in rows]


def display_order(judgement: Judgement, swapped: bool) -> dict:
    """A stored judgement as its author saw it, to prefill the edit form."""
    values = {
        f: getattr(judgement, f)
        for f in ("choice", "ratings_a", "ratings_b", "tags_a", "tags_b", "rationale", "rewrite")
    }
    return _task_order(JudgementIn.model_validate(values), swapped)
