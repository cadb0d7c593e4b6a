"""Preferences: agreement between raters, consensus per item, adjudication, and TRL-format datasets.

Reads: ``Judgement`` and ``Adjudication`` rows of one campaign's items: a clinician campaign by name,
or the campaign behind a ``judgements`` artifact (the simulated panel's; default: the loop's newest).
Writes: preference files (Parquet and JSONL; see ``preferences.export``): ``train``/``test``
conversational pairs with an agreement-derived ``margin`` for the trainers, standard pairs, KTO data,
SFT data from clinicians' rewrites, and a flat table of every judgement; artifact ``preference_dataset``.

Consensus is a reviewer's adjudication where there is one, else the strict majority of usable votes
("cannot judge" is a missing value). Items whose votes split beyond the campaign's threshold wait in
the reviewer's queue (``disputed``), and only those may be adjudicated; calibration (gold) items
never go there: their answer is known. The figures are in ``preferences.agreement``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clinalign.accounts import AI_JUDGE_ROLE
from clinalign.audit import RunContext, canonical_json, record_event, row_digest, sha256_text
from clinalign.preferences import export
from clinalign.preferences.agreement import agreement
from clinalign.schemas import PAIR_CHOICES, SINGLE_CHOICES, ClinalignError, decide
from clinalign.settings import StageConfig
from clinalign.store import (
    Adjudication,
    AiJudgement,
    Artifact,
    Campaign,
    Candidate,
    Judgement,
    Prompt,
    Task,
    User,
    campaign_by_name,
)

log = logging.getLogger(__name__)


class Config(StageConfig):
    campaign: str | None = None
    """Name of a clinician campaign to aggregate; default: the campaign behind the judgements below."""

    judgements: int | None = None
    """Artifact id of (simulated) judgements to aggregate when no campaign is named; default: the loop's
    newest."""

    min_votes: int = Field(default=2, ge=1)
    """Items with fewer usable judgements than this give no training example (unless adjudicated)."""

    ai_judgements: int | None = None
    """Artifact id of an AI judge's verdicts on this campaign (``annotate ai``) to mix into the training
    split, on items the clinicians have not decided; none unless named."""

    ai_mix: float = Field(default=0.5, ge=0.0, le=1.0)
    """At most this many AI-decided pairs per clinician-decided training pair."""

    min_ai_agreement: float = Field(default=0.7, ge=0.0, le=1.0)
    """An AI judge is mixed in only when the lower bound of its agreement with the clinicians' consensus
    (Wilson 95%) reaches this: a handful of lucky items does not pass."""


def consensus(votes: list[str], min_votes: int) -> tuple[str, float] | None:
    """A strict-majority side (A or B) with its margin; None for no majority, a tie or 'both unacceptable'."""
    decided = decide(votes, min_votes)
    return decided if decided and decided[0] in ("A", "B") else None


def disputed(session: Session, campaign: Campaign) -> list[tuple[Task, list[Judgement]]]:
    """Fully judged items without a clear majority, or whose minority share exceeds the campaign's
    threshold, that no reviewer has settled yet: the adjudication queue, oldest first."""
    settled = select(Adjudication.task_id)
    complete = (
        select(Judgement.task_id)
        .join(Task, Task.id == Judgement.task_id)
        .where(Task.campaign_id == campaign.id)
        .group_by(Judgement.task_id, Task.overlap)
        .having(func.count(Judgement.id) >= Task.overlap)
    )
    tasks = list(
        session.scalars(
            select(Task).where(Task.id.in_(complete), Task.id.not_in(settled), Task.gold.is_(None)).order_by(Task.id)
        )
    )
    judgements = defaultdict(list)
    for j in session.scalars(select(Judgement).where(Judgement.task_id.in_([t.id for t in tasks]))):
        judgements[j.task_id].append(j)
    queue = []
    for task in tasks:
        votes = [j.choice for j in judgements[task.id]]
        decided = decide(votes, 2)
        usable = [v for v in votes if v != "cannot_judge"]
        minority = 1 - Counter(usable)[decided[0]] / len(usable) if decided else 1.0
        if decided is None or minority > campaign.disagreement:
            queue.append((task, judgements[task.id]))
    return queue


def adjudicate(session: Session, task_id: int, reviewer: User, choice: str, reason: str) -> Adjudication:
    """Record a reviewer's decision on a disputed item; any other item (unanimous, not fully judged yet,
    calibration, already settled) is refused, so a decision never overrides a clear consensus."""
    task = session.get(Task, task_id)
    if task is None or task.campaign_id is None:
        raise ClinalignError(f"no campaign item {task_id}")
    if task.gold is not None:
        raise ClinalignError(f"item {task_id} is a calibration item: its answer is known, it is not adjudicated")
    allowed = PAIR_CHOICES if task.candidate_b_id else SINGLE_CHOICES
    if choice not in allowed:
        raise ClinalignError(f"decision must be one of {', '.join(allowed)}")
    if len(reason.strip()) < 3:
        raise ClinalignError("give the reason for the decision")
    if session.scalar(select(Adjudication).where(Adjudication.task_id == task_id)):
        raise ClinalignError(f"item {task_id} is already adjudicated")
    if all(queued.id != task_id for queued, _ in disputed(session, session.get(Campaign, task.campaign_id))):
        raise ClinalignError(f"item {task_id} is not disputed: its judges agree, or it still waits for judgements")
    row = Adjudication(task_id=task_id, reviewer_id=reviewer.id, choice=choice, reason=reason.strip()[:4000])
    session.add(row)
    session.flush()
    record_event(
        session,
        reviewer.username,
        "adjudicate",
        f"task:{task_id}",
        {"adjudication": row.id, "choice": choice, "sha256": row_digest(row)},
    )
    return row


def _campaign(session: Session, config: Config, ctx: RunContext | None) -> Campaign:
    """The campaign named, or the one behind a judgements artifact (the loop's newest by default)."""
    if config.campaign:
        campaign = campaign_by_name(session, config.campaign)
        if ctx:
            ctx.join(session, campaign.run_id)
        return campaign
    if ctx is None:
        raise ClinalignError("name a campaign (--campaign)")
    source = ctx.input(session, "judgements", config.judgements)
    return session.get(Campaign, source.meta["campaign"])


def _load(session: Session, config: Config, ctx: RunContext | None):
    """A campaign's tasks, their judgements and adjudications."""
    campaign = _campaign(session, config, ctx)
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.campaign_id == campaign.id))}
    judgements = list(session.scalars(select(Judgement).where(Judgement.task_id.in_(tasks)).order_by(Judgement.id)))
    adjudicated = {
        a.task_id: a.choice for a in session.scalars(select(Adjudication).where(Adjudication.task_id.in_(tasks)))
    }
    return campaign, tasks, judgements, adjudicated


def _decisions(tasks: dict[int, Task], judgements: list[Judgement], adjudicated: dict[int, str], min_votes: int):
    votes: dict[int, list[str]] = defaultdict(list)
    for j in judgements:
        votes[j.task_id].append(j.choice)
    decided = []
    for task_id, task in sorted(tasks.items()):
        panel = decide(votes[task_id], min_votes)
        if task_id in adjudicated:
            choice = adjudicated[task_id]
            usable = [v for v in votes[task_id] if v != "cannot_judge"] or [choice]
            opposite = {"A": "B", "B": "A", "good": "bad", "bad": "good"}.get(choice, "")
            margin = (usable.count(choice) - usable.count(opposite)) / len(usable)
            decided.append(export.Decided(task, choice, margin, adjudicated=True, source="adjudicated"))
        elif panel:
            decided.append(export.Decided(task, panel[0], panel[1], adjudicated=False))
    return decided


def _figures(campaign, tasks, judgements, adjudicated, names, min_votes: int):
    """The decided items, and every agreement figure measured against them."""
    decided = _decisions(tasks, judgements, adjudicated, min_votes)
    gold = {t.id: t.gold for t in tasks.values() if t.gold}
    axes = tuple(campaign.axes)
    return decided, agreement(judgements, names, gold, {d.task.id: d.choice for d in decided}, axes)


def _ai_decided(session: Session, ctx: RunContext, config: Config, campaign, tasks, decided, prompts) -> list:
    """An AI judge's pair verdicts, for items of the training split no clinician has judged yet, up to
    ``ai_mix`` per clinician-decided training pair; refused below the agreement floor. They never count
    in agreement or consensus, and never reach the held-out split."""
    art = ctx.input(session, "ai_judgements", config.ai_judgements)
    if art.meta.get("campaign") != campaign.id:
        raise ClinalignError(f"AI judgements {art.id} are of another campaign than {campaign.name!r}")
    agreed = art.meta["agreement"]["vs_consensus"]
    if agreed["low"] is None or agreed["low"] < config.min_ai_agreement:  # the interval's floor: n counts
        shown = (
            "unmeasured (no item both judged)"
            if agreed["value"] is None
            else (f"{agreed['value']:.2f} [{agreed['low']:.2f}, {agreed['high']:.2f}]")
        )
        raise ClinalignError(
            f"AI judge {art.meta['judge']} agrees with the clinicians' consensus {shown} (n={agreed['n']}): "
            f"its lower bound is below min_ai_agreement {config.min_ai_agreement}: not mixed in"
        )
    judge = session.scalar(select(User).where(User.username == art.meta["judge"]))
    if judge is None or judge.role != AI_JUDGE_ROLE:
        raise ClinalignError(f"{art.meta['judge']!r} is no longer an AI judge's account: not mixed in")
    # Only where no clinician has given a usable verdict: a split vote waits for a reviewer, not an AI.
    voted = {
        j.task_id
        for j in session.scalars(select(Judgement).where(Judgement.task_id.in_(tasks)))
        if j.choice != "cannot_judge"
    }
    taken = {d.task.id for d in decided} | voted
    human_train = sum(1 for d in decided if d.choice in ("A", "B") and prompts[d.task.prompt_id].split == "train")
    room = int(config.ai_mix * human_train)
    mixed = []
    mine = (AiJudgement.user_id == judge.id, AiJudgement.task_id.in_(tasks))
    for verdict in session.scalars(select(AiJudgement).where(*mine).order_by(AiJudgement.id)):
        task = tasks[verdict.task_id]
        if len(mixed) >= room:
            break
        held_out = prompts[task.prompt_id].split != "train"
        if task.id in taken or task.gold or held_out or verdict.choice not in ("A", "B"):
            continue
        mixed.append(export.Decided(task, verdict.choice, 0.0, adjudicated=False, source="ai"))
    return mixed


def stats(session: Session, config: Config) -> dict:
    """Every agreement figure for a named campaign, keyed by username."""
    campaign, tasks, judgements, adjudicated = _load(session, config, None)
    names = {u.id: u.username for u in session.scalars(select(User))}
    decided, figures = _figures(campaign, tasks, judgements, adjudicated, names, config.min_votes)
    figures.update(items=len(tasks), decided=len(decided), adjudicated=len(adjudicated))
    return figures


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        campaign, tasks, judgements, adjudicated = _load(session, config, ctx)
        if config.campaign:  # clinicians' judgements accumulate: this export reads a snapshot of them
            digest = sha256_text(canonical_json([[j.id, j.task_id, j.user_id, j.choice] for j in judgements]))
            ctx.use_external(
                session, "judgements", f"store://judgement?campaign={campaign.id}", digest, {"campaign": campaign.id}
            )
        made = session.scalar(select(Artifact).where(Artifact.run_id == campaign.run_id, Artifact.kind == "campaign"))
        if made is not None:  # lineage: judgements <- campaign items <- candidates <- prompts ...
            ctx.use(made.id)
        cand_ids = {c for t in tasks.values() for c in (t.candidate_a_id, t.candidate_b_id) if c}
        candidates = {c.id: c for c in session.scalars(select(Candidate).where(Candidate.id.in_(cand_ids)))}
        prompt_ids = {t.prompt_id for t in tasks.values()}
        prompts = {p.id: p for p in session.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        names = {u.id: u.username for u in session.scalars(select(User))}
    decided, figures = _figures(campaign, tasks, judgements, adjudicated, names, config.min_votes)
    decided_training = [d for d in decided if not d.task.gold]  # calibration items measure raters, they don't train
    ai_mixed = []
    if config.ai_judgements is not None:
        with ctx.store.session() as session:
            ai_mixed = _ai_decided(session, ctx, config, campaign, tasks, decided_training, prompts)
            ai_agreement = session.get(Artifact, config.ai_judgements).meta["agreement"]
        figures["ai_judge"] = {"mixed_pairs": len(ai_mixed), **ai_agreement}
        decided_training += ai_mixed
    rows = export.tables(decided_training, tasks, judgements, prompts, candidates, names, campaign.name)
    counts = export.write(rows, ctx.out_dir / "preferences")
    summary = {
        "train_pairs": counts["train"],
        "test_pairs": counts["test"],
        "kto_rows": counts["kto"],
        "sft_rewrites": counts["sft_rewrites"],
        "judgements": counts["judgements"],
        "no_consensus": len(tasks) - len(decided),
        "tie_or_unacceptable": sum(d.choice in ("tie", "both_unacceptable") for d in decided),
        "adjudicated": len(adjudicated),
        "ai_pairs": len(ai_mixed),
    }
    with ctx.store.session() as session:
        meta = {**summary, "agreement": figures, "campaign": campaign.name}
        art = ctx.produce_path(session, "preference_dataset", ctx.out_dir / "preferences", meta)
        record_event(session, "system", "preferences", f"artifact:{art.id}", summary)
    log.info("preferences: %s; alpha(choice)=%s", summary, figures["alpha_choice"])
    ctx.metrics.update(summary, agreement=figures, artifact=art.id)
    return ctx.metrics
