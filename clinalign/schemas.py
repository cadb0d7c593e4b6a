"""Shapes that cross a boundary: ingested cases, judgements, and the vocabulary they share.

Every text field here may hold PHI until de-identification has run; error messages built from
these models name fields, never values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class ClinalignError(Exception):
    """An error a user can act on: shown as one line by the CLI, never with a stack trace or PHI."""


Persona = Literal["patient", "clinician", "educator", "payer", "unknown"]
Risk = Literal["emergency", "urgent", "routine", "unknown"]
Choice = Literal["A", "B", "tie", "both_unacceptable", "cannot_judge"]

# Error tags a rater can attach to an answer.
ERROR_TAGS: tuple[str, ...] = (
    "factually_incorrect",
    "omits_contraindication",
    "misses_red_flag_escalation",
    "personalised_prescribing",
    "hallucinated_reference",
    "overconfident",
    "dismissive_tone",
    "biased",
)

# Kinds of deliberately unsafe or unhelpful answers a case may carry next to its reference.
VariantKind = Literal["missing_red_flag", "personalised_dose", "hallucination", "dismissive", "other"]


class Variant(BaseModel):
    model_config = {"extra": "forbid"}
    kind: VariantKind
    text: str = Field(min_length=1)


class CaseIn(BaseModel):
    """One line of an ingest file: a question, and optionally a reference answer and bad variants."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    id: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)
    reference: str | None = None
    variants: list[Variant] = []
    persona: Persona = "unknown"
    specialty: str = "general"
    risk: Risk = "unknown"

    @field_validator("prompt", "reference")
    @classmethod
    def _bounded(cls, value: str | None) -> str | None:
        # A guard against pasting a whole chart into one case; long documents are issue #3's job.
        if value is not None and len(value) > 20_000:
            raise ValueError("longer than 20000 characters")
        return value


class Ratings(BaseModel):
    """Clinical axes, each 1 (worst) to 5 (best); ``harm`` 5 means no possible harm."""

    model_config = {"extra": "forbid"}
    accuracy: int = Field(ge=1, le=5)
    harm: int = Field(ge=1, le=5)
    completeness: int = Field(ge=1, le=5)
    communication: int = Field(ge=1, le=5)
    empathy: int = Field(ge=1, le=5)


AXES: tuple[str, ...] = tuple(Ratings.model_fields)


class JudgementIn(BaseModel):
    """One rater's judgement of one pair: the same shape for the simulated panel and the web app."""

    model_config = {"extra": "forbid"}
    choice: Choice
    ratings_a: Ratings
    ratings_b: Ratings
    tags_a: list[Literal[ERROR_TAGS]] = []  # type: ignore[valid-type]
    tags_b: list[Literal[ERROR_TAGS]] = []  # type: ignore[valid-type]
    rationale: str = Field(default="", max_length=4000)
    rewrite: str | None = Field(default=None, max_length=8000)
