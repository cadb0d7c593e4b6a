"""Measure a PHI detector against gold spans: precision, recall, F1 and F2 per type, strict and overlap.

Gold comes as JSONL, one document a line: ``{"text": ..., "spans": [{"start", "end", "type"}]}``
(clinalign's format, what ``synthetic.py`` writes), or in the layouts of two public sets:
``presidio`` (presidio-research's synth_dataset JSON) and ``eds`` (AP-HP eds-pseudo JSONL).

* strict: a predicted span counts when its boundaries and type equal a gold span's;
* overlap: when it shares a character with a gold span of the same type;
* leak recall: the share of gold spans covered by any prediction of any type, the figure a privacy
  officer asks for (a name tagged as a location is still removed).
F2 weighs recall twice as much as precision (van Rijsbergen's F-beta, beta = 2).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clinalign.phi import Span
from clinalign.schemas import ClinalignError

# Detector types folded together for scoring (a fax is a phone number; a ZIP code is a place).
SCORED_AS = {"ZIP": "LOCATION", "FAX": "PHONE"}

# Public sets' labels -> clinalign's; labels absent here are not Safe Harbor identifiers (an
# organisation, a job title, a country) and are left out of the gold.
PRESIDIO_LABELS = {
    "PERSON": "NAME",
    "STREET_ADDRESS": "LOCATION",
    "ZIP_CODE": "LOCATION",
    "DATE_TIME": "DATE",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "US_SSN": "SSN",
    "CREDIT_CARD": "ACCOUNT",
    "IBAN_CODE": "ACCOUNT",
    "IP_ADDRESS": "IP",
    "DOMAIN_NAME": "URL",
    "US_DRIVER_LICENSE": "LICENSE",
}
EDS_LABELS = {
    "NOM": "NAME",
    "PRENOM": "NAME",
    "DATE": "DATE",
    "DATE_NAISSANCE": "DATE",
    "TEL": "PHONE",
    "MAIL": "EMAIL",
    "SECU": "SSN",
    "ADRESSE": "LOCATION",
    "VILLE": "LOCATION",
    "ZIP": "LOCATION",
    "HOPITAL": "LOCATION",
    "IPP": "MRN",
    "NDA": "MRN",
}


@dataclass(frozen=True)
class GoldDoc:
    text: str
    spans: tuple[Span, ...]


def _docs_clinalign(path: Path) -> Iterable[GoldDoc]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            spans = tuple(Span(s["start"], s["end"], s["type"], "gold") for s in row["spans"])
            yield GoldDoc(row["text"], spans)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ClinalignError(f"{path}:{number}: not a gold document ({type(err).__name__})") from None


# Safe Harbor keeps years, and a weekday alone dates nothing: such DATE_TIME gold spans are not PHI.
_NOT_PHI_DATE = re.compile(
    r"(?i)^(?:(?:in |the )?\d{4}s?|\d{2}s|(?:mon|tues|wednes|thurs|fri|satur|sun)day"
    r"(?: (?:morning|afternoon|evening|night))?)$"
)


def _docs_presidio(path: Path) -> Iterable[GoldDoc]:
    for row in json.loads(path.read_text(encoding="utf-8")):
        text = row["full_text"]
        spans = tuple(
            Span(s["start_position"], s["end_position"], PRESIDIO_LABELS[s["entity_type"]], "gold")
            for s in row["spans"]
            if s["entity_type"] in PRESIDIO_LABELS
            and not (
                s["entity_type"] == "DATE_TIME" and _NOT_PHI_DATE.match(text[s["start_position"] : s["end_position"]])
            )
        )
        yield GoldDoc(text, spans)


def _docs_eds(path: Path) -> Iterable[GoldDoc]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            spans = tuple(
                Span(e["start"], e["end"], EDS_LABELS[e["label"]], "gold")
                for e in row["entities"]
                if e["label"] in EDS_LABELS
            )
            yield GoldDoc(row["note_text"], spans)


READERS = {"clinalign": _docs_clinalign, "presidio": _docs_presidio, "eds": _docs_eds}


def read_gold(path: Path, layout: str = "clinalign") -> list[GoldDoc]:
    if not path.is_file():
        raise ClinalignError(f"gold file not found: {path}")
    if layout not in READERS:
        raise ClinalignError(f"unknown gold layout {layout!r}: use one of {', '.join(READERS)}")
    return list(READERS[layout](path))


def _f(precision: float, recall: float, beta: float) -> float:
    if precision == 0 and recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def score(docs: list[GoldDoc], detect: Callable[[str], list[Span]]) -> dict:
    """Run ``detect`` on every gold text; return per-type and overall figures."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    covered = 0
    for doc in docs:
        predicted = [Span(s.start, s.end, SCORED_AS.get(s.type, s.type), s.rule) for s in detect(doc.text)]
        gold = [Span(g.start, g.end, SCORED_AS.get(g.type, g.type), g.rule) for g in doc.spans]
        exact = {(s.start, s.end, s.type) for s in predicted}
        for g in gold:
            c = counts[g.type]
            c["gold"] += 1
            c["strict_found"] += (g.start, g.end, g.type) in exact
            c["overlap_found"] += any(p.type == g.type and p.start < g.end and g.start < p.end for p in predicted)
            covered += any(p.start < g.end and g.start < p.end for p in predicted)
        gold_exact = {(g.start, g.end, g.type) for g in gold}
        for p in predicted:
            c = counts[p.type]
            c["predicted"] += 1
            c["strict_correct"] += (p.start, p.end, p.type) in gold_exact
            c["overlap_correct"] += any(g.type == p.type and p.start < g.end and g.start < p.end for g in gold)
    per_type = {}
    for kind, c in sorted(counts.items()):
        row = {"gold": c["gold"], "predicted": c["predicted"]}
        for mode in ("strict", "overlap"):
            precision = c[f"{mode}_correct"] / c["predicted"] if c["predicted"] else None
            recall = c[f"{mode}_found"] / c["gold"] if c["gold"] else None
            row[mode] = {
                "precision": precision,
                "recall": recall,
                "f1": _f(precision, recall, 1) if precision is not None and recall is not None else None,
                "f2": _f(precision, recall, 2) if precision is not None and recall is not None else None,
            }
        per_type[kind] = row
    total_gold = sum(c["gold"] for c in counts.values())
    return {
        "documents": len(docs),
        "gold_spans": total_gold,
        "per_type": per_type,
        "leak_recall": covered / total_gold if total_gold else None,
        "missed_spans": total_gold - covered,
    }
