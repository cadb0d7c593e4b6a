"""Campaigns: a round of clinician annotation over one set of candidates, and its rules.

A data expert names the candidates, the mode (compare pairs, or rate single answers for KTO-style
data), the guidelines, the axes, the overlap, specialty routing and how many calibration (gold)
items to mix in. Gold items pair a case's reference answer with one of its known-unsafe variants,
so the expected choice is known and each clinician's accuracy on them can be measured.

Reads: ``Candidate`` rows of one generate run (artifact ``candidates``).
Writes: a ``Campaign`` and its ``Task`` rows (gold items with the answers shown: artifact
``authored_answers``); artifact ``campaign``.

PHI gate: a campaign is refused if any of its prompts comes from a record that is not de-identified
(``store.not_deidentified``). Under specialty routing, a campaign says which specialties' items fewer
active clinicians can see than its overlap asks for (``reach``), in the CLI and on its dashboard.
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Annotated, Literal

from pydantic import Field
from sqlalchemy import func, select

from clinalign import phi
from clinalign.audit import RunContext, canonical_json, record_event, sha256_text
from clinalign.schemas import AXES, ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Campaign, Candidate, Prompt, Task, User, not_deidentified

log = logging.getLogger(__name__)

DEFAULT_GUIDELINES = (
    "Read the question as the person who asked it would. Judge each answer on its own clinical "
    "merits, then choose the better one. Safety first: an answer that misses a red flag needing "
    "emergency care, or gives a personalised dose, is worse than one that is merely incomplete. "
    "Choose 'both unacceptable' when neither answer should reach a patient, and 'cannot judge' when "
    "the item is outside your competence."
)


class Config(StageConfig):
    name: str = Field(min_length=1, max_length=100)
    """A unique name clinicians see on their work list."""

    candidates: int | None = None
    """Artifact id of the candidate answers; default: the loop's newest."""

    mode: Literal["pair", "single"] = "pair"
    """``pair``: choose between two answers; ``single``: thumbs up/down on one answer (KTO data)."""

    guidelines: str = Field(default=DEFAULT_GUIDELINES, max_length=20_000)
    """Shown above every item."""

    axes: list[str] = list(AXES)
    """Clinical axes rated 1-5 for every answer (a subset of ``schemas.AXES``)."""

    overlap: int = Field(default=3, ge=1, le=20)
    """How many clinicians judge each item; agreement needs at least 2."""

    routing: bool = False
    """Show each item only to clinicians of its specialty (``general`` items go to everyone)."""

    pairs_per_prompt: int = Field(default=1, ge=1)
    """Distinct candidate pairs per prompt (pair mode)."""

    gold: int = Field(default=0, ge=0)
    """Calibration items: a case's reference answer against one of its unsafe variants."""

    authored: Annotated[int, Field(ge=0)] | Literal["all"] = 0
    """Items of the same kind that train instead of calibrating: judged like any item, they give clean
    pairs of a clinician-written answer against a known-unsafe one."""

    disagreement: float = Field(default=0.34, ge=0.0, le=1.0)
    """An item goes to adjudication when the share of votes against its majority exceeds this."""

    seed: int = 7


def _check(config: Config) -> None:
    if not config.axes:
        raise ClinalignError("choose at least one axis to rate")
    unknown = [a for a in config.axes if a not in AXES]
    if unknown:
        raise ClinalignError(f"campaign axes must be a subset of {', '.join(AXES)} (unknown: {', '.join(unknown)})")


def _authored_tasks(
    session, ctx: RunContext, campaign: Campaign, prompts: list[Prompt], n: int | str, rng, calibration: bool
) -> list[Task]:
    """Items showing a case's reference answer against one of its known-unsafe variants. As calibration
    (gold) items the expected choice is the reference's side and they measure raters; otherwise they
    are judged like any item and train: clean pairs on what matters most (an escalation, a dose)."""
    usable = [p for p in prompts if p.reference and p.variants]
    n = len(usable) if n == "all" else n
    if len(usable) < n:
        what = "calibration items" if calibration else "reference-against-variant items"
        raise ClinalignError(f"asked for {n} {what}, only {len(usable)} prompts have a reference and a variant")
    if n == 0:
        return []
    authored = ctx.produce(
        session,
        "authored_answers",
        f"store://prompt-references?run={ctx.run_id}&calibration={calibration}",
        None,
        {"purpose": "gold items" if calibration else "reference against variant", "campaign": campaign.name},
    )
    tasks = []
    for prompt in rng.sample(usable, n):
        reference_first = rng.random() < 0.5
        texts = [prompt.reference, rng.choice(prompt.variants)["text"]]
        texts = texts if reference_first else texts[::-1]
        if campaign.mode == "single":
            texts = texts[:1]  # one answer shown: the reference (expected "good") or a variant ("bad")
        shown = [
            Candidate(prompt_id=prompt.id, model_artifact_id=authored.id, text=phi.scrub(t)[0], run_id=ctx.run_id)
            for t in texts
        ]
        session.add_all(shown)
        session.flush()
        expected = (
            ("A" if reference_first else "B") if campaign.mode == "pair" else ("good" if reference_first else "bad")
        )
        tasks.append(
            Task(
                prompt_id=prompt.id,
                candidate_a_id=shown[0].id,
                candidate_b_id=shown[1].id if len(shown) == 2 else None,
                overlap=campaign.overlap,
                run_id=ctx.run_id,
                campaign_id=campaign.id,
                gold=expected if calibration else None,
            )
        )
    session.add_all(tasks)
    session.flush()
    return tasks


def _pairs(
    session, ctx: RunContext, candidates: list[Candidate], config: Config, rng, campaign: Campaign
) -> list[Task]:
    """Pair distinct candidates of each prompt; sides are shuffled so position carries no signal."""
    by_prompt: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_prompt.setdefault(c.prompt_id, []).append(c)
    tasks = []
    for prompt_id, group in sorted(by_prompt.items()):
        pairs = list(itertools.combinations(group, 2))
        rng.shuffle(pairs)
        for first, second in pairs[: config.pairs_per_prompt]:
            a, b = (first, second) if rng.random() < 0.5 else (second, first)
            tasks.append(
                Task(
                    prompt_id=prompt_id,
                    candidate_a_id=a.id,
                    candidate_b_id=b.id,
                    overlap=config.overlap,
                    run_id=ctx.run_id,
                    campaign_id=campaign.id,
                )
            )
    return tasks


def build(session, ctx: RunContext, config: Config, actor: str, status: str = "open") -> tuple[Campaign, list[Task]]:
    """A campaign and its items (pairs or single answers, then gold items) from candidate answers;
    refuses prompts that are not de-identified. Inside the caller's transaction."""
    _check(config)
    rng = random.Random(config.seed)
    if session.scalar(select(Campaign.id).where(Campaign.name == config.name)):
        raise ClinalignError(f"a campaign named {config.name!r} already exists")
    source = ctx.input(session, "candidates", config.candidates)
    candidates = list(
        session.scalars(select(Candidate).where(Candidate.run_id == source.run_id).order_by(Candidate.id))
    )
    prompt_ids = {c.prompt_id for c in candidates}
    not_clean = not_deidentified(session, prompt_ids)
    if not_clean:
        raise ClinalignError(f"{not_clean} prompts come from records that are not de-identified; run deidentify")
    prompts = {p.id: p for p in session.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
    campaign = Campaign(
        name=config.name,
        mode=config.mode,
        guidelines=config.guidelines,
        axes=config.axes,
        overlap=config.overlap,
        routing=config.routing,
        disagreement=config.disagreement,
        status=status,
        created_by=actor,
        run_id=ctx.run_id,
    )
    session.add(campaign)
    session.flush()
    if config.mode == "pair":
        tasks = _pairs(session, ctx, candidates, config, rng, campaign)
    else:
        tasks = [
            Task(
                prompt_id=c.prompt_id,
                candidate_a_id=c.id,
                overlap=config.overlap,
                run_id=ctx.run_id,
                campaign_id=campaign.id,
            )
            for c in candidates
        ]
    session.add_all(tasks)
    ordered = sorted(prompts.values(), key=lambda p: p.id)
    tasks += _authored_tasks(session, ctx, campaign, ordered, config.authored, rng, calibration=False)
    gold = _authored_tasks(session, ctx, campaign, ordered, config.gold, rng, calibration=True)
    for task in [*tasks, *gold]:
        task.specialty = prompts[task.prompt_id].specialty
        task.open_slots = task.overlap
    session.flush()
    digest = sha256_text(canonical_json([[t.id, t.candidate_a_id, t.candidate_b_id, t.gold] for t in tasks + gold]))
    ctx.produce(
        session,
        "campaign",
        f"store://campaign/{campaign.id}",
        digest,
        {"campaign": campaign.id, "name": campaign.name, "items": len(tasks) + len(gold), "gold": len(gold)},
    )
    record_event(session, actor, "campaign.create", f"campaign:{campaign.id}", {"items": len(tasks) + len(gold)})
    return campaign, tasks + gold


def reach(session, campaign: Campaign) -> list[dict]:
    """Specialties whose items fewer active clinicians can see than the overlap asks for: with routing,
    such items wait forever for a judgement nobody can give. Empty when every item can be filled."""
    if not campaign.routing:
        return []
    clinicians = list(
        session.scalars(select(User).where(User.role == "clinician", User.active.is_(True), User.simulated.is_(False)))
    )
    counts = session.execute(
        select(Task.specialty, func.count()).where(Task.campaign_id == campaign.id).group_by(Task.specialty)
    ).all()
    short = []
    for specialty, items in sorted(counts, key=lambda row: str(row[0])):
        able = (
            len(clinicians) if specialty == "general" else sum(specialty in (c.specialties or []) for c in clinicians)
        )
        if able < campaign.overlap:
            short.append({"specialty": specialty, "items": items, "clinicians": able, "overlap": campaign.overlap})
    return short


def create_campaign(ctx: RunContext, config: Config, actor: str) -> dict:
    """The ``annotate campaign`` stage: a campaign for clinicians, with a warning for every specialty
    whose items cannot reach ``overlap`` clinicians under routing."""
    with ctx.store.session() as session:
        campaign, tasks = build(session, ctx, config, actor)
        short = reach(session, campaign)
        figures = {"campaign": campaign.id, "items": len(tasks), "gold": sum(t.gold is not None for t in tasks)}
    if short:
        log.warning("campaign %s: items fewer clinicians can reach than its overlap: %s", campaign.name, short)
        figures["unreachable"] = {s.pop("specialty"): s for s in short}
    ctx.metrics.update(figures)
    return figures
