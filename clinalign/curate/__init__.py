"""Curate de-identified records into a versioned prompt set: dedupe, filter, stratified split.

Reads: ``Record`` (through the PHI gate ``store.deidentified_records``).
Writes: ``Prompt`` rows under a content-hash ``dataset_version`` with their curation tags (specialty
and risk where a case had none, proposed ICD-10 codes: ``tags.py``); artifact ``prompt_set``.

Duplicates are found exactly, after normalisation (Unicode NFKC, case, whitespace, punctuation), and
as near-duplicates: MinHash signatures of character 5-gram shingles (robust on short texts) in a
locality-sensitive hash index (``datasketch``; Broder 1997, Leskovec et al. "Mining of Massive
Datasets" ch. 3), so the cost grows with the corpus, not with its square; a candidate counts when its
estimated Jaccard similarity passes the threshold. The first occurrence is kept.
"""

from __future__ import annotations

import logging
import random
import re
import unicodedata
from collections import defaultdict

from pydantic import Field
from sqlalchemy import select

from clinalign.audit import RunContext, canonical_json, record_event, sha256_text
from clinalign.curate import tags
from clinalign.settings import StageConfig
from clinalign.store import Prompt, Record, deidentified_records

log = logging.getLogger(__name__)


class Config(StageConfig):
    min_chars: int = 15
    """Prompts shorter than this are dropped as too thin to judge."""

    max_chars: int = 4000
    """Prompts longer than this are dropped (they would be truncated by small models)."""

    min_alpha_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of letters among non-space characters; below it a prompt is mostly codes or noise."""

    require_reference: bool = True
    """Keep only cases with a reference answer: the rubric, SFT and evaluation need one."""

    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Share of each risk level held out for evaluation (stratified so emergencies appear in both)."""

    seed: int = 13
    """Seed of the split shuffle."""

    near_duplicate_threshold: float | None = Field(default=0.8, gt=0.0, le=1.0)
    """Jaccard similarity of character 5-gram shingles above which a prompt is a near-duplicate of an earlier one
    (re-sent messages with a word changed); ``null`` turns the search off."""

    minhash_permutations: int = 128
    """MinHash signature length: more is a finer Jaccard estimate, slower."""

    embedding_model: str | None = "minilm"
    """Sentence encoder that labels an unlabelled case from its nearest labelled ones: ``minilm`` (the
    bundled all-MiniLM-L6-v2), a local model folder, or ``null`` for keyword rules alone."""


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s\[\]]", " ", text)  # keep [NAME]-style tags distinct from words
    return re.sub(r"\s+", " ", text).strip()


def _quality_problem(record: Record, config: Config) -> str | None:
    text = record.prompt.strip()
    if len(text) < config.min_chars:
        return "too_short"
    if len(text) > config.max_chars:
        return "too_long"
    visible = [c for c in text if not c.isspace()]
    if sum(c.isalpha() for c in visible) / len(visible) < config.min_alpha_ratio:
        return "low_alpha"
    if config.require_reference and not (record.reference or "").strip():
        return "no_reference"
    return None


def _minhash(text: str, permutations: int):
    from datasketch import MinHash

    shingles = {text[i : i + 5] for i in range(max(1, len(text) - 4))}
    signature = MinHash(num_perm=permutations, seed=1)
    signature.update_batch([s.encode("utf-8") for s in shingles])
    return signature


def select_records(records: list[Record], config: Config) -> tuple[list[Record], dict[str, int]]:
    """Drop duplicates (exact, normalised, near) and low-quality records; count each reason."""
    dropped: dict[str, int] = defaultdict(int)
    exact: set[str] = set()
    normal: set[str] = set()
    index = None
    signatures: dict = {}
    if config.near_duplicate_threshold is not None:
        from datasketch import MinHashLSH

        index = MinHashLSH(threshold=config.near_duplicate_threshold, num_perm=config.minhash_permutations)
    kept = []
    for record in records:
        if record.prompt in exact:
            dropped["exact_duplicate"] += 1
            continue
        exact.add(record.prompt)
        key = normalise(record.prompt)
        if key in normal:
            dropped["normalised_duplicate"] += 1
            continue
        normal.add(key)
        if index is not None:
            signature = _minhash(key, config.minhash_permutations)
            if any(
                signature.jaccard(other) >= config.near_duplicate_threshold
                for other in (signatures[c] for c in index.query(signature))
            ):
                dropped["near_duplicate"] += 1
                continue
            signatures[record.id] = signature
            index.insert(record.id, signature)
        problem = _quality_problem(record, config)
        if problem:
            dropped[problem] += 1
            continue
        kept.append(record)
    return kept, dict(dropped)


def stratified_split(risks: dict[int, str], test_fraction: float, seed: int) -> dict[int, str]:
    """Assign train/test within each risk level (``risks``: record id -> level); every level with two
    or more records gets a test item."""
    by_risk: dict[str, list[int]] = defaultdict(list)
    for record_id, level in risks.items():
        by_risk[level].append(record_id)
    rng = random.Random(seed)
    split = {}
    for level in sorted(by_risk):
        group = sorted(by_risk[level])
        rng.shuffle(group)
        n_test = max(1, round(len(group) * test_fraction)) if len(group) >= 2 else 0
        for i, record_id in enumerate(group):
            split[record_id] = "test" if i < n_test else "train"
    return split


def label(record: Record) -> tuple[str, str, dict]:
    """Specialty and risk (the case's own, or the rules' where the case had none) and curation tags."""
    specialty, risk = record.specialty, record.risk
    found = {"specialty_source": "case", "risk_source": "case", "icd10": tags.icd10(record.prompt)}
    # Only a missing label is guessed: "general" from the data is a person's label like any other.
    if specialty in ("unknown", ""):
        specialty = tags.specialty(record.prompt) or "general"  # no rule fires: routed to every clinician
        found["specialty_source"] = "rules"
    if risk == "unknown":
        risk = tags.risk(record.prompt)
        found["risk_source"] = "rules"
    return specialty, risk, found


_SEVERITY = {"routine": 0, "urgent": 1, "emergency": 2}


def label_from_neighbours(kept: list[Record], labels: dict[int, tuple[str, str, dict]], model: str) -> None:
    """Relabel rule-labelled cases from their nearest case-labelled neighbours (k-NN on embeddings).

    Specialty: the neighbours' label. Risk: the more severe of the rules' and the neighbours', so that
    adding embeddings can only raise a triage level, never lower one.
    """
    from clinalign import embed

    path = embed.default_path() if model == "minilm" else model
    for field, index in (("specialty", 0), ("risk", 1)):
        known = [r for r in kept if labels[r.id][2][f"{field}_source"] == "case" and labels[r.id][index] != "unknown"]
        unknown = [r for r in kept if labels[r.id][2][f"{field}_source"] == "rules"]
        if not known or not unknown:
            continue
        guesses = embed.nearest_labels(
            [r.prompt for r in unknown], [r.prompt for r in known], [labels[r.id][index] for r in known], path
        )
        for record, guess in zip(unknown, guesses, strict=True):
            current = list(labels[record.id])
            if field == "risk":
                guess = max(guess, current[1], key=_SEVERITY.get)
            current[index] = guess
            current[2] = {**current[2], f"{field}_source": "rules+embedding"}
            labels[record.id] = tuple(current)


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        sources = ctx.every(session, "records")
        records = deidentified_records(session, run_ids=[s.run_id for s in sources])
        kept, dropped = select_records(records, config)
        labels = {r.id: label(r) for r in kept}
        if config.embedding_model:
            label_from_neighbours(kept, labels, config.embedding_model)
        split = stratified_split({r.id: labels[r.id][1] for r in kept}, config.test_fraction, config.seed)
        rows = [[r.id, split[r.id], r.prompt, r.reference, r.variants, labels[r.id]] for r in kept]
        version = sha256_text(canonical_json(rows))
        already = session.scalar(select(Prompt.id).where(Prompt.dataset_version == version).limit(1))
        if already is None:
            session.add_all(
                Prompt(
                    record_id=r.id,
                    dataset_version=version,
                    split=split[r.id],
                    persona=r.persona,
                    specialty=labels[r.id][0],
                    risk=labels[r.id][1],
                    text=r.prompt,
                    reference=r.reference,
                    variants=r.variants,
                    tags=labels[r.id][2],
                    run_id=ctx.run_id,
                )
                for r in kept
            )
        counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "test")}
        ctx.produce(
            session,
            "prompt_set",
            f"store://prompt?version={version}",
            version,
            {"dataset_version": version, **counts, "dropped": dropped},
        )
        record_event(session, "system", "curate", f"dataset:{version[:12]}", {"kept": len(kept), "dropped": dropped})
    log.info("curated %d prompts (%s), dropped %s, version %s", len(kept), counts, dropped, version[:12])
    tagged = {
        "specialty_by_rules": sum(v[2]["specialty_source"] != "case" for v in labels.values()),
        "risk_by_rules": sum(v[2]["risk_source"] != "case" for v in labels.values()),
        "with_icd10": sum(bool(v[2]["icd10"]) for v in labels.values()),
    }
    ctx.metrics.update(kept=len(kept), dropped=dropped, dataset_version=version, **counts, tagged=tagged)
    return ctx.metrics
