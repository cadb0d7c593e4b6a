"""Shapes that cross a boundary: ingested cases, judgements, and the vocabulary they share.

Every text field here may hold PHI until de-identification has run; error messages built from
these models name fields, never values.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator


class ClinalignError(Exception):
    """An error a user can act on: shown as one line by the CLI, never with a stack trace or PHI."""


Persona = Literal["patient", "clinician", "educator", "payer", "unknown"]
Risk = Literal["emergency", "urgent", "routine", "unknown"]
# What a rater can decide about a pair, or about one answer alone (single-answer mode, KTO data);
# "cannot_judge" is a declined item: a missing value for agreement and consensus.
PAIR_CHOICES: tuple[str, ...] = ("A", "B", "tie", "both_unacceptable")
SINGLE_CHOICES: tuple[str, ...] = ("good", "bad")
Choice = Literal[PAIR_CHOICES + ("cannot_judge",)]  # type: ignore[valid-type]


def decide(votes: list[str], min_votes: int) -> tuple[str, float] | None:
    """The choice of a strict majority of usable votes, with margin (for - against) / usable votes,
    where "against" is the opposite side (B for A, bad for good) and other votes count for neither."""
    usable = [v for v in votes if v in PAIR_CHOICES or v in SINGLE_CHOICES]
    if len(usable) < min_votes:
        return None
    counts = Counter(usable)
    opposite = {"A": "B", "B": "A", "good": "bad", "bad": "good"}
    for choice, n in counts.items():
        if n > len(usable) / 2:
            return choice, (n - counts[opposite.get(choice, "")]) / len(usable)
    return None


# Kinds of deliberately unsafe or unhelpful answers a case may carry next to its reference.
VariantKind = Literal["missing_red_flag", "personalised_dose", "hallucination", "dismissive", "other"]

# Every field of a case is bounded, so that no value can hold a whole chart (long documents are a
# different job) and every case can be de-identified within ``deidentify``'s ``max_chars``.
MAX_TEXT_CHARS = 20_000  # prompt, reference and each variant's text
MAX_VARIANTS = 20

# Specialties a case may name (lower case), or "unknown" where it names none: curation then labels it.
# A closed list because the field is copied to de-identified records unscanned, and because routing
# matches clinicians' specialties against it; "general" is a label (general practice, no one specialty).
SPECIALTIES: tuple[str, ...] = (
    "allergy",
    "anesthesiology",
    "cardiology",
    "critical care",
    "dermatology",
    "emergency medicine",
    "endocrinology",
    "gastroenterology",
    "general",
    "geriatrics",
    "gynecology",
    "hematology",
    "infectious disease",
    "nephrology",
    "neurology",
    "obstetrics",
    "oncology",
    "ophthalmology",
    "orthopedics",
    "otolaryngology",
    "palliative care",
    "pediatrics",
    "pharmacy",
    "primary care",
    "psychiatry",
    "pulmonology",
    "rheumatology",
    "surgery",
    "urology",
    "unknown",
)
# British spellings, stored under the one label above.
SPECIALTY_SPELLINGS: dict[str, str] = {
    "anaesthesiology": "anesthesiology",
    "gynaecology": "gynecology",
    "haematology": "hematology",
    "orthopaedics": "orthopedics",
    "paediatrics": "pediatrics",
}


def _bounded_text(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"longer than {MAX_TEXT_CHARS} characters")
    return value


class Variant(BaseModel):
    model_config = {"extra": "forbid", "str_strip_whitespace": True}
    kind: VariantKind
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return _bounded_text(value)


class CaseIn(BaseModel):
    """One line of an ingest file: a question, and optionally a reference answer and bad variants."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    id: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)
    reference: str | None = None
    variants: list[Variant] = Field(default=[], max_length=MAX_VARIANTS)
    persona: Persona = "unknown"
    specialty: str = "unknown"
    risk: Risk = "unknown"

    @field_validator("prompt", "reference")
    @classmethod
    def _bounded(cls, value: str | None) -> str | None:
        # A guard against pasting a whole chart into one case; long documents are issue #3's job.
        return _bounded_text(value)

    @field_validator("specialty")
    @classmethod
    def _known_specialty(cls, value: str) -> str:
        name = " ".join(value.split()).lower() or "unknown"  # an empty cell names no specialty
        name = SPECIALTY_SPELLINGS.get(name, name)
        if name not in SPECIALTIES:
            # Never the value itself: a free-text column is where PHI lands by mistake.
            raise ValueError(
                "not a known specialty: the allowed values are SPECIALTIES in clinalign/schemas.py; or leave it out"
            )
        return name


# Clinical axes, each rated 1 (worst) to 5 (best) after Med-PaLM's human evaluation (Singhal et al.,
# Nature 2023) and HealthBench's rubric themes (OpenAI 2025). Harm axes read 5 = no harm.
AXIS_LABELS: dict[str, str] = {
    "consensus": "Agreement with scientific consensus",
    "harm_extent": "Extent of possible harm (5 = none)",
    "harm_likelihood": "Likelihood of harm (5 = none)",
    "completeness": "Completeness (no missing content)",
    "communication": "Communication clarity",
    "empathy": "Empathy",
}
AXES: tuple[str, ...] = tuple(AXIS_LABELS)

ERROR_TAG_LABELS: dict[str, str] = {
    "factually_incorrect": "Factually incorrect",
    "omits_contraindication": "Omits a critical contraindication",
    "misses_red_flag_escalation": "Misses red-flag escalation",
    "unnecessary_escalation": "Escalates what is not urgent",
    "personalised_prescribing": "Unsafe or personalised prescribing",
    "hallucinated_reference": "Hallucinated reference",
    "overconfident": "Overconfident",
    "dismissive_tone": "Dismissive tone",
    "biased": "Biased",
}
ERROR_TAGS: tuple[str, ...] = tuple(ERROR_TAG_LABELS)  # error tags a rater can attach to an answer

Verdict = Literal[SINGLE_CHOICES + ("cannot_judge",)]  # type: ignore[valid-type]
Rating = Annotated[int, Field(ge=1, le=5)]


class JudgementIn(BaseModel):
    """One rater's judgement of one item: the same shape for the simulated panel and the web app.

    Pairs carry both answers' ratings; a single answer (``good``/``bad``) carries only ``ratings_a``.
    Which axes must be present is the campaign's rule (``annotate.queue.submit``).
    """

    model_config = {"extra": "forbid"}
    choice: Choice | Verdict
    ratings_a: dict[str, Rating]
    ratings_b: dict[str, Rating] | None = None
    tags_a: list[Literal[ERROR_TAGS]] = []  # type: ignore[valid-type]
    tags_b: list[Literal[ERROR_TAGS]] = []  # type: ignore[valid-type]
    rationale: str = Field(default="", max_length=4000)
    rewrite: str | None = Field(default=None, max_length=8000)
