"""De-identify: remove the 18 Safe Harbor identifiers, as typed tags or consistent surrogates.

Reads: ``RawRecord`` (the only stage that does), or a JSONL file of ``{"text": ...}`` lines (file mode).
Writes: ``Record`` rows with ``deid_status="deidentified"``, a keyed pseudonym for the case's id and PHI
counts per type (never the PHI); artifact ``records``. ``reject`` empties a quarantined ``RawRecord`` that
a data expert removes. File mode writes the same lines with every field de-identified, pseudonymised,
replaced, kept or dropped by its name (``fields.py``), and ``phi_spans`` added.

Detection is ``clinalign.phi`` (rules and gazetteers, plus an optional NER model by path);
replacement runs through Presidio's ``AnonymizerEngine`` with one operator per type.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, field_validator
from sqlalchemy import select

from clinalign import phi, progress
from clinalign.audit import RunContext, canonical_json, record_event, sha256_path, sha256_text
from clinalign.deidentify import fields, ner
from clinalign.deidentify.surrogates import Surrogates, tag
from clinalign.schemas import CaseIn, ClinalignError
from clinalign.settings import StageConfig
from clinalign.store import DEIDENTIFIED, QUARANTINED, REJECTED, RawRecord, Record, Store

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

    keep: list[str] = []
    """File mode: fields written as they are, whatever they hold (names or ``*`` patterns, any case or
    style). List only fields you vouch hold no PHI (a note type, a length of stay); ``text`` is always
    de-identified. A field not kept is replaced or pseudonymised (by its name, below), de-identified
    (any other string), or else dropped: numbers, lists and objects are never scanned."""

    id_fields: list[str] = []
    """File mode: more fields holding identifiers that link records, replaced by keyed pseudonyms
    (``id-`` and 16 hex digits; the same value gives the same pseudonym under this store's key), beyond
    the built-in ``id``, ``*_id``, ``mrn``, ``*_mrn``, ``*_number``, ``*_no`` (``fields.ID_FIELDS``)."""

    identifier_fields: dict[str, str] = {}
    """File mode: more fields (name or pattern -> PHI type, e.g. ``guardian: NAME``) replaced whole by
    their type's tag, or a surrogate with ``strategy=surrogate``, beyond the built-in names, dates, phone
    numbers, emails, addresses, ZIP codes, SSNs, URLs and IPs (``fields.IDENTIFIER_FIELDS``)."""

    @field_validator("keep")
    @classmethod
    def _text_is_never_kept(cls, value: list[str]) -> list[str]:
        if "text" in value:
            raise ValueError("'text' is always de-identified: it cannot be kept")
        return value

    @field_validator("identifier_fields")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for name, kind in value.items():
            if kind not in phi.TYPES:
                raise ValueError(f"'{name}': not a PHI type (one of {', '.join(phi.TYPES)})")
        return value


@cache
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def detect(text: str, config: Config) -> list[phi.Span]:
    spans = phi.find(text)
    if config.ner_model:
        spans = phi.merge(spans, ner.find(text, config.ner_backend or "spacy", config.ner_model))
    return spans


def replace(text: str, spans: list[phi.Span], surrogates: Surrogates | None) -> tuple[str, list[phi.Span]]:
    """Apply one Presidio operator per span: a tag, or this patient's surrogate. Returns the new text
    and where the replacements stand in it (never where the PHI stood: that would tell its length)."""
    if not spans:
        return text, []
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    results = [RecognizerResult(s.type, s.start, s.end, 1.0) for s in spans]
    operators = {}
    for kind in {s.type for s in spans}:
        if surrogates is None:
            operators[kind] = OperatorConfig("custom", {"lambda": lambda value, k=kind: tag(k, value)})
        else:
            operators[kind] = OperatorConfig("custom", {"lambda": lambda value, k=kind: surrogates(k, value)})
    result = _anonymizer().anonymize(text=text, analyzer_results=results, operators=operators)
    placed = [phi.Span(item.start, item.end, item.entity_type, "replacement") for item in result.items]
    return result.text, sorted(placed, key=lambda s: s.start)


def _secret() -> str:
    # Surrogate keys: a site sets CLINALIGN_SECRET_KEY to keep surrogates stable across runs;
    # without it each run draws its own, still consistent within the run.
    return os.environ.get("CLINALIGN_SECRET_KEY") or secrets.token_hex(32)


def pseudonym(key: bytes, value: str, prefix: str = "case") -> str:
    """A stable stand-in for an identifier: under one store's key (``Store.secret("pseudonyms")``) the
    same value always gives the same pseudonym; without the key it can be neither reversed nor recomputed
    from a guessed value (HMAC-SHA256, 64 bits shown: collisions are negligible below billions of ids)."""
    return f"{prefix}-{hmac.new(key, value.encode('utf-8'), hashlib.sha256).hexdigest()[:16]}"


def deidentify_text(text: str, config: Config, surrogates: Surrogates | None) -> tuple[str, list[phi.Span]]:
    """The text with its PHI replaced, and where each replacement stands in it (with its PHI type)."""
    if len(text) > config.max_chars:
        raise ClinalignError(f"longer than {config.max_chars} characters")
    return replace(text, detect(text, config), surrogates)


def _where(raw: RawRecord) -> str:
    return f"raw record {raw.id} ({raw.source}:{raw.source_line})"


def _reject_hint(raw: RawRecord) -> str:
    return f"remove the case with `clinalign deidentify reject {raw.id} --reason TEXT` (and ingest it corrected)"


def _checked(raw: RawRecord, config: Config) -> CaseIn | str:
    """The quarantined case, checked again by today's rules (a store ingested under older ones may hold a
    free-text specialty or an oversize variant, which must not pass unscanned) and against ``max_chars``;
    or what is wrong with it, naming the raw record, its file and line, and the field."""
    try:
        case = CaseIn.model_validate(raw.payload)
    except ValidationError as err:
        first = err.errors(include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(record)"
        return f"{_where(raw)}: field '{field}': {first['msg']}; {_reject_hint(raw)}"
    texts = {"prompt": case.prompt, "reference": case.reference or ""}
    texts.update({f"variants.{i}.text": v.text for i, v in enumerate(case.variants)})
    for field, text in texts.items():
        if len(text) > config.max_chars:
            return (
                f"{_where(raw)}: field '{field}': longer than {config.max_chars} characters; raise the limit "
                f"(--set max_chars=N) or {_reject_hint(raw)}"
            )
    return case


def _refuse(problems: list[tuple[RawRecord, str]]) -> ClinalignError:
    """One line: the first problem in full, and which other raw records fail, so all can be dealt with at once."""
    message = problems[0][1]
    if len(problems) > 1:
        others = [str(raw.id) for raw, _ in problems[1:]]
        shown = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
        message += f"; raw records {shown} cannot be de-identified either"
    return ClinalignError(message)


def reject(store: Store, raw_id: int, reason: str, actor: str) -> None:
    """Remove a quarantined case a data expert will not let through (say, one that cannot be
    de-identified within ``max_chars``): its content and id are emptied for good, the reason and an
    audit event kept. A case already de-identified cannot be rejected: its record may be in datasets."""
    reason = reason.strip()
    if not reason:
        raise ClinalignError("a reason is required: say in a few words why the case is removed")
    if len(reason) > 500:
        raise ClinalignError("the reason is longer than 500 characters: keep it to a sentence")
    with store.session() as session:
        raw = session.get(RawRecord, raw_id)
        if raw is None:
            raise ClinalignError(f"no raw record {raw_id} in the store")
        if raw.status == REJECTED:
            raise ClinalignError(f"raw record {raw_id} is already rejected")
        done = session.scalar(select(Record.id).where(Record.raw_id == raw_id))
        if done is not None:
            raise ClinalignError(
                f"raw record {raw_id} is already de-identified (record {done}): only quarantined cases can be rejected"
            )
        case = pseudonym(store.secret("pseudonyms"), raw.external_id)
        # The id may be PHI too, and leaving it would block ingesting the corrected case under its id;
        # the pseudonym still links this rejection to the case's record once it comes back.
        raw.external_id = f"rejected-{raw.id}:{case}"
        raw.payload = {}
        raw.status = REJECTED
        raw.rejected_reason = reason
        # The reason is a person's words: it stays with the record, the trail holds ids only.
        record_event(session, actor, "deidentify.reject", f"raw_record:{raw_id}", {"case": case, "run": raw.run_id})
    log.info("rejected raw record %d", raw_id)


def run(ctx: RunContext, config: Config) -> dict:
    totals: Counter = Counter()
    secret = _secret()
    with ctx.store.session() as session:
        sources = ctx.every(session, "raw_records")
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
        # Every case is checked before any is scanned: one refusal names every raw record to deal with.
        cases = {raw.id: _checked(raw, config) for raw in pending}
        problems = [(raw, cases[raw.id]) for raw in pending if isinstance(cases[raw.id], str)]
        if problems:
            raise _refuse(problems)
        key = ctx.store.secret("pseudonyms")
        records = []
        for raw in progress.track(pending, "deidentify"):
            case = cases[raw.id]
            surrogates = Surrogates(raw.external_id, secret) if config.strategy == "surrogate" else None
            counts: Counter = Counter()

            def clean(text: str, counts=counts, surrogates=surrogates) -> str:
                new, spans = deidentify_text(text, config, surrogates)
                counts.update(s.type for s in spans)
                return new

            prompt = clean(case.prompt)
            reference = clean(case.reference) if case.reference else None
            variants = [{"kind": v.kind, "text": clean(v.text)} for v in case.variants]
            totals += counts
            records.append(
                Record(
                    raw_id=raw.id,
                    # The raw id may itself be an identifier (an MRN, a name): it stays in quarantine.
                    external_id=pseudonym(key, raw.external_id),
                    deid_status=DEIDENTIFIED,
                    persona=case.persona,
                    specialty=case.specialty,  # from the vocabulary: never free text
                    risk=case.risk,
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
    """File mode: every field of every line de-identified by its name (``fields.py``): ``text`` and
    other strings scanned, identifier fields replaced whole, ids pseudonymised, ``keep`` kept, anything
    else dropped; ``phi_spans`` added: where each replacement stands in the new ``text``.

    All or nothing: the output is written to a temporary file and renamed only when every line passed.
    ``patient_id``, when present, keys the surrogates so one patient's notes stay consistent. The figures
    say, per field, on how many lines it was kept, pseudonymised, de-identified, replaced or dropped.
    """
    if not source.is_file():
        raise ClinalignError(f"input file not found: {source}")
    secret = _secret()
    key = ctx.store.secret("pseudonyms")
    totals: Counter = Counter()
    done: dict[str, Counter] = defaultdict(Counter)  # what happened -> field -> lines
    plans: dict[str, tuple[str, str | None]] = {}
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_bytes().splitlines()
    try:
        with partial.open("w", encoding="utf-8") as out:
            for number, raw_line in enumerate(progress.track(lines, "deidentify file"), start=1):
                where = f"{source}:{number}"
                try:
                    line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
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
                patient = next((v for k, v in row.items() if fields.field_key(k) == "patient_id"), None)
                patient_key = str(patient) if patient is not None else f"line-{number}"
                surrogates = Surrogates(patient_key, secret) if config.strategy == "surrogate" else None
                clean: dict = {}
                for name, value in row.items():
                    if name not in plans:
                        plans[name] = fields.classify(name, config.keep, config.id_fields, config.identifier_fields)
                    action, kind = plans[name]
                    # An id or identifier may come as a number; booleans, lists and objects never pass.
                    scalar = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
                    if action == fields.DROPPED:
                        pass
                    elif action == fields.KEPT:
                        clean[name] = value
                    elif action in (fields.TEXT, fields.DEIDENTIFIED) and isinstance(value, str):
                        try:
                            clean[name], spans = deidentify_text(value, config, surrogates)
                        except ClinalignError as err:
                            raise ClinalignError(f"{where}: field '{name}': {err}") from None
                        totals.update(s.type for s in spans)
                        if action == fields.TEXT:
                            clean["phi_spans"] = [{"start": s.start, "end": s.end, "type": s.type} for s in spans]
                        action = fields.DEIDENTIFIED
                    elif action == fields.REPLACED and scalar:
                        value = str(value)
                        clean[name] = (surrogates(kind, value) if surrogates else tag(kind, value)) if value else ""
                        totals[kind] += bool(value)
                    elif action == fields.PSEUDONYMISED and scalar:
                        clean[name] = pseudonym(key, str(value), "id")
                    else:
                        action = fields.DROPPED
                    done[action][name] += 1
                clean["phi_spans"] = clean.pop("phi_spans")  # last, after the fields of the line
                out.write(json.dumps(clean, ensure_ascii=False) + "\n")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    figures = {
        action: dict(sorted(done[action].items()))
        for action in (fields.KEPT, fields.PSEUDONYMISED, fields.DEIDENTIFIED, fields.REPLACED, fields.DROPPED)
    }
    with ctx.store.session() as session:
        ctx.use_external(session, "source_file", str(source.resolve()), sha256_path(source), {"mode": "file"})
        ctx.produce_path(session, "deidentified_file", target, {"phi_removed": dict(totals), "fields": figures})
        record_event(
            session,
            "system",
            "deidentify.file",
            f"run:{ctx.run_id}",
            {"phi_removed": dict(totals), "lines": len(lines)},
        )
    if figures[fields.DROPPED]:
        log.info(
            "dropped fields no rule covers: %s (list them in `keep` if they hold no PHI)", sorted(figures["dropped"])
        )
    ctx.metrics.update(lines=len(lines), phi_removed=dict(totals), fields=figures, path=str(target))
    return ctx.metrics
