"""De-identify quarantined cases: find PHI with Presidio, replace it with typed tags.

Reads: ``RawRecord`` (the only stage that does).
Writes: ``Record`` rows with ``deid_status="deidentified"`` and PHI counts per type (never the PHI);
artifact ``records``.

First version (issue #2): Presidio's pattern recognizers in an offline configuration (no spaCy model,
no network: ``NoOpNlpEngine``) plus our own recognizers for medical record numbers, member ids,
names after a cue word ("Dr.", "Re:", "this is", "patient ...") and care sites. The full Safe Harbor
version with gazetteer-based names and surrogates is issue #3.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import cache

from sqlalchemy import select

from clinalign.audit import RunContext, artifacts, canonical_json, record_event, sha256_text
from clinalign.settings import StageConfig
from clinalign.store import DEIDENTIFIED, RawRecord, Record

log = logging.getLogger(__name__)

# Presidio entity -> the tag that replaces it in text.
TAGS = {
    "PERSON": "[NAME]",
    "DATE_TIME": "[DATE]",
    "PHONE_NUMBER": "[PHONE]",
    "EMAIL_ADDRESS": "[EMAIL]",
    "US_SSN": "[SSN]",
    "MEDICAL_RECORD_NUMBER": "[MRN]",
    "HEALTH_PLAN_ID": "[PLAN_ID]",
    "URL": "[URL]",
    "IP_ADDRESS": "[IP]",
    "CREDIT_CARD": "[ACCOUNT]",
    "IBAN_CODE": "[ACCOUNT]",
    "LOCATION": "[LOCATION]",
}

# A capitalised or all-capitals word, then up to two more (an initial may sit between them).
_WORD = r"(?:[A-Z][A-Za-z'\-]*[a-z]|[A-Z]{2,})"  # O'Neil, McDonald, Smith-Jones, SMITH
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_NAME = rf"{_WORD}(?:\s+[A-Z]\.)?(?:\s+{_WORD}){{0,2}}"


class Config(StageConfig):
    score_threshold: float = 0.3
    """Presidio confidence above which a span is removed. Low on purpose: recall first, a missed
    identifier costs more than a redacted word."""


def _custom_recognizers():
    import regex
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's email recognizer checks the domain with tldextract, which by default fetches
        the public suffix list over the network; this one uses tldextract's bundled snapshot."""

        _extract = None

        def validate_result(self, pattern_text: str) -> bool:
            import tldextract

            if OfflineEmailRecognizer._extract is None:
                OfflineEmailRecognizer._extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
            return OfflineEmailRecognizer._extract(pattern_text).fqdn != ""

    def recognizer(entity: str, name: str, pattern: str, score: float = 0.85) -> PatternRecognizer:
        # Case matters for names (Presidio ignores case by default); cue words opt in with (?i:...).
        return PatternRecognizer(
            supported_entity=entity,
            name=name,
            patterns=[Pattern(name, pattern, score)],
            global_regex_flags=regex.MULTILINE,
        )

    return [
        OfflineEmailRecognizer(),
        # Identifiers named by their label; only the value after the label is a span.
        recognizer(
            "MEDICAL_RECORD_NUMBER",
            "mrn",
            r"(?<=\b(?i:MRN|medical record (?:number|no\.?)|chart (?:number|no\.?))\s*[:#]?\s*)"
            r"[A-Za-z0-9\-]{5,15}\b",
        ),
        recognizer(
            "HEALTH_PLAN_ID",
            "member_id",
            r"(?<=\b(?i:member|subscriber|policy|plan|beneficiary|insurance)\s+(?i:id|number|no\.?)\s*[:#]?\s*)"
            r"[A-Za-z0-9\-]{6,20}\b",
        ),
        # Presidio's phone recognizer only accepts numbers that are valid in a numbering plan;
        # recall first: anything shaped like a North American number goes.
        recognizer("PHONE_NUMBER", "phone_shape", r"(?<!\d)\(?\d{3}\)?[\s.\-]?\d{3}[\s.\-]\d{4}(?!\d)", 0.6),
        recognizer(
            "US_SSN",
            "ssn_labelled",
            r"(?<=\b(?i:SSN|social security (?:number|no\.?))\s*[:#]?\s*)\d{3}[\s\-]?\d{2}[\s\-]?\d{4}\b",
        ),
        # "June 23, 2026", "23 June 2026", "Jun. 23": Presidio's date patterns are numeric only.
        recognizer(
            "DATE_TIME",
            "month_name_date",
            rf"(?i:\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?(?:,?\s+\d{{4}})?\b)",
        ),
        # Names after a cue: titles, greetings and chart headers.
        recognizer("PERSON", "titled_name", rf"(?<=\b(?i:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?\s+){_NAME}"),
        recognizer(
            "PERSON",
            "cued_name",
            rf"(?<=\b(?i:this is|name is|re:|member|patient|seen by|my name's)\s+){_NAME}(?=\s*[,.(])",
        ),
        recognizer(
            "LOCATION",
            "care_site",
            rf"(?<=\b(?i:at\s+the)\s+){_WORD}(?:\s+{_WORD}){{0,2}}"
            r"(?=\s+(?i:clinic|hospital|medical cent(?:er|re)|health cent(?:er|re))\b)",
        ),
    ]


@cache
def _engines():
    """Build Presidio once per process, offline: no spaCy model is loaded or downloaded."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        DateRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )
    from presidio_anonymizer import AnonymizerEngine

    registry = RecognizerRegistry(supported_languages=["en"])
    for rec in (
        CreditCardRecognizer(),
        DateRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        PhoneRecognizer(),
        UrlRecognizer(),
        UsSsnRecognizer(),
        *_custom_recognizers(),
    ):
        registry.add_recognizer(rec)
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"]), AnonymizerEngine()


def redact(text: str, score_threshold: float = 0.3) -> tuple[str, Counter]:
    """Replace every PHI span in ``text`` with its typed tag; return the new text and counts per tag."""
    from presidio_anonymizer.entities import OperatorConfig

    analyzer, anonymizer = _engines()
    found = analyzer.analyze(text=text, language="en", score_threshold=score_threshold)
    if not found:
        return text, Counter()
    operators = {entity: OperatorConfig("replace", {"new_value": tag}) for entity, tag in TAGS.items()}
    operators["DEFAULT"] = OperatorConfig("replace", {"new_value": "[ID]"})
    result = anonymizer.anonymize(text=text, analyzer_results=found, operators=operators)
    return result.text, Counter(item.entity_type for item in result.items)


def run(ctx: RunContext, config: Config) -> dict:
    totals: Counter = Counter()
    with ctx.store.session() as session:
        for source in artifacts(session, "raw_records"):
            ctx.use(source.id)
        pending = session.scalars(
            select(RawRecord)
            .outerjoin(Record, Record.raw_id == RawRecord.id)
            .where(Record.id.is_(None))
            .order_by(RawRecord.id)
        ).all()
        records = []
        for raw in pending:
            case = raw.payload
            counts: Counter = Counter()
            prompt, found = redact(case["prompt"], config.score_threshold)
            counts += found
            reference = None
            if case.get("reference"):
                reference, found = redact(case["reference"], config.score_threshold)
                counts += found
            variants = []
            for variant in case.get("variants", []):
                text, found = redact(variant["text"], config.score_threshold)
                counts += found
                variants.append({"kind": variant["kind"], "text": text})
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
            session, "system", "deidentify", f"run:{ctx.run_id}", {"records": len(records), "phi_removed": dict(totals)}
        )
    log.info("de-identified %d records; removed %s", len(records), dict(totals))
    ctx.metrics.update(
        records=len(records), phi_removed=dict(totals), records_with_phi=sum(1 for r in records if r.phi_counts)
    )
    return ctx.metrics
