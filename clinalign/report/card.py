"""The model card's record of an evaluated policy, built from the store and its lineage (``record.py``
says what it holds; ``render.py`` renders it).

Reads: every ``eval_report`` whose models include the policy (the loop's and every suite's:
``figures.py``), the lineage of the policy and of its reward model (source files, the de-identified and
curated sets, candidates, judgements, the preference dataset, the reward model, each model step, with
their sha256), the panel's raters, the releases, the guardrail policy, and the card facts.
Writes: nothing; ``build`` declares every artifact it reads as read by the report's run.

The limitations, the usage guide and the evidence for each GMLP principle are concluded from the
record's own parts (``findings.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clinalign import guardrails
from clinalign.audit import MODEL_KINDS, ChainReport, RunContext, ancestor, code_version, lineage
from clinalign.guardrails import Action, Verdict
from clinalign.report.figures import evaluations, policy_of, results, testing_data
from clinalign.report.findings import limitations, principles, usage
from clinalign.report.record import (
    Annotation,
    Evaluation,
    Facts,
    Guardrails,
    Oversight,
    Record,
    Release,
    RewardModel,
    Step,
    Tier,
    TrainingStep,
    validated,
)
from clinalign.store import Artifact, Judgement, Prompt, Run, Task, User

# What each oversight tier does (``serve/oversight.py``); which guardrail actions lead to each is read
# from ``Verdict.tier``, so a change there shows here.
TIER_TEXT = {
    1: "sent at once: as written, as the output rails changed it, or the policy's refusal (block)",
    2: "held: the client gets a holding text and polls; a clinician approves, edits or rejects it first",
    3: "sent at once with emergency guidance first, and clinicians are notified of the escalation",
}


def _steps(session: Session, roots: list[int]) -> list[Step]:
    seen: dict[int, Step] = {}
    for root in roots:
        for step in lineage(session, root):
            seen.setdefault(
                step.artifact.id,
                Step(
                    artifact=step.artifact.id,
                    kind=step.artifact.kind,
                    sha256=step.artifact.sha256,
                    run=step.run.id if step.run else None,
                    stage=step.run.stage if step.run else "outside the store",
                    uri=step.artifact.uri,
                ),
            )
    return [seen[k] for k in sorted(seen)]


def _training(session: Session, chain: list[Artifact]) -> list[TrainingStep]:
    steps = []
    for model in chain:
        if not model.run_id:
            continue  # the base, from outside the store
        run = session.get(Run, model.run_id)
        settings = {k: v for k, v in run.config.items() if v is not None and not isinstance(v, list)}
        figures = {k: v for k, v in run.metrics.items() if isinstance(v, int | float | str)}
        steps.append(
            TrainingStep(
                artifact=model.id,
                stage=run.stage,
                run=run.id,
                seconds=round(run.seconds or 0.0, 1),
                config_hash=run.config_hash,
                settings=settings,
                figures=figures,
            )
        )
    return steps


def _chain(session: Session, policy: Artifact) -> list[Artifact]:
    """The policy and each model it was tuned from, oldest first."""
    chain = [policy]
    while (parent := ancestor(session, chain[-1], MODEL_KINDS)) is not None:
        chain.append(parent)
    return chain[::-1]


def _data(session: Session, steps: list[Step], prompt_set: Artifact | None) -> list[str]:
    lines = []
    for step in steps:
        if step.kind == "source_file":
            digest = step.sha256 or "not hashed"
            lines.append(f"source file {Path(step.uri).name} (artifact {step.artifact}, sha256 {digest})")
    records = next((s for s in steps if s.kind == "records"), None)
    if records is not None:
        figures = session.get(Run, records.run).metrics if records.run else {}
        removed = ", ".join(f"{k} {v}" for k, v in (figures.get("phi_removed") or {}).items()) or "none found"
        lines.append(
            f"de-identified: {figures.get('records', '?')} records, {figures.get('records_with_phi', '?')} with "
            f"PHI, identifiers replaced by type tags ({removed})"
        )
    if prompt_set is not None:
        meta = prompt_set.meta
        dropped = ", ".join(f"{k} {v}" for k, v in (meta.get("dropped") or {}).items()) or "none"
        lines.append(
            f"curated prompt set {prompt_set.sha256[:12]} (artifact {prompt_set.id}): {meta.get('train')} training "
            f"and {meta.get('test')} held-out prompts; dropped: {dropped}"
        )
        rows = session.execute(
            select(Prompt.split, Prompt.persona, Prompt.risk, func.count())
            .where(Prompt.dataset_version == prompt_set.sha256)
            .group_by(Prompt.split, Prompt.persona, Prompt.risk)
        ).all()
        for split in ("train", "test"):
            mine = [r for r in rows if r[0] == split]
            by_persona, by_risk = _tally(mine, 1), _tally(mine, 2)
            lines.append(f"{split} split by stakeholder: {by_persona}; by risk: {by_risk}")
        specialties = session.scalar(
            select(func.count(func.distinct(Prompt.specialty))).where(Prompt.dataset_version == prompt_set.sha256)
        )
        lines.append(f"{specialties} specialties")
    return lines or ["no development data in this model's lineage (an outside model)"]


def _tally(rows, column: int) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[column]] = counts.get(row[column], 0) + row[3]
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _annotation(session: Session, steps: list[Step]) -> Annotation | None:
    prefs = next((s for s in reversed(steps) if s.kind == "preference_dataset"), None)
    if prefs is None:
        return None
    meta = session.get(Artifact, prefs.artifact).meta
    agreement = meta.get("agreement") or {}
    judged = next((s for s in reversed(steps) if s.kind == "judgements"), None)
    judged_meta = session.get(Artifact, judged.artifact).meta if judged else {}
    raters = []
    if judged_meta.get("campaign") is not None:
        raters = session.execute(
            select(User.id, User.simulated)
            .join(Judgement, Judgement.user_id == User.id)
            .join(Task, Task.id == Judgement.task_id)
            .where(Task.campaign_id == judged_meta["campaign"])
            .distinct()
        ).all()
    simulated_raters = sum(1 for r in raters if r.simulated)
    return Annotation(
        campaign=str(meta.get("campaign", "")),
        raters=agreement.get("raters", len(raters)),
        real_clinicians=len(raters) - simulated_raters,
        simulated_raters=simulated_raters,
        simulated=bool(judged_meta.get("simulated")) or simulated_raters > 0,
        tasks=agreement.get("tasks", 0),
        judgements=agreement.get("judgements", meta.get("judgements", 0)),
        alpha_choice=agreement.get("alpha_choice"),
        fleiss_kappa=agreement.get("fleiss_kappa"),
        ac1_choice=agreement.get("ac1_choice"),
        pairwise_agreement=agreement.get("pairwise_agreement"),
        rater_vs_rest=agreement.get("rater_vs_rest"),
        train_pairs=meta.get("train_pairs", 0),
        test_pairs=meta.get("test_pairs", 0),
    )


def _reward_model(artifact: Artifact | None) -> RewardModel | None:
    if artifact is None:
        return None
    meta = artifact.meta
    calibration = meta.get("calibration") or {}
    return RewardModel(
        artifact=artifact.id,
        test_accuracy=meta.get("test_accuracy"),
        test_pairs=meta.get("test_pairs", 0),
        ece=calibration.get("ece"),
        brier=calibration.get("brier"),
        temperature=meta.get("temperature"),
        members=meta.get("members"),
        axis_accuracy={k: v["accuracy"] for k, v in (meta.get("axis_accuracy") or {}).items()},
    )


def _guardrails(policy: guardrails.Policy) -> tuple[Guardrails, Oversight]:
    rails = Guardrails(
        policy=policy.id,
        sha256=policy.digest,
        red_flag_categories=len(policy.red_flags),
        harmful_request_patterns=len(policy.harmful_requests),
        audiences=list(policy.scope),
        routing=policy.routing.model_dump(),
    )
    tiers: dict[int, list[str]] = {}
    for action in Action:
        tiers.setdefault(Verdict(action=action).tier, []).append(str(action))
    review = [f"an answer the rules mark for review ({', '.join(tiers.get(2, []))})"]
    review += [f"a red flag of disposition {d}" for d in policy.routing.review_dispositions]
    review += [f"a prompt of risk level {r}" for r in policy.routing.review_risks]
    review.append(f"a reward-model ensemble spread above {policy.routing.reward_spread:g} (when served with one)")
    oversight = Oversight(
        tiers=[Tier(tier=t, actions=actions, what_happens=TIER_TEXT[t]) for t, actions in sorted(tiers.items())],
        review_when=review,
    )
    return rails, oversight


def _release(ctx: RunContext, session: Session, policy: Artifact, evaluated: datetime) -> Release:
    """Where the policy stands in the registry (its releases are declared read)."""
    found = list(session.scalars(select(Artifact).where(Artifact.kind == "release").order_by(Artifact.id)))
    mine = [r for r in found if r.meta.get("model") == policy.id]
    for release in mine:
        ctx.use(release.id)
    history = [f"v{r.meta['version']} {r.meta['action']} on {r.created_at:%Y-%m-%d}" for r in mine]
    if not mine:
        return Release(
            stage="Research; evaluated, not released (clinalign promote)",
            version=f"unreleased (policy artifact {policy.id})",
            date=f"not released; evaluated on {evaluated:%Y-%m-%d}",
            history=[],
        )
    newest = mine[-1]
    served = found[-1].id == newest.id
    stage = "Research; the current release" if served else f"Research; replaced by v{found[-1].meta['version']}"
    return Release(
        stage=f"{stage} (clinalign releases)",
        version=f"v{newest.meta['version']}",
        date=f"{newest.created_at:%Y-%m-%d}",
        history=history,
    )


def _architecture(folder: str) -> dict:
    """What the model folder says of itself (config.json), and its parameter count from the safetensors
    headers (read without loading a weight)."""
    path = Path(folder)
    found: dict = {}
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return found
    keys = ("model_type", "architectures", "num_hidden_layers", "hidden_size", "vocab_size", "torch_dtype", "dtype")
    found.update(
        {k: ", ".join(map(str, config[k])) if isinstance(config[k], list) else config[k] for k in keys if k in config}
    )
    found["max_position_embeddings"] = config.get("max_position_embeddings")
    total = 0
    for weights in path.glob("*.safetensors"):
        with weights.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    if total:
        found["parameters"] = total
    return {k: v for k, v in found.items() if v is not None}


def _software() -> dict[str, str]:
    found = {}
    for name in ("clinalign", "torch", "transformers", "trl", "peft"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _licence(value: str | None) -> str | None:
    return value.strip().lower() if value else None


# --- the record --------------------------------------------------------------------------------------


def build(
    ctx: RunContext, session: Session, evaluation: Artifact, facts: Facts, policy: guardrails.Policy, audit: ChainReport
) -> Record:
    """The record of the policy ``evaluation`` is about; every artifact it reads is declared read."""
    policy_art = session.get(Artifact, policy_of(evaluation))
    found = evaluations(session, policy_art.id)
    for artifact in (policy_art, *found):
        ctx.use(artifact.id)
    reward_id = evaluation.meta.get("reward_model")
    reward_art = session.get(Artifact, reward_id) if reward_id else None
    steps = _steps(session, [policy_art.id] + ([reward_art.id] if reward_art else []))
    chain = _chain(session, policy_art)
    base = chain[0]
    base_name = base.meta.get("title") or "/".join(Path(base.uri).parts[-2:])
    licence = _licence(base.meta.get("licence") or base.meta.get("license"))
    prompt_set = ancestor(session, policy_art, ("prompt_set",))
    algorithm = " then ".join(m.meta.get("algo", "?").upper() for m in chain[1:]) or "none (an outside model)"
    rails, oversight = _guardrails(policy)
    annotation = _annotation(session, steps)
    parts = {
        "annotation": annotation,
        "reward_model": _reward_model(reward_art),
        "results": [r for artifact in found for r in results(artifact, policy_art.id)],
        "evaluations": [
            Evaluation(
                artifact=a.id,
                suite=a.meta.get("suite", "loop"),
                complete=a.meta.get("complete", True) is not False,
                date=f"{a.created_at:%Y-%m-%d}",
                testing_data=testing_data(a.meta),
                models=[{k: m[k] for k in ("key", "label", "artifact")} for m in a.meta.get("models", [])],
            )
            for a in found
        ],
        "lineage": steps,
        "training": _training(session, chain),
        "data": _data(session, steps, prompt_set),
        "guardrails": rails,
        "oversight": oversight,
        "release": _release(ctx, session, policy_art, evaluation.created_at),
        "license_fallback": licence is None,
        "audit_ok": audit.ok,
        "audit": f"chain intact, {audit.events} events verified"
        if audit.ok
        else f"chain FAILED verification: {audit.reason}",
        "algorithm": algorithm,
        "base_model": base_name,
        "stakeholders": {
            # plain mappings: the record's validation names an empty one (a model would refuse it here)
            name: {
                "intended_use": given.intended_use or [],
                "out_of_scope": given.out_of_scope or [],
                "guardrails": {k: str(v) for k, v in policy.scope[name].model_dump().items()}
                if name in policy.scope
                else {},
            }
            for name, given in facts.stakeholders.items()
            if given is not None
        },
    }
    parts["limitations"] = limitations(facts, parts)
    parts["usage"] = usage(policy_art, parts["release"], evaluation.id)
    slug = "-".join(base_name.replace("/", "-").split())
    name = facts.name or f"clinalign-{slug}-{chain[-1].meta.get('algo', 'model')}-{policy_art.id}"
    simulated = bool(annotation and annotation.simulated)
    summary = (
        f"{base_name} tuned by {algorithm} with clinalign on clinicians' preferences"
        + (" (a SIMULATED panel, not clinicians)" if simulated else "")
        + f", evaluated on held-out prompts for safety and accuracy. Research use only, not for clinical "
        f"advice; not a medical device. Served only behind clinalign's guardrails ({rails.policy}) and "
        "tiered clinician review."
    )
    record = {
        **{k: v for k, v in parts.items() if k not in ("license_fallback", "audit_ok")},
        "name": name,
        "version": parts["release"].version,
        "policy_artifact": policy_art.id,
        "policy_sha256": policy_art.sha256 or "",
        "policy_uri": policy_art.uri,
        "base_model_id": facts.base_models.get(base_name),
        "license": licence or facts.license,
        "developer": facts.developer,
        "contact": facts.contact,
        "funding": facts.funding,
        "summary": summary,
        "keywords": facts.keywords,
        "language": facts.language,
        "simulated_panel": simulated,
        "targeted_population": facts.targeted_population,
        "clinical_risk_level": facts.clinical_risk_level,
        "global_availability": facts.global_availability,
        "regulatory_approval": facts.regulatory_approval,
        "security": facts.security,
        "maintenance": facts.maintenance,
        "patient_consent": facts.patient_consent,
        "publications": facts.publications,
        "architecture": _architecture(policy_art.uri),
        "software": _software(),
        "compute": {f"{s.stage} (run {s.run})": s.seconds for s in parts["training"]},
        "code_version": code_version(),
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record["gmlp"] = principles(facts, {**parts, **record})
    return validated(record)
