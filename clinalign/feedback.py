"""Feedback: clinicians' flags on served answers become cases for the next round of the loop.

Reads: ``Flag`` rows not yet fed back, with their ``Interaction``s (de-identified when served).
Writes: a cases file in ``ingest``'s JSONL format (artifact ``feedback_cases``): per flagged answer,
the question, the clinician's correction as the reference answer, and the served answer as a
known-unsafe variant of the kind the error tags name; each flag is marked with this run, so it is fed
back once. ``clinalign ingest FILE`` then takes the cases through de-identification (a second pass),
curation, generation and annotation like any other, where the served answer and the correction make
a calibration pair whose expected choice is known.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import Field
from sqlalchemy import select

from clinalign.audit import RunContext, record_event
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import Flag, Interaction

# The error tags clinicians attach, as the kinds of unsafe variant a case file names.
VARIANT_KIND = {
    "misses_red_flag_escalation": "missing_red_flag",
    "personalised_prescribing": "personalised_dose",
    "factually_incorrect": "hallucination",
    "hallucinated_reference": "hallucination",
    "dismissive_tone": "dismissive",
}
PERSONA = {
    "patient": "patient",
    "caregiver": "patient",
    "clinician": "clinician",
    "educator": "educator",
    "payer": "payer",
}


class Config(StageConfig):
    out: Path | None = None
    """Where to write the cases (default: the run's folder, ``feedback.jsonl``)."""

    corrected_only: bool = False
    """Leave out flags without a correction (``curate`` drops cases without a reference by default)."""

    client_flags: bool = False
    """Take flags that API clients sent too. Off by default: a correction becomes a training reference,
    and only a clinician's should, unless the site vouches for its clients'."""

    max_flags: int = Field(default=10_000, ge=1)
    """At most this many flags per run, oldest first; the rest wait for the next run."""


def _case(interaction: Interaction, flags: list[Flag]) -> dict:
    tags = sorted({t for f in flags for t in f.error_tags})
    kind = next((VARIANT_KIND[t] for t in tags if t in VARIANT_KIND), "other")
    question = "\n".join(m["content"] for m in interaction.messages if m["role"] == "user")
    correction = next((f.correction for f in flags if f.correction), None)
    risk = interaction.disposition if interaction.disposition in ("emergency", "urgent") else "unknown"
    served = (interaction.sent or interaction.checked or interaction.answer or "").strip()
    case = {
        "id": f"served-{interaction.id}",
        "prompt": question,
        "persona": PERSONA.get(interaction.audience, "unknown"),
        "risk": risk,
        "variants": [{"kind": kind, "text": served}] if served else [],
    }
    if correction:
        case["reference"] = correction
    return case


def run(ctx: RunContext, config: Config) -> dict:
    out = config.out or ctx.out_dir / "feedback.jsonl"
    with ctx.store.session() as session:
        query = select(Flag).where(Flag.feedback_run_id.is_(None))
        if not config.client_flags:
            query = query.where(Flag.user_id.is_not(None))
        query = query.order_by(Flag.id).limit(config.max_flags)
        flags = list(session.scalars(query))
        by_interaction: dict[int, list[Flag]] = {}
        for found in flags:
            by_interaction.setdefault(found.interaction_id, []).append(found)
        cases, used = [], []
        for interaction_id, group in by_interaction.items():
            interaction = session.get(Interaction, interaction_id)
            corrected = any(f.correction for f in group)
            if (
                config.corrected_only or not (interaction.sent or interaction.checked or interaction.answer)
            ) and not corrected:
                continue  # nothing to learn from: no correction, and no answer to mark as unsafe
            cases.append(_case(interaction, group))
            used += group
        if not cases:
            raise ClinalignError("no flags to feed back (flag served answers in the web app or with POST /v1/flags)")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".part", delete=False, encoding="utf-8") as part:
            part.writelines(json.dumps(case) + "\n" for case in cases)
        os.replace(part.name, out)  # the file appears whole, or not at all
        artifact = ctx.produce_path(session, "feedback_cases", out, {"cases": len(cases), "flags": len(used)})
        for found in used:
            found.feedback_run_id = ctx.run_id
        record_event(session, "feedback", "feedback.export", f"artifact:{artifact.id}", {"flags": len(used)})
    corrected = sum(1 for c in cases if "reference" in c)
    return {"cases": len(cases), "flags": len(used), "corrected": corrected, "path": str(out)}
