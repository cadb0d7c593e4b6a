"""Scenario design for AI trainers: YAML templates with slots, expanded into cases that ``ingest``
reads, in counterfactual groups that differ in one attribute only, with the coverage matrix
(stakeholder x specialty x risk) that shows what is missing.

Reads: a scenario file (YAML; ``clinalign/data/scenario_templates.yaml`` is an example).
Writes: ``scenarios.jsonl`` in ``ingest``'s format and ``coverage.json`` (artifact ``scenario_cases``).

A template names the stakeholder who asks (patient, caregiver, clinician, educator, payer), the
specialty, the risk, one text per phrasing (lay, clinician shorthand, typos, non-native...) with
``{slots}`` for demographic attributes (age, sex, race/ethnicity, language, insurance, disability,
or any the file declares), a single question or several turns, a reference answer and unsafe
variants. For each phrasing, the *base* case takes every attribute's first value; each attribute the
template ``vary``-s then gives one case per value with everything else at the base: a counterfactual
group. A case's id says its group: ``<template>.<phrasing>.<attribute>=<value>`` (``base`` for the
base case), so that evaluation can compare the answers within a group.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinalign.audit import RunContext, record_event
from clinalign.schemas import SPECIALTIES, CaseIn, ClinalignError
from clinalign.settings import StageConfig

STAKEHOLDERS = ("patient", "caregiver", "clinician", "educator", "payer")
RISKS = ("emergency", "urgent", "routine")
PERSONA = {"caregiver": "patient"}  # ingest's personas; a caregiver asks as a patient's side
_SLOT = string.Formatter()


class Unsafe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["missing_red_flag", "personalised_dose", "hallucination", "dismissive", "other"]
    text: str = Field(min_length=1)


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    text: str = Field(min_length=1)


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,80}$")
    stakeholder: Literal[STAKEHOLDERS]  # type: ignore[valid-type]
    specialty: str
    risk: Literal[RISKS]  # type: ignore[valid-type]
    phrasings: dict[str, str | list[Turn]] = Field(min_length=1)
    """Phrasing name -> the question (one string), or the turns of a conversation ending with the user's."""
    reference: str = Field(min_length=1)
    unsafe: list[Unsafe] = []
    vary: list[str] = []
    """Attributes whose values each make a counterfactual group (the others stay at their first value)."""

    @field_validator("specialty")
    @classmethod
    def _specialty(cls, value: str) -> str:
        if value not in SPECIALTIES:
            raise ValueError(f"{value!r} is not one of schemas.SPECIALTIES")
        return value

    @model_validator(mode="after")
    def _conversations(self) -> Template:
        for name, turns in self.phrasings.items():
            if isinstance(turns, list) and (not turns or turns[-1].role != "user"):
                raise ValueError(f"phrasing {name!r}: a conversation must end with the user's turn")
        return self


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, list[str]] = Field(min_length=1)
    """Attribute -> its values; the first is the base value."""
    templates: list[Template] = Field(min_length=1)


BUNDLED = Path(str(resources.files("clinalign") / "data" / "scenario_templates.yaml"))


class Config(StageConfig):
    path: Path = BUNDLED
    """The scenario file (YAML); default: eight bundled templates, one per stakeholder and risk."""


def load(path: Path) -> ScenarioFile:
    """The scenario file, checked: every slot and every varied attribute is declared, ids are unique;
    a problem names the file and where in it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClinalignError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ClinalignError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    try:
        scenarios = ScenarioFile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ClinalignError(f"{path}: {where}: {first['msg']}") from None
    seen: set[str] = set()
    for number, template in enumerate(scenarios.templates):
        where = f"{path}: templates.{number} ({template.id})"
        if template.id in seen:
            raise ClinalignError(f"{where}: a template with this id came before")
        seen.add(template.id)
        for attribute in template.vary:
            if attribute not in scenarios.attributes:
                raise ClinalignError(f"{where}: vary: {attribute!r} is not declared under attributes")
        for name, phrasing in template.phrasings.items():
            texts = [phrasing] if isinstance(phrasing, str) else [t.text for t in phrasing]
            for slot in {field for text in texts for _, field, _, _ in _SLOT.parse(text) if field is not None}:
                if slot not in scenarios.attributes:
                    raise ClinalignError(f"{where}: phrasings.{name}: slot {{{slot}}} is not declared under attributes")
    return scenarios


def _render(phrasing: str | list[Turn], values: dict[str, str]) -> str:
    """The question with its slots filled; a conversation as one prompt, its earlier turns labelled."""
    if isinstance(phrasing, str):
        return phrasing.format_map(values)
    lines = [f"{'Me' if t.role == 'user' else 'You'}: {t.text.format_map(values)}" for t in phrasing[:-1]]
    return "\n".join([*lines, phrasing[-1].text.format_map(values)])


def expand(scenarios: ScenarioFile) -> list[dict]:
    """Every case, in ingest's format, base cases first within each template and phrasing."""
    base = {attribute: values[0] for attribute, values in scenarios.attributes.items()}
    cases = []
    for template, (name, phrasing) in ((t, p) for t in scenarios.templates for p in t.phrasings.items()):
        variations = [("base", base)] + [
            (f"{attribute}={value}", {**base, attribute: value})
            for attribute in template.vary
            for value in scenarios.attributes[attribute][1:]
        ]
        for label, values in variations:
            case = {
                "id": re.sub(r"[^A-Za-z0-9_.=-]+", "-", f"{template.id}.{name}.{label}")[:200],
                "prompt": _render(phrasing, values),
                "reference": template.reference.format_map(values),
                "variants": [{"kind": u.kind, "text": u.text.format_map(values)} for u in template.unsafe],
                "persona": PERSONA.get(template.stakeholder, template.stakeholder),
                "specialty": template.specialty,
                "risk": template.risk,
            }
            CaseIn.model_validate(case)  # what ingest will accept
            cases.append(case)
    return cases


def coverage(scenarios: ScenarioFile) -> dict:
    """Templates per stakeholder x specialty x risk, and the combinations no template covers among the
    stakeholders, the specialties the file uses and the three risk levels."""
    counts = Counter((t.stakeholder, t.specialty, t.risk) for t in scenarios.templates)
    specialties = sorted({t.specialty for t in scenarios.templates})
    gaps = [
        {"stakeholder": s, "specialty": p, "risk": r}
        for s, p, r in itertools.product(STAKEHOLDERS, specialties, RISKS)
        if not counts[(s, p, r)]
    ]
    cells = [{"stakeholder": s, "specialty": p, "risk": r, "templates": n} for (s, p, r), n in sorted(counts.items())]
    total = len(STAKEHOLDERS) * len(specialties) * len(RISKS)
    return {"cells": cells, "gaps": gaps, "covered": total - len(gaps), "combinations": total}


def run(ctx: RunContext, config: Config) -> dict:
    scenarios = load(config.path)
    cases = expand(scenarios)
    found = coverage(scenarios)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    out = ctx.out_dir / "scenarios.jsonl"
    with tempfile.NamedTemporaryFile("w", dir=ctx.out_dir, suffix=".part", delete=False, encoding="utf-8") as part:
        part.writelines(json.dumps(case) + "\n" for case in cases)
    os.replace(part.name, out)
    (ctx.out_dir / "coverage.json").write_text(json.dumps(found, indent=1))
    groups = sum(len(t.phrasings) * len(t.vary) for t in scenarios.templates)
    with ctx.store.session() as session:
        artifact = ctx.produce_path(
            session, "scenario_cases", out, {"cases": len(cases), "groups": groups, "coverage": found}
        )
        record_event(session, "scenarios", "scenarios.expand", f"artifact:{artifact.id}", {"cases": len(cases)})
    return {
        "artifact": artifact.id,
        "cases": len(cases),
        "templates": len(scenarios.templates),
        "counterfactual_groups": groups,
        "covered": found["covered"],
        "combinations": found["combinations"],
        "gaps": found["gaps"],
        "path": str(out),
    }
