"""De-identify: remove the 18 Safe Harbor identifiers, as typed tags or consistent surrogates.

Reads: ``RawRecord`` (the only stage that does), or a JSONL file of ``{"text": ...}`` lines (file mode).
Writes: ``Record`` rows with ``deid_status="deidentified"`` and PHI counts per type (never the PHI);
artifact ``records``. File mode writes the same lines with ``text`` replaced and ``phi_spans`` added.

Detection is ``clinalign.phi`` (rules and gazetteers, plus an optional NER model by path);
replacement runs through Presidio's ``AnonymizerEngine`` with one operator per type.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from clinalign import phi, progress
from clinalign.audit import RunContext, canonical_json, record_event, sha256_path, sha256_text
from clinalign.deidentify import ner
from clinalign.deidentify.surrogates import Surrogates, tag
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import DEIDENTIFIED, QUARANTINED, RawRecord, Record, loop_artifacts

log = logging.getLogger(__name__)


class Config(StageConfig):
    strategy: Literal["redact", "surrogate"] = "redact"
    """``redact``: typed tags (``[NAME]``); ``surrogate``: realistic values, the same within a patient,
    dates shifted by one secret offset per patient. Ages over 89 become "90+" and ZIP codes keep three
    digits in both."""

    ner_backend: Literal["spacy", "transformers"] | None = None
    """Optional NER model type; its spans are added to the rule-based ones."""

    ner_model: str | None = None
    """Local folder of that model (a spaCy pipeline or a Hugging Face token-classification model)."""

    max_chars: int = 100_000
    """Longest text accepted (characters). A longer one is an error, not a silent truncation."""


@cache
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def detect(text: str, config: Config) -> list[phi.Span]:
    spans = phi.find(text)
    if config.ner_model:
        spans = phi.merge(spans, ner.find(text, config.ner_backend or "spacy", config.ner_model))
    return spans


def replace(text: str, spans: list[phi.Span], surrogates: Surrogates | None) -> str:
    """Apply one Presidio operator per span: a tag, or this patient's surrogate."""
    if not spans:
        return text
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    results = [RecognizerResult(s.type, s.start, s.end, 1.0) for s in spans]
    operators = {}
    for kind in {s.type for s in spans}:
        if surrogates is None:
            operators[kind] = OperatorConfig("custom", {"lambda": lambda value, k=kind: tag(k, value)})
        else:
            operators[kind] = OperatorConfig("custom", {"lambda": lambda value, k=kind: surrogates(k, value)})
    return _anonymizer().anonymize(text=text, analyzer_results=results, operators=operators).text


def _secret() -> str:
    # Surrogate keys: a site sets CLINALIGN_SECRET_KEY to keep surrogates stable across runs;
    # without it each run draws its own, still consistent within the run.
    return os.environ.get("CLINALIGN_SECRET_KEY") or secrets.token_hex(32)


def deidentify_text(text: str, config: Config, surrogates: Surrogates | None) -> tuple[str, list[phi.Span]]:
    if len(text) > config.max_chars:
        raise ClinalignError(f"longer than {config.max_chars} characters")
    spans = detect(text, config)
    return replace(text, spans, surrogates), spans


def run(ctx: RunContext, config: Config) -> dict:
    totals: Counter = Counter()
    secret = _secret()
    with ctx.store.session() as session:
        sources = loop_artifacts(session, ctx.loop(session, "raw_records"), "raw_records")
        for source in sources:
            ctx.use(source.id)
        pending = session.scalars(
            select(RawRecord)
            .outerjoin(Record, Record.raw_id == RawRecord.id)
            .where(
                Record.id.is_(None),
                RawRecord.status == QUARANTINED,
                RawRecord.run_id.in_([s.run_id for s in sources]),
            )
            .order_by(RawRecord.id)
        ).all()
        records = []
        for raw in progress.track(pending, "deidentify"):
            case = raw.payload
            surrogates = Surrogates(raw.external_id, secret) if config.strategy == "surrogate" else None
            counts: Counter = Counter()

            def clean(text: str, field: str, raw=raw, counts=counts, surrogates=surrogates) -> str:
                try:
                    new, spans = deidentify_text(text, config, surrogates)
                except ClinalignError as err:
                    raise ClinalignError(f"{raw.source}:{raw.source_line}: field '{field}': {err}") from None
                counts.update(s.type for s in spans)
                return new

            prompt = clean(case["prompt"], "prompt")
            reference = clean(case["reference"], "reference") if case.get("reference") else None
            variants = [
                {"kind": v["kind"], "text": clean(v["text"], f"variants.{i}.text")}
                for i, v in enumerate(case.get("variants", []))
            ]
            totals += counts
            records.append(
                Record(
                    raw_id=raw.id,
                    external_id=raw.external_id,
                    deid_status=DEIDENTIFIED,
                    persona=case["persona"],
                    specialty=case["specialty"],
                    risk=case["risk"],
                    prompt=prompt,
                    reference=reference,
                    variants=variants,
                    phi_counts=dict(counts),
                    run_id=ctx.run_id,
                )
            )
        session.add_all(records)
        session.flush()
        digest = sha256_text(canonical_json([[r.id, r.prompt, r.reference, r.variants] for r in records]))
        ctx.produce(session, "records", f"store://record?run={ctx.run_id}", digest, {"count": len(records)})
        record_event(
            session,
            "system",
            "deidentify",
            f"run:{ctx.run_id}",
            {"records": len(records), "phi_removed": dict(totals), "strategy": config.strategy},
        )
    log.info("de-identified %d records; removed %s", len(records), dict(totals))
    ctx.metrics.update(
        records=len(records), phi_removed=dict(totals), records_with_phi=sum(1 for r in records if r.phi_counts)
    )
    return ctx.metrics


def run_file(ctx: RunContext, config: Config, source: Path, target: Path) -> dict:
    """File mode: every line's ``text`` de-identified, other fields kept, ``phi_spans`` added.

    All or nothing: the output is written to a temporary file and renamed only when every line passed.
    ``patient_id``, when present, keys the surrogates so one patient's notes stay consistent.
    """
    if not source.is_file():
        raise ClinalignError(f"input file not found: {source}")
    secret = _secret()
    totals: Counter = Counter()
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_bytes().splitlines()
    try:
        with partial.open("w", encoding="utf-8") as out:
            for number, raw_line in enumerate(progress.track(lines, "deidentify file"), start=1):
                where = f"{source}:{number}"
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ClinalignError(f"{where}: not valid UTF-8 (byte {err.start} of the line)") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ClinalignError(f"{where}: malformed JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ClinalignError(f"{where}: field 'text': a JSON object with a string 'text' is required")
                if not row["text"].strip():
                    raise ClinalignError(f"{where}: field 'text': empty")
                patient = str(row.get("patient_id", f"line-{number}"))
                surrogates = Surrogates(patient, secret) if config.strategy == "surrogate" else None
                try:
                    row["text"], spans = deidentify_text(row["text"], config, surrogates)
                except ClinalignError as err:
                    raise ClinalignError(f"{where}: field 'text': {err}") from None
                row["phi_spans"] = [{"start": s.start, "end": s.end, "type": s.type} for s in spans]
                totals.update(s.type for s in spans)
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    with ctx.store.session() as session:
        ctx.use_external(session, "source_file", str(source.resolve()), sha256_path(source), {"mode": "file"})
        ctx.produce_path(session, "deidentified_file", target, {"phi_removed": dict(totals)})
        record_event(session, "system", "deidentify.file", f"run:{ctx.run_id}", {"phi_removed": dict(totals)})
    ctx.metrics.update(lines=len(lines), phi_removed=dict(totals), path=str(target))
    return ctx.metrics
