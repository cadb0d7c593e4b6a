"""Curation: duplicates, quality filters, a risk-stratified split, content-hashed versions."""

from sqlalchemy import select

from clinalign.curate import Config, normalise, select_records, stratified_split
from clinalign.store import Prompt, Record
from tests.conftest import ingest_bundled, run_stage


def rec(i: int, prompt: str, risk: str = "routine", reference: str | None = "ref") -> Record:
    return Record(id=i, prompt=prompt, risk=risk, reference=reference)


def test_exact_and_normalised_duplicates_and_quality_filters():
    records = [
        rec(1, "I have a fever and a stiff neck."),
        rec(2, "I have a fever and a stiff neck."),
        rec(3, "  I HAVE a fever, and a stiff   neck!"),
        rec(4, "short"),
        rec(5, "12345 67890 12345 67890 1234"),
        rec(6, "What is the right dose for me?", reference=None),
        rec(7, "Patient [NAME] asks about flu shots."),
    ]
    kept, dropped = select_records(records, Config())
    assert [r.id for r in kept] == [1, 7]
    assert dropped == {
        "exact_duplicate": 1,
        "normalised_duplicate": 1,
        "too_short": 1,
        "low_alpha": 1,
        "no_reference": 1,
    }
    assert normalise("Re: [NAME],  seen!") == "re [name] seen"


def test_near_duplicates_are_found_without_comparing_all_pairs():
    base = "I have crushing chest pain spreading to my left arm with sweating for 20 minutes. What should I do?"
    records = [
        rec(1, base),
        rec(2, base.replace("20 minutes", "25 minutes")),  # one word changed
        rec(3, base + " Please answer quickly."),  # a few words added
        rec(4, "I have a fever and a stiff neck since yesterday and a rash on my legs. What should I do?"),
    ]
    kept, dropped = select_records(records, Config())
    assert [r.id for r in kept] == [1, 4] and dropped == {"near_duplicate": 2}
    kept, dropped = select_records(records, Config(near_duplicate_threshold=None))
    assert len(kept) == 4 and dropped == {}


def test_the_split_is_stratified_by_risk_and_reproducible():
    records = [
        rec(i, f"prompt {i}", risk) for i, risk in enumerate(["emergency"] * 10 + ["urgent"] * 5 + ["routine"] * 1)
    ]
    risks = {r.id: r.risk for r in records}
    split = stratified_split(risks, 0.2, seed=1)
    assert split == stratified_split(risks, 0.2, seed=1)
    tests = [r.risk for r in records if split[r.id] == "test"]
    assert tests.count("emergency") == 2 and tests.count("urgent") == 1 and tests.count("routine") == 0


def test_rules_label_only_what_the_case_left_unlabelled_and_propose_icd10_codes():
    from clinalign.curate import label

    labelled = rec(1, "I have crushing chest pain and sweating.", risk="urgent")
    labelled.specialty = "cardiology"
    assert label(labelled)[:2] == ("cardiology", "urgent")  # a person's label is never overridden
    bare = rec(2, "My asthma is worse and my inhaler is not helping; I can hardly speak.", risk="unknown")
    bare.specialty = "unknown"
    specialty, risk, found = label(bare)
    assert (specialty, risk) == ("pulmonology", "emergency")
    assert found["specialty_source"] == found["risk_source"] == "rules"
    assert [c["code"] for c in found["icd10"]] == ["J45"]
    heart = rec(3, "Could this be a heart attack?", risk="unknown")
    heart.specialty = "unknown"
    assert label(heart)[2]["icd10"][0] == {"code": "I21", "description": "Acute myocardial infarction"}


def test_general_given_by_the_data_is_a_label_and_only_a_missing_specialty_is_labelled(store, tmp_path):
    import json

    from clinalign.curate import label

    general = rec(1, "I have crushing chest pain and sweating.", risk="emergency")
    general.specialty = "general"
    assert label(general)[0] == "general" and label(general)[2]["specialty_source"] == "case"

    prompt = "I have crushing chest pain spreading to my arm. What should I do?"
    cases = [
        {"id": "g", "prompt": prompt, "reference": "Call 911.", "specialty": "General", "risk": "emergency"},
        {
            "id": "u",
            "prompt": "My heart races and I feel palpitations.",
            "reference": "See a doctor.",
            "risk": "urgent",
        },
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    run_stage(store, tmp_path, "ingest", path=str(path))
    run_stage(store, tmp_path, "deidentify")
    with store.session() as session:
        assert sorted(session.scalars(select(Record.specialty))) == ["general", "unknown"]
    metrics = run_stage(store, tmp_path, "curate", embedding_model=None, test_fraction=0.0)
    with store.session() as session:
        labelled = {p.text[:12]: (p.specialty, p.tags["specialty_source"]) for p in session.scalars(select(Prompt))}
    assert labelled == {"I have crush": ("general", "case"), "My heart rac": ("cardiology", "rules")}
    assert metrics["tagged"]["specialty_by_rules"] == 1


def test_the_rules_agree_with_the_bundled_labels_most_of_the_time():
    import json
    from importlib import resources

    from clinalign.curate import tags

    cases = [json.loads(line) for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()]
    emergencies = [c for c in cases if c["risk"] == "emergency"]
    recall = sum(tags.risk(c["prompt"]) == "emergency" for c in emergencies) / len(emergencies)
    accuracy = sum(tags.specialty(c["prompt"]) == c["specialty"] for c in cases) / len(cases)
    assert recall >= 0.7 and accuracy >= 0.65, (recall, accuracy)


def test_neighbours_label_unlabelled_cases_better_than_rules_and_never_lower_risk():
    import json
    import random
    from importlib import resources

    from clinalign.curate import label, label_from_neighbours

    cases = [json.loads(line) for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()]
    random.Random(0).shuffle(cases)
    records = []
    for i, case in enumerate(cases):
        record = rec(i, case["prompt"], risk=case["risk"])
        record.specialty = case["specialty"]
        if i < 40:  # these arrive without labels
            record.specialty, record.risk = "unknown", "unknown"
        records.append(record)
    labels = {r.id: label(r) for r in records}
    rules_specialty = sum(labels[i][0] == cases[i]["specialty"] for i in range(40)) / 40
    rules_risk = {i: labels[i][1] for i in range(40)}
    label_from_neighbours(records, labels, "minilm")
    neighbours_specialty = sum(labels[i][0] == cases[i]["specialty"] for i in range(40)) / 40
    assert neighbours_specialty > rules_specialty and neighbours_specialty >= 0.9
    severity = {"routine": 0, "urgent": 1, "emergency": 2}
    assert all(severity[labels[i][1]] >= severity[rules_risk[i]] for i in range(40))
    emergencies = [i for i in range(40) if cases[i]["risk"] == "emergency"]
    assert all(labels[i][1] == "emergency" for i in emergencies)
    assert {labels[i][2]["risk_source"] for i in range(40)} == {"rules+embedding"}
    assert labels[50][2]["risk_source"] == "case"  # labelled cases are untouched


def test_records_that_were_not_deidentified_never_reach_a_prompt_set(store, tmp_path):
    ingest_bundled(store, tmp_path)
    run_stage(store, tmp_path, "deidentify")
    with store.session() as session:
        held_back = session.scalars(select(Record).order_by(Record.id).limit(5)).all()
        for record in held_back:
            record.deid_status = "pending"  # as if de-identification had not finished for them
        held_ids = {r.id for r in held_back}
    run_stage(store, tmp_path, "curate")
    with store.session() as session:
        curated = set(session.scalars(select(Prompt.record_id)))
    assert curated and not curated & held_ids


def test_the_stage_writes_one_version_per_content(store, tmp_path):
    ingest_bundled(store, tmp_path)
    run_stage(store, tmp_path, "deidentify")
    first = run_stage(store, tmp_path, "curate")
    again = run_stage(store, tmp_path, "curate")
    assert first["dataset_version"] == again["dataset_version"]
    assert first["dropped"].get("normalised_duplicate", 0) >= 3
    other = run_stage(store, tmp_path, "curate", seed=99)
    assert other["dataset_version"] != first["dataset_version"]
    with store.session() as session:
        versions = set(session.scalars(select(Prompt.dataset_version)))
        test_risks = set(session.scalars(select(Prompt.risk).where(Prompt.split == "test")))
    assert len(versions) == 2
    assert test_risks == {"emergency", "urgent", "routine"}
