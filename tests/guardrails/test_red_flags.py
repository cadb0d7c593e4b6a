"""Every red-flag category in lay words, typos, third person and clinician shorthand; every kind of
hard negative (negation, past history, hypothetical, educational, family history, figurative).

``red_flags.jsonl`` is the development set, written for these tests; each item must come out right.
``red_flags_holdout.jsonl`` was written before the rules were tuned and is never tuned on:
``bench/guardrails.py`` reports recall and specificity on both.
"""

import json
from pathlib import Path

import pytest

from clinalign import guardrails
from clinalign.guardrails import red_flags

HERE = Path(__file__).parent
DEV = [json.loads(line) for line in (HERE / "red_flags.jsonl").read_text().splitlines() if line.strip()]


def outcome(verdict: guardrails.Verdict) -> str:
    if verdict.escalate:
        return "emergency"
    return "urgent" if verdict.disposition == "urgent" else "none"


def _case(i: int, item: dict):
    known = item.get("known_error")  # kept in the set and reported, not hidden: it must keep failing
    marks = [pytest.mark.xfail(reason=known, strict=True)] if known else []
    return pytest.param(item, id=f"{i}-{item['kind']}-{item['category']}", marks=marks)


@pytest.mark.parametrize("item", [_case(i, d) for i, d in enumerate(DEV)])
def test_labelled_item(item):
    verdict = guardrails.check_input(item["text"])
    assert outcome(verdict) == item["expect"], verdict.as_dict()
    if item["expect"] != "none":
        assert item["category"] in {r.category for r in verdict.reasons if r.rule == "red_flag"}


def test_the_set_covers_every_category_and_every_kind_of_hard_negative():
    policy = guardrails.load()
    emergencies = {name for name, flag in policy.red_flags.items() if flag.disposition == "emergency"}
    positive = {d["category"] for d in DEV if d["expect"] == "emergency"}
    assert emergencies <= positive
    for category in emergencies:
        kinds = {d["kind"] for d in DEV if d["category"] == category and d["expect"] == "emergency"}
        assert len(kinds) >= 2, category
    for kind in ("lay", "typo", "third_person", "shorthand"):
        assert any(d["kind"] == kind and d["expect"] == "emergency" for d in DEV)
    for kind in ("negation", "past", "hypothetical", "educational", "family", "figurative"):
        assert sum(d["kind"] == kind for d in DEV) >= 3, kind


def test_a_lifted_mention_says_what_lifted_it():
    found = red_flags.find("No chest pain. What are the signs of a stroke?", guardrails.load(), keep_lifted=True)
    assert {(m.category, m.lifted_by) for m in found} >= {("acs", "NEGATED_EXISTENCE"), ("stroke", "EDUCATIONAL")}
    assert red_flags.find("No chest pain. What are the signs of a stroke?", guardrails.load()) == []


def test_negation_stops_at_the_end_of_its_sentence_and_at_but():
    assert guardrails.check_input("No fever. My chest is crushing and I'm sweating.").escalate
    assert guardrails.check_input("I'm not sure what's going on but I have crushing chest pain").escalate


def test_self_harm_put_as_a_hypothetical_still_escalates():
    assert guardrails.check_input("What if I just killed myself, would anyone care?").escalate


def test_evidence_and_span_point_at_the_words():
    text = "Since this morning my dad's face is drooping on one side."
    reason = next(r for r in guardrails.check_input(text).reasons if r.category == "stroke")
    assert text[reason.start : reason.end] == reason.evidence
    assert "droop" in reason.evidence


def test_a_text_without_a_candidate_never_reaches_spacy(monkeypatch):
    def boom(policy):
        raise AssertionError("spaCy was built for a text without a candidate")

    monkeypatch.setattr(red_flags, "_pipeline", boom)
    assert red_flags.find("How often should I get my eyes tested? " * 20, guardrails.load()) == []
