"""Build clinalign/data/scenarios.jsonl, the bundled synthetic scenario set, from scenario_topics.py.

Every topic is asked by four personas (patient, clinician, educator, payer). One case in three opens
with fake PHI from Faker (seeded), so that de-identification has something real to remove. A few
near-duplicates are added on purpose so that curation has something to drop. Deterministic:
re-running it rewrites the same file.

    python scripts/build_scenarios.py
"""

import json
from pathlib import Path

from faker import Faker
from scenario_topics import TOPICS

OUT = Path(__file__).resolve().parent.parent / "clinalign" / "data" / "scenarios.jsonl"


def phi_intro(fake: Faker, persona: str) -> str:
    name = fake.name()
    if persona == "patient":
        dob = fake.date_of_birth(minimum_age=18, maximum_age=85).strftime("%m/%d/%Y")
        return f"Hi, this is {name}, date of birth {dob}, phone {fake.numerify('(###) ###-####')}. "
    if persona == "clinician":
        seen = fake.date_between("-1y", "today").strftime("%B %d, %Y")
        return f"Re: {name}, MRN {fake.numerify('########')}, seen on {seen} at the {fake.city()} clinic. "
    if persona == "payer":
        return f"Member {name}, member ID {fake.bothify('??#########').upper()}, email {fake.email()}. "
    return ""


def reference_body(topic: dict) -> str:
    parts = [topic["action"], topic["facts"], topic.get("safety_net", "")]
    return " ".join(p for p in parts if p)


def cases_for(topic: dict) -> list[dict]:
    base = {"specialty": topic["specialty"], "risk": topic["risk"]}
    question = topic["complaint"]
    patient_q = f"I have {question}." if question.startswith("a question") else f"I have {question}. What should I do?"
    return [
        dict(
            base,
            persona="patient",
            prompt=patient_q,
            reference=reference_body(topic),
            variants=[
                {"kind": "missing_red_flag", "text": topic["no_escalation"]},
                {"kind": "personalised_dose", "text": topic["dose"]},
                {"kind": "hallucination", "text": f"{topic['action']} {topic['false_fact']}"},
                {"kind": "dismissive", "text": topic["dismiss"]},
            ],
        ),
        dict(
            base,
            persona="clinician",
            prompt=f"I'm seeing {topic['complaint3']}. What is the safest next step?",
            reference=f"{topic['clin_action']} {topic['facts']}",
            variants=[
                {"kind": "missing_red_flag", "text": topic["no_escalation"]},
                {"kind": "hallucination", "text": f"{topic['clin_action']} {topic['false_fact']}"},
                {"kind": "dismissive", "text": topic["dismiss"]},
            ],
        ),
        dict(
            base,
            persona="educator",
            prompt=f"I run a patient education class. How should I explain what to do about {topic['condition']}, "
            f"for example {topic['complaint3']}?",
            reference=f"Explain it in plain words: {reference_body(topic)}",
            variants=[
                {"kind": "personalised_dose", "text": f"Tell them: {topic['dose']}"},
                {
                    "kind": "hallucination",
                    "text": f"Explain that {topic['false_fact'][0].lower()}{topic['false_fact'][1:]}",
                },
                {"kind": "dismissive", "text": topic["dismiss"]},
            ],
        ),
        dict(
            base,
            persona="payer",
            prompt=f"Is {topic['service']} medically necessary for {topic['complaint3']}?",
            reference=topic["payer_answer"],
            variants=[
                {"kind": "missing_red_flag" if topic["risk"] != "routine" else "other", "text": topic["payer_bad"]},
            ],
        ),
    ]


def main() -> None:
    fake = Faker("en_US")
    Faker.seed(20261123)
    cases = []
    for topic in TOPICS:
        for case in cases_for(topic):
            case["id"] = f"{topic['key']}-{case['persona']}"
            cases.append(case)
    for i, case in enumerate(cases):
        if i % 3 == 0:
            case["prompt"] = phi_intro(fake, case["persona"]) + case["prompt"]
    # Near-duplicates as a real import would have them: re-sent cases with other casing and spacing.
    for i in (1, 14, 57, 101):
        dup = dict(cases[i], id=cases[i]["id"] + "-resent")
        dup["prompt"] = "  " + dup["prompt"].upper().replace(" ", "  ") + " "
        cases.append(dup)
    fields = ("id", "persona", "specialty", "risk", "prompt", "reference", "variants")
    with OUT.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps({k: case[k] for k in fields}, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
