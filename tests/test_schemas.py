"""The ingest shapes: every field of a case is bounded or drawn from a vocabulary, and errors never quote a value."""

import json
from importlib import resources

import pytest
from pydantic import ValidationError

from clinalign.curate.tags import SPECIALTY_TERMS
from clinalign.schemas import MAX_TEXT_CHARS, MAX_VARIANTS, SPECIALTIES, CaseIn

CASE = {"id": "c1", "prompt": "Is a flu shot useful?"}


def test_the_vocabulary_covers_the_rules_the_bundled_cases_and_general():
    bundled = {
        json.loads(line)["specialty"] for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()
    }
    assert set(SPECIALTY_TERMS) | bundled | {"general", "unknown"} <= set(SPECIALTIES)
    assert all(s == s.strip().lower() for s in SPECIALTIES)


def test_a_specialty_is_accepted_in_any_case_and_stored_in_lower_case():
    assert CaseIn(**CASE, specialty="  Infectious   DISEASE ").specialty == "infectious disease"
    assert CaseIn(**CASE, specialty="General").specialty == "general"
    assert CaseIn(**CASE, specialty="Paediatrics").specialty == "pediatrics"  # British spelling, one label


def test_a_case_without_a_specialty_is_unknown_not_general():
    assert CaseIn(**CASE).specialty == "unknown"
    assert CaseIn(**CASE, specialty="  ").specialty == "unknown"  # an empty cell of an export


def test_a_specialty_outside_the_vocabulary_is_refused_without_quoting_it():
    with pytest.raises(ValidationError) as err:
        CaseIn(**CASE, specialty="Maria Delgado 48213377")
    problem = err.value.errors(include_input=False)[0]
    assert problem["loc"] == ("specialty",)
    assert "SPECIALTIES" in problem["msg"] and "Maria" not in problem["msg"] and "4821" not in problem["msg"]


@pytest.mark.parametrize(
    ("variants", "where"),
    [
        ([{"kind": "dismissive", "text": "x" * (MAX_TEXT_CHARS + 1)}], ("variants", 0, "text")),
        ([{"kind": "dismissive", "text": "It is nothing."}] * (MAX_VARIANTS + 1), ("variants",)),
        ([{"kind": "dismissive", "text": "   "}], ("variants", 0, "text")),
    ],
)
def test_variants_have_the_same_limits_as_the_prompt(variants, where):
    assert MAX_TEXT_CHARS == 20_000
    with pytest.raises(ValidationError) as err:
        CaseIn(**CASE, variants=variants)
    assert err.value.errors()[0]["loc"] == where
    CaseIn(**CASE, variants=variants[:1] if where == ("variants",) else [])  # within the limits: accepted
