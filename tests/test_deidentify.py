"""De-identification: the stage, file mode, surrogates, Safe Harbor rules, evaluation, the NER plug-in."""

import json
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select

from clinalign.deidentify import Config, deidentify_text
from clinalign.deidentify.evaluation import read_gold, score
from clinalign.deidentify.surrogates import Surrogates, tag, zip3
from clinalign.deidentify.synthetic import generate
from clinalign.schemas import ClinalignError
from clinalign.store import DEIDENTIFIED, Record
from tests.conftest import ingest_bundled, run_stage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NOTE = (
    "Re: Maria Delgado, MRN 48213377, seen on June 23, 2026 and again on 06/30/2026. Maria is 93 years old, "
    "ZIP 03601. Call (818) 662-0116."
)


def test_redaction_uses_typed_tags_and_safe_harbor_rules():
    clean, spans = deidentify_text(NOTE, Config(), None)
    assert clean == (
        "Re: [NAME], MRN [MRN], seen on [DATE] and again on [DATE]. [NAME] is 90+ years old, ZIP 000**. Call [PHONE]."
    )
    assert {s.type for s in spans} == {"NAME", "MRN", "DATE", "AGE", "ZIP", "PHONE"}
    assert zip3("02118") == "021**" and zip3("03601") == "000**"  # 036 is a ZIP3 of 20,000 people or fewer
    assert tag("AGE", "95") == "90+"


def test_surrogates_are_consistent_within_a_patient_and_keep_intervals():
    first, _ = deidentify_text(NOTE, Config(strategy="surrogate"), Surrogates("patient-1", "secret"))
    again, _ = deidentify_text(NOTE, Config(strategy="surrogate"), Surrogates("patient-1", "secret"))
    other, _ = deidentify_text(NOTE, Config(strategy="surrogate"), Surrogates("patient-2", "secret"))
    assert first == again and first != other
    for secret in ("Maria", "Delgado", "48213377", "June 23", "06/30/2026", "662-0116"):
        assert secret not in first
    surrogate = Surrogates("patient-1", "secret")
    assert surrogate("NAME", "Maria Delgado").split()[0] == surrogate("NAME", "Maria")  # same first name
    from datetime import datetime

    a, b = surrogate("DATE", "06/23/2026"), surrogate("DATE", "06/30/2026")
    gap = datetime.strptime(b, "%m/%d/%Y") - datetime.strptime(a, "%m/%d/%Y")
    assert gap.days == 7 and a != "06/23/2026"  # shifted, interval kept
    assert surrogate("DATE", "sometime in spring") == "[DATE]"  # what cannot be parsed is removed
    assert "90+" in first and "000**" in first


def test_the_stage_removes_the_fake_phi_of_the_bundled_set(store, tmp_path):
    raw = [json.loads(line) for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()]
    ingest_bundled(store, tmp_path)
    metrics = run_stage(store, tmp_path, "deidentify")
    with store.session() as session:
        records = {r.external_id: r for r in session.scalars(select(Record))}
    assert len(records) == len(raw) and {r.deid_status for r in records.values()} == {DEIDENTIFIED}
    assert metrics["records_with_phi"] >= 40
    for case in raw:
        if case["prompt"].startswith(("Hi, this is", "Re:", "Member")):
            clean = records[case["id"]].prompt
            assert "[NAME]" in clean, case["id"]
            preamble = case["prompt"].split(". I")[0]
            for token in preamble.replace(",", " ").replace(".", " ").split():
                if sum(ch.isdigit() for ch in token) >= 4:
                    assert token not in clean, case["id"]
        assert records[case["id"]].reference == case["reference"], "a reference answer was altered"


def test_file_mode_keeps_fields_adds_spans_and_is_all_or_nothing(store, tmp_path):
    from clinalign import deidentify
    from clinalign.audit import track_run

    source = tmp_path / "notes.jsonl"
    source.write_text(
        json.dumps({"id": 1, "patient_id": "p1", "text": NOTE})
        + "\n"
        + json.dumps({"id": 2, "patient_id": "p1", "text": "Maria called back on (818) 662-0116."})
        + "\n"
    )
    target = tmp_path / "clean.jsonl"
    config = Config(strategy="surrogate")
    with track_run(store, "deidentify", config, tmp_path) as ctx:
        deidentify.run_file(ctx, config, source, target)
    rows = [json.loads(line) for line in target.open()]
    assert [r["id"] for r in rows] == [1, 2] and all("Maria" not in r["text"] for r in rows)
    assert rows[0]["phi_spans"][0] == {"start": 4, "end": 17, "type": "NAME"}
    first_name = rows[0]["text"].split(",")[0].removeprefix("Re: ").split()[0]
    assert rows[1]["text"].startswith(first_name)  # same patient, same surrogate

    bad = tmp_path / "bad.jsonl"
    out = tmp_path / "never.jsonl"
    for content, message in [
        (json.dumps({"text": NOTE}) + "\n" + json.dumps({"note": "x"}) + "\n", r"bad\.jsonl:2: field 'text'"),
        (json.dumps({"text": "   "}) + "\n", r"bad\.jsonl:1: field 'text': empty"),
        (
            json.dumps({"text": NOTE + " " + "x" * 300}) + "\n",
            r"bad\.jsonl:1: field 'text': longer than 300 characters",
        ),
        ('{"text": "Maria Delgado"\n', r"bad\.jsonl:1: malformed JSON"),
    ]:
        bad.write_text(content)
        with (
            pytest.raises(ClinalignError, match=message) as err,
            track_run(store, "deidentify", config, tmp_path) as ctx,
        ):
            deidentify.run_file(ctx, Config(max_chars=300), bad, out)
        assert "Maria" not in str(err.value) and "Delgado" not in str(err.value)
        assert not out.exists() and not (tmp_path / "never.jsonl.partial").exists()
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    with (
        pytest.raises(ClinalignError, match=r"bad\.jsonl:1: not valid UTF-8"),
        track_run(store, "deidentify", config, tmp_path) as ctx,
    ):
        deidentify.run_file(ctx, config, bad, out)


def test_evaluation_scores_strict_and_overlap(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        json.dumps(
            {
                "text": "Dr. Okafor saw Maria Delgado.",
                "spans": [{"start": 4, "end": 10, "type": "NAME"}, {"start": 15, "end": 28, "type": "NAME"}],
            }
        )
        + "\n"
    )
    docs = read_gold(gold)
    perfect = score(docs, lambda text: [s for s in __import__("clinalign.phi").phi.find(text)])
    assert perfect["per_type"]["NAME"]["strict"]["recall"] == 1.0 and perfect["leak_recall"] == 1.0
    from clinalign.phi import Span

    half = score(docs, lambda text: [Span(4, 8, "NAME", "x"), Span(0, 2, "DATE", "x")])
    name = half["per_type"]["NAME"]
    assert name["strict"]["recall"] == 0.0 and name["overlap"]["recall"] == 0.5 and name["overlap"]["precision"] == 1.0
    assert half["per_type"]["DATE"]["overlap"]["precision"] == 0.0
    assert half["leak_recall"] == 0.5
    assert name["overlap"]["f2"] == pytest.approx(5 * 0.5 / (4 * 1.0 + 0.5))


def test_synthetic_gold_is_exact_and_the_detector_meets_its_targets():
    docs = generate(300, seed=3)
    for doc in docs:
        for span in doc["spans"]:
            assert doc["text"][span["start"] : span["end"]].strip() == doc["text"][span["start"] : span["end"]]
    from clinalign import phi
    from clinalign.deidentify.evaluation import GoldDoc

    gold = [
        GoldDoc(d["text"], tuple(phi.Span(s["start"], s["end"], s["type"], "gold") for s in d["spans"])) for d in docs
    ]
    figures = score(gold, phi.find)
    assert figures["leak_recall"] >= 0.99
    for kind in ("NAME", "DATE", "MRN", "PHONE", "SSN", "EMAIL"):
        assert figures["per_type"][kind]["overlap"]["recall"] >= 0.99, kind
        assert figures["per_type"][kind]["overlap"]["precision"] >= 0.90, kind


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")
def test_public_sets_read_and_score():
    presidio = read_gold(SHARED / "presidio_synth_pii" / "synth_dataset_v2.json", "presidio")
    eds = read_gold(SHARED / "eds_pseudo_fictive_fr" / "train.jsonl", "eds")
    from clinalign import phi

    for docs in (presidio, eds):
        figures = score(docs[:300], phi.find)
        assert figures["gold_spans"] > 300 and 0.5 < figures["leak_recall"] <= 1.0


def test_a_site_ner_model_plugs_in_by_path(tmp_path):
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Zyxwv"}])
    nlp.to_disk(tmp_path / "site_ner")
    config = Config(ner_backend="spacy", ner_model=str(tmp_path / "site_ner"))
    text = "zyxwv Zyxwv came to clinic."  # not in any gazetteer, no cue: only the model knows
    assert deidentify_text(text, Config(), None)[0] == text
    assert deidentify_text(text, config, None)[0] == "zyxwv [NAME] came to clinic."
    with pytest.raises(ClinalignError, match="NER model not found"):
        deidentify_text(text, Config(ner_model=str(tmp_path / "missing")), None)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("NAME", "Maria Delgado"),
        ("LOCATION", "12 Oak Street"),
        ("LOCATION", "Boston"),
        ("ZIP", "02118"),
        ("DATE", "March 3, 2021"),
        ("AGE", "93"),
        ("PHONE", "(818) 662-0116"),
        ("FAX", "617-555-0199"),
        ("EMAIL", "jane.roe@example.org"),
        ("SSN", "219-09-9999"),
        ("MRN", "48213377"),
        ("HEALTH_PLAN", "ZX123456789"),
        ("ACCOUNT", "0620856156"),
        ("LICENSE", "AB1234563"),
        ("VEHICLE", "1HGCM82633A004352"),
        ("DEVICE", "SN-88123-X"),
        ("URL", "https://portal.example.org/p/123"),
        ("IP", "192.168.10.24"),
        ("BIOMETRIC", "FP-00918273"),
        ("ID", "7730918264"),
    ],
)
def test_every_type_gets_a_surrogate_that_differs_and_keeps_its_shape(kind, value):
    surrogate = Surrogates("patient-9", "secret")
    new = surrogate(kind, value)
    assert new != value and new == surrogate(kind, value)  # replaced, and the same again
    if kind in (
        "PHONE",
        "FAX",
        "SSN",
        "MRN",
        "HEALTH_PLAN",
        "ACCOUNT",
        "LICENSE",
        "VEHICLE",
        "DEVICE",
        "BIOMETRIC",
        "ID",
    ):
        assert [c.isdigit() for c in new] == [c.isdigit() for c in value]  # formats stay valid
    assert (new == "90+") == (kind == "AGE") and (new == "021**") == (kind == "ZIP")
