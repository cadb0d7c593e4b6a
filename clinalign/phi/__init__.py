"""PHI detection: the 18 HIPAA Safe Harbor identifier types in free text, fast and recall-first.

Reads: text.  Writes: nothing (pure functions returning ``Span``s, like ``guardrails``).

Used by ``deidentify`` to remove PHI, and by every stage that sends text to a person or a model as a
residual scan (``scrub``). Two detectors, both linear in text length:

* ``patterns``: compiled regular expressions for dates, ages over 89, contact details, record,
  plan, account, licence, vehicle, device and biometric identifiers, addresses, ZIP codes, URLs and IPs;
* ``names``: person names without a downloadable NER model (after Philter, Norgeot et al. 2020):
  name gazetteers from Faker's locales, capitalisation and context cues, and common-word and eponym
  rules so that clinical words survive.

Safe Harbor: 45 CFR 164.514(b)(2). Photos are out of scope for text.
"""

from __future__ import annotations

from dataclasses import dataclass

# The Safe Harbor types, as clinalign names them (and tags them: "[NAME]", "[DATE]", ...).
TYPES: tuple[str, ...] = (
    "NAME",
    "LOCATION",
    "ZIP",
    "DATE",
    "AGE",
    "PHONE",
    "FAX",
    "EMAIL",
    "SSN",
    "MRN",
    "HEALTH_PLAN",
    "ACCOUNT",
    "LICENSE",
    "VEHICLE",
    "DEVICE",
    "URL",
    "IP",
    "BIOMETRIC",
    "ID",
)

# Texts longer than this are refused rather than scanned: a whole chart belongs in several records.
MAX_CHARS = 1_000_000


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    type: str
    rule: str


# On equal spans a label beats a shape ("account 0620856156" is an account, though shaped like a phone).
_LABELLED = {
    "mrn",
    "plan",
    "account",
    "license",
    "plate",
    "device",
    "biometric",
    "ssn_labelled",
    "fax",
    "phone_labelled",
    "zip_labelled",
    "age_labelled",
    "date_cued",
    "street_cued",
}


def claimed(text: str, spans: list[Span]) -> bytearray:
    """A per-character mask of what ``spans`` cover: overlap tests in time linear in the text."""
    mask = bytearray(len(text))
    for span in spans:
        mask[span.start : span.end] = b"\x01" * (span.end - span.start)
    return mask


def _resolve(spans: list[Span]) -> list[Span]:
    """Drop spans inside or overlapping an earlier, longer one (a date inside an address, say)."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start), s.rule not in _LABELLED)):
        if kept and span.start < kept[-1].end:
            if span.end > kept[-1].end and span.type == kept[-1].type:
                kept[-1] = Span(kept[-1].start, span.end, span.type, kept[-1].rule)
            continue
        kept.append(span)
    return kept


def find(text: str) -> list[Span]:
    """Every PHI span in ``text``, sorted and non-overlapping."""
    from clinalign.phi import names, patterns

    if len(text) > MAX_CHARS:
        raise ValueError(f"text of {len(text)} characters is over the {MAX_CHARS} limit")
    found = patterns.find(text)
    found += names.find(text, claimed(text, found))
    return _resolve(found)


def merge(*groups: list[Span]) -> list[Span]:
    """Spans from several detectors, overlaps resolved."""
    return _resolve([s for group in groups for s in group])


def scrub(text: str) -> tuple[str, int]:
    """The residual scan: re-check text bound for a person or a model, and tag anything found.

    De-identified text comes back unchanged; a hit means something slipped through (or a model
    produced something shaped like PHI), and it is removed before anyone sees it.
    """
    spans = find(text)
    for span in reversed(spans):
        text = text[: span.start] + f"[{span.type}]" + text[span.end :]
    return text, len(spans)
