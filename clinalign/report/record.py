"""The model card's one canonical record: what the Hugging Face card (Markdown and HTML) and the CHAI
Applied Model Card (JSON) say of a policy, and nothing they do not; and the card facts that the store
cannot know (``data/model_card.yaml``, under a site's own file).

Reads: the card facts files.  Writes: nothing.

Required fields may not be empty: every ``Text`` is at least one non-blank character, every ``Texts``
at least one of them, and the project's four stakeholders and the ten GMLP principles must all be
there. ``validated`` checks a record again before any rendering (a copy made with
``model_copy(update=...)`` skips pydantic's validation) and raises a ``ClinalignError`` naming every
empty field, so a card with a hole in it is never written.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from clinalign.audit import canonical_json, sha256_text
from clinalign.schemas import ClinalignError

BUNDLED_FACTS = resources.files("clinalign") / "data" / "model_card.yaml"
STAKEHOLDERS = ("patient", "clinician", "educator", "payer")  # the project's stakeholders: each must be carded

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Texts = Annotated[list[Text], Field(min_length=1)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Figure(_Part):
    value: float | None
    n: int
    low: float | None
    high: float | None


class Result(_Part):
    """One figure of one model in one evaluation."""

    eval_report: int
    suite: Text
    metric: Text
    """Its path in the evaluation's summary, model key left out (``results.guardrails_on.phi_leak_rate``)."""
    label: Text
    group: Literal["efficacy", "fairness", "safety"]
    direction: str
    model: Text
    """The model's key in that evaluation (``before``, ``after``, ``sft-1``), or ``comparison``."""
    model_label: Text
    is_policy: bool
    figure: Figure


class Evaluation(_Part):
    artifact: int
    suite: Text
    complete: bool
    """False when the evaluation says some items went ungraded (a partial evaluation)."""
    date: Text
    testing_data: Text
    models: list[dict]


class Step(_Part):
    """One artifact of the lineage: what it is, its content hash, the run that made it."""

    artifact: int
    kind: Text
    sha256: str | None
    run: int | None
    stage: Text
    uri: Text


class TrainingStep(_Part):
    artifact: int
    stage: Text
    run: int
    seconds: float
    config_hash: Text
    settings: dict
    figures: dict


class Stakeholder(_Part):
    intended_use: Texts
    out_of_scope: Texts
    guardrails: dict[str, str]
    """The guardrail policy's scope for this audience (what happens to a personal dose...)."""


class Annotation(_Part):
    campaign: str
    raters: int
    real_clinicians: int
    simulated_raters: int
    simulated: bool
    tasks: int
    judgements: int
    alpha_choice: float | None
    fleiss_kappa: float | None
    ac1_choice: float | None
    pairwise_agreement: float | None
    rater_vs_rest: float | None
    train_pairs: int
    test_pairs: int


class RewardModel(_Part):
    artifact: int
    test_accuracy: float | None
    test_pairs: int
    ece: float | None
    brier: float | None
    temperature: float | None
    members: int | None
    axis_accuracy: dict[str, float]


class Guardrails(_Part):
    policy: Text
    sha256: Text
    red_flag_categories: int
    harmful_request_patterns: int
    audiences: Texts
    routing: dict


class Tier(_Part):
    tier: int
    actions: Texts
    what_happens: Text


class Oversight(_Part):
    tiers: Annotated[list[Tier], Field(min_length=1)]
    review_when: Texts


class Release(_Part):
    stage: Text
    version: Text
    date: Text
    history: list[str]


class Principle(_Part):
    number: int
    principle: Text
    how: Text
    evidence: Texts


class Record(_Part):
    """Everything the three renderings say, and nothing they do not."""

    name: Text
    version: Text
    policy_artifact: int
    policy_sha256: Text
    policy_uri: Text
    algorithm: Text
    base_model: Text
    base_model_id: str | None
    """The base model's Hugging Face id, where the card facts know it (``base_models``)."""
    license: Text
    developer: Text
    contact: Text
    funding: Text
    summary: Text
    keywords: Texts
    language: Texts
    simulated_panel: bool
    stakeholders: Annotated[dict[str, Stakeholder], Field(min_length=1)]
    targeted_population: Text
    clinical_risk_level: Text
    global_availability: Text
    regulatory_approval: Text
    data: Texts
    """The development data, characterised (prompt counts by split, stakeholder, risk; PHI removed)."""
    lineage: Annotated[list[Step], Field(min_length=1)]
    training: list[TrainingStep]
    annotation: Annotation | None
    reward_model: RewardModel | None
    guardrails: Guardrails
    oversight: Oversight
    evaluations: Annotated[list[Evaluation], Field(min_length=1)]
    results: Annotated[list[Result], Field(min_length=1)]
    release: Release
    limitations: Texts
    usage: Texts
    gmlp: list[Principle]
    """The ten GMLP principles, each once (``validated`` names a missing one)."""
    security: Text
    maintenance: Text
    patient_consent: Text
    publications: Text
    audit: Text
    architecture: dict
    software: dict[str, str]
    compute: dict[str, float]
    code_version: Text
    generated: Text

    def sha256(self) -> str:
        """The record's content hash: the three renderings of one record carry the same one."""
        return sha256_text(canonical_json(self.model_dump(mode="json")))

    def policy_results(self, group: str | None = None) -> list[Result]:
        return [r for r in self.results if r.is_policy and (group is None or r.group == group)]


def validated(record: Record | dict) -> Record:
    """The record, checked again (a copy made with ``model_copy(update=...)`` skips validation): every
    required field filled, or a ``ClinalignError`` naming each empty one."""
    data = record.model_dump() if isinstance(record, Record) else record
    empty, other = [], []
    try:
        checked = Record.model_validate(data)
    except ValidationError as err:
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"])
            if error["type"] in ("missing", "string_too_short", "too_short") or error.get("input") is None:
                empty.append(where)
            else:
                other.append(f"{where}: {error['msg']}")
    else:
        empty += [f"stakeholders.{name}" for name in STAKEHOLDERS if name not in checked.stakeholders]
        numbers = {p.number for p in checked.gmlp}
        empty += [f"gmlp.{n}" for n in range(1, 11) if n not in numbers]
        if not empty:
            return checked
    found = [f"required field(s) empty: {', '.join(empty)}"] if empty else []
    raise ClinalignError("model card: " + "; ".join(found + other))


# --- the facts the store cannot know ----------------------------------------------------------------


Loose = str | None  # a facts file may leave a field blank; the record refuses it, naming the field


class _StakeholderFacts(_Part):
    intended_use: list[Loose] | None
    out_of_scope: list[Loose] | None


class _PrincipleFacts(_Part):
    principle: Loose
    how: Loose


class Facts(_Part):
    """The card facts file (``data/model_card.yaml``): types only; emptiness is the record's to refuse."""

    name: str | None = None
    developer: Loose
    contact: Loose
    funding: Loose
    license: str = "other"
    """Used only when the base model's licence is not recorded in its lineage."""
    base_models: dict[str, str] = {}
    """Hugging Face ids of base models known by title (``SmolLM2-135M-Instruct``: ``HuggingFaceTB/...``)."""
    global_availability: Loose
    regulatory_approval: Loose
    clinical_risk_level: Loose
    targeted_population: Loose
    language: list[Loose] | None
    keywords: list[Loose] | None
    security: Loose
    maintenance: Loose
    patient_consent: Loose
    publications: Loose
    stakeholders: dict[str, _StakeholderFacts | None]
    limitations: list[Loose] | None
    gmlp: dict[int, _PrincipleFacts | None]


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def facts(site: Path | None = None) -> Facts:
    """The bundled card facts, with a site's file laid over them key by key."""
    data = yaml.safe_load(BUNDLED_FACTS.read_text(encoding="utf-8"))
    where = "the bundled card facts"
    if site is not None:
        where = str(site)
        try:
            over = yaml.safe_load(Path(site).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ClinalignError(f"card facts {site}: cannot read ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ClinalignError(f"card facts {site}: not valid YAML ({err.__class__.__name__})") from None
        if not isinstance(over, dict):
            raise ClinalignError(f"card facts {site}: must be a mapping")
        data = _merge(data, over)
    try:
        return Facts.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise ClinalignError(f"card facts {where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
