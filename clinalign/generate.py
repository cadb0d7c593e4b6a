"""Generate candidate answers for every prompt of a prompt set with a causal LM.

Reads: ``Prompt`` rows of one dataset version (artifact ``prompt_set``); a model (artifact or folder).
Writes: ``Candidate`` rows; artifact ``candidates``.

Every prompt sent to the model and every answer stored (bound for raters and training) passes the
residual PHI scan (``phi.scrub``); what it finds is tagged and counted in the run's figures.
"""

from __future__ import annotations

import logging
import random
from typing import Literal

from pydantic import Field

from clinalign import lm, phi, progress
from clinalign.audit import RunContext, canonical_json, record_event, sha256_text
from clinalign.settings import StageConfig
from clinalign.store import Candidate, prompts

log = logging.getLogger(__name__)


class Config(StageConfig):
    model: str | None = None
    """Artifact id, model folder or cached hub id; default: the loop's newest trained policy."""

    prompt_set: int | None = None
    """Artifact id of the prompt set; default: the loop's newest."""

    splits: list[Literal["train", "test"]] = ["train", "test"]
    """Which splits get candidates (the test split's judgements measure the reward model)."""

    prompts_per_split: int | None = Field(default=None, ge=1)
    """At most this many prompts of each split get candidates (a seeded sample); null: all of them."""

    n_candidates: int = Field(default=2, ge=1)
    """Sampled answers per prompt; pairs of them become annotation tasks."""

    max_new_tokens: int = 72
    temperature: float = 1.0
    """Sampling temperature; 1.0 keeps the policy's own mix of good and bad answers visible to raters."""

    top_p: float = 0.95
    batch_size: int = 16
    seed: int = 7


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        prompt_set = ctx.input(session, "prompt_set", config.prompt_set)
        model_art, model_path = ctx.model(session, config.model)
        items = []
        for split in config.splits:
            found = prompts(session, prompt_set.sha256, split)
            if config.prompts_per_split is not None and len(found) > config.prompts_per_split:
                found = sorted(random.Random(config.seed).sample(found, config.prompts_per_split), key=lambda p: p.id)
            items += found
    loaded = lm.load(model_path)
    rows: list[Candidate] = []
    residual = {"prompts": 0, "answers": 0}  # the residual PHI scan, on what goes into and out of the model
    with progress.task("generate", len(items)) as advance:
        for start in range(0, len(items), config.batch_size):
            batch = items[start : start + config.batch_size]
            texts_in = []
            for p in batch:
                text, hits = phi.scrub(p.text)
                texts_in.append(text)
                residual["prompts"] += hits
            answers = lm.sample(
                loaded,
                texts_in,
                config.n_candidates,
                config.max_new_tokens,
                config.temperature,
                config.top_p,
                config.seed + start,
            )
            for prompt, texts in zip(batch, answers, strict=True):
                for answer in texts:
                    text, hits = phi.scrub(answer)
                    residual["answers"] += hits
                    rows.append(
                        Candidate(prompt_id=prompt.id, model_artifact_id=model_art.id, text=text, run_id=ctx.run_id)
                    )
            advance(len(batch))
    with ctx.store.session() as session:
        session.add_all(rows)
        session.flush()
        digest = sha256_text(canonical_json([[c.prompt_id, c.text] for c in rows]))
        ctx.produce(
            session,
            "candidates",
            f"store://candidate?run={ctx.run_id}",
            digest,
            {"count": len(rows), "prompts": len(items), "model_artifact": model_art.id},
        )
        record_event(session, "system", "generate", f"run:{ctx.run_id}", {"candidates": len(rows)})
    empty = sum(1 for c in rows if not c.text)
    log.info("generated %d candidates for %d prompts (%d empty)", len(rows), len(items), empty)
    ctx.metrics.update(candidates=len(rows), prompts=len(items), empty=empty, residual_phi=residual)
    return ctx.metrics
