"""De-identification: the stage, file mode, surrogates, Safe Harbor rules, evaluation, the NER plug-in."""

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import select

from clinalign import stages
from clinalign.deidentify import Config, deidentify_text
from clinalign.deidentify.evaluation import read_gold, score
from clinalign.deidentify.surrogates import Surrogates, tag, zip3
from clinalign.deidentify.synthetic import generate
from clinalign.schemas import ClinalignError
from clinalign.store import DEIDENTIFIED, QUARANTINED, REJECTED, AuditEvent, RawRecord, Record
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
    with store.session() as session:  # the raw ids stay in quarantine; records carry pseudonyms
        pairs = session.execute(select(RawRecord.external_id, Record).join(Record, Record.raw_id == RawRecord.id))
        records = {raw_id: record for raw_id, record in pairs}
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


def test_file_mode_pseudonymises_ids_adds_spans_and_is_all_or_nothing(store, tmp_path):
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
    assert all("Maria" not in r["text"] for r in rows)
    assert rows[0]["id"] != rows[1]["id"] and rows[0]["patient_id"] == rows[1]["patient_id"] != "p1"
    surrogate = rows[0]["text"].split(",")[0].removeprefix("Re: ")
    assert rows[0]["phi_spans"][0] == {"start": 4, "end": 4 + len(surrogate), "type": "NAME"}  # in the new text
    for row in rows:
        assert all(0 <= s["start"] < s["end"] <= len(row["text"]) for s in row["phi_spans"])
    first_name = surrogate.split()[0]
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


def test_file_mode_deidentifies_every_field_and_says_what_it_did_with_each(store, tmp_path):
    from clinalign import deidentify
    from clinalign.audit import track_run

    line = {
        "id": "note-48213377",
        "patient_id": "48213377",
        "PatientName": "Maria Delgado",
        "dob": "03/02/1931",
        "email": "maria.delgado@example.org",
        "text": NOTE,
        "title": "Follow-up for Maria Delgado, MRN 48213377",
        "ward": 7,
        "visit_no": 12,
        "flags": ["Maria"],
        "note_type": "progress note",
        "guardian": "Okafor",
        "accession": "A-2231",
    }
    source = tmp_path / "notes.jsonl"
    source.write_text(json.dumps(line) + "\n" + json.dumps({**line, "id": "note-2"}) + "\n")
    target = tmp_path / "clean.jsonl"
    config = Config(keep=["note_type", "visit_no"], identifier_fields={"guardian": "NAME"}, id_fields=["accession"])
    with track_run(store, "deidentify", config, tmp_path) as ctx:
        metrics = deidentify.run_file(ctx, config, source, target)
    first, second = [json.loads(row) for row in target.open()]
    out = json.dumps(first)
    for secret in ("Maria", "Delgado", "48213377", "1931", "example.org", "Okafor", "2231"):
        assert secret not in out, secret
    assert first["patient_id"] == second["patient_id"] and first["id"] != second["id"]
    assert first["id"] == deidentify.pseudonym(store.secret("pseudonyms"), "note-48213377", "id")
    assert first["PatientName"] == "[NAME]" and first["dob"] == "[DATE]" and first["email"] == "[EMAIL]"
    assert first["title"] == "Follow-up for [NAME], MRN [MRN]"
    assert first["note_type"] == "progress note" and first["visit_no"] == 12
    assert "ward" not in first and "flags" not in first
    assert metrics["fields"] == {
        "kept": {"note_type": 2, "visit_no": 2},
        "pseudonymised": {"accession": 2, "id": 2, "patient_id": 2},
        "deidentified": {"text": 2, "title": 2},
        "replaced": {"PatientName": 2, "dob": 2, "email": 2, "guardian": 2},
        "dropped": {"flags": 2, "ward": 2},
    }

    config = Config(strategy="surrogate")
    with track_run(store, "deidentify", config, tmp_path) as ctx:
        deidentify.run_file(ctx, config, source, target)
    first, second = [json.loads(row) for row in target.open()]
    assert "Maria" not in first["PatientName"] and first["PatientName"] == second["PatientName"] != "[NAME]"
    assert first["dob"] != "03/02/1931" and first["dob"].count("/") == 2  # shifted, still a date
    with pytest.raises(ValueError, match="'text' is always de-identified"):
        Config(keep=["text"])
    with pytest.raises(ValueError, match="'guardian': not a PHI type"):
        Config(identifier_fields={"guardian": "PERSON"})
    kept = Config(keep=["patient_id", "dob"])  # the user vouches for these: built-in lists give way
    with track_run(store, "deidentify", kept, tmp_path) as ctx:
        deidentify.run_file(ctx, kept, source, target)
    first = json.loads(target.open().readline())
    assert (first["patient_id"], first["dob"]) == ("48213377", "03/02/1931")


def write_cases(path: Path, cases: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8")
    return path


SHORT = {"id": "MRN 48213377 Maria Delgado", "prompt": "Is a flu shot useful for me this year?", "reference": "Yes."}


def test_records_carry_a_keyed_pseudonym_never_the_raw_id(store, tmp_path):
    from clinalign.deidentify import pseudonym

    ingest = write_cases(tmp_path / "cases.jsonl", [SHORT])
    run_stage(store, tmp_path, "ingest", path=str(ingest))
    run_stage(store, tmp_path, "deidentify")
    with store.session() as session:
        raw = session.scalar(select(RawRecord))
        record = session.scalar(select(Record))
    assert raw.external_id == SHORT["id"]  # the quarantine keeps what arrived
    key = store.secret("pseudonyms")
    assert record.external_id == pseudonym(key, SHORT["id"]) and record.external_id.startswith("case-")
    assert "48213377" not in record.external_id and len(record.external_id) == len("case-") + 16
    assert pseudonym(key, SHORT["id"]) != pseudonym(b"another store's key", SHORT["id"])
    assert pseudonym(key, "c2") != pseudonym(key, SHORT["id"])


def test_a_record_that_cannot_be_deidentified_names_itself_and_can_be_rejected(store, tmp_path):
    from clinalign.deidentify import reject

    long_case = {"id": "c2", "prompt": "Is a flu shot useful?", "variants": [{"kind": "other", "text": "Maria " * 60}]}
    longer = {**long_case, "id": "c4", "reference": "Delgado " * 50}
    ingest = write_cases(tmp_path / "cases.jsonl", [SHORT, long_case, {**SHORT, "id": "c3"}, longer])
    run_stage(store, tmp_path, "ingest", path=str(ingest))
    with store.session() as session:
        raw_id, other = session.scalars(
            select(RawRecord.id).where(RawRecord.external_id.in_(["c2", "c4"])).order_by(RawRecord.id)
        )
    with pytest.raises(ClinalignError) as err:
        run_stage(store, tmp_path, "deidentify", max_chars=300)
    message = str(err.value)
    assert f"raw record {raw_id} (cases.jsonl:2)" in message and "field 'variants.0.text'" in message
    assert "max_chars" in message and f"clinalign deidentify reject {raw_id}" in message
    assert f"raw records {other} cannot be de-identified either" in message  # all of them at once
    assert "Maria" not in message and "Delgado" not in message
    with store.session() as session:
        assert session.scalar(select(Record)) is None  # nothing half-written

    reject(store, raw_id, "variant pasted from a chart; resend without it", "alice")
    reject(store, other, "the same", "alice")
    metrics = run_stage(store, tmp_path, "deidentify", max_chars=300)
    assert metrics["records"] == 2
    with store.session() as session:
        rejected = session.get(RawRecord, raw_id)
        assert (rejected.status, rejected.payload) == (REJECTED, {})
        assert rejected.rejected_reason == "variant pasted from a chart; resend without it"
        # The id may be PHI too; its keyed pseudonym stays (hex: "c2" may occur in it by chance).
        assert re.fullmatch(r"rejected-\d+:case-[0-9a-f]{16}", rejected.external_id), rejected.external_id
        assert session.scalar(select(Record).where(Record.raw_id == raw_id)) is None
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "deidentify.reject"))
        assert event.actor == "alice" and event.subject == f"raw_record:{raw_id}"
        assert "chart" not in event.payload  # the reason is words: it stays with the record, not the trail
        done = session.scalar(select(RawRecord.id).where(RawRecord.external_id == "c3"))

    with pytest.raises(ClinalignError, match=f"raw record {raw_id} is already rejected"):
        reject(store, raw_id, "again", "alice")
    with pytest.raises(ClinalignError, match=f"raw record {done} is already de-identified"):
        reject(store, done, "too late", "alice")
    with pytest.raises(ClinalignError, match="no raw record 424242"):
        reject(store, 424242, "missing", "alice")
    again = write_cases(tmp_path / "fixed.jsonl", [{**long_case, "variants": []}])
    loop = stages.run_stage("ingest", store, tmp_path, {"path": str(again)}).run_id  # back under its id
    assert stages.run_stage("deidentify", store, tmp_path, loop=loop).metrics["records"] == 1


def test_a_rejection_needs_a_short_reason(store, tmp_path):
    from clinalign.deidentify import reject

    run_stage(store, tmp_path, "ingest", path=str(write_cases(tmp_path / "cases.jsonl", [SHORT])))
    with store.session() as session:
        raw_id = session.scalar(select(RawRecord.id))
    for reason, message in [("  ", "a reason is required"), ("x" * 501, "longer than 500 characters")]:
        with pytest.raises(ClinalignError, match=message):
            reject(store, raw_id, reason, "alice")
    with store.session() as session:
        assert session.get(RawRecord, raw_id).status == QUARANTINED


def test_a_stored_specialty_outside_the_vocabulary_never_reaches_a_record(store, tmp_path):
    run_stage(store, tmp_path, "ingest", path=str(write_cases(tmp_path / "cases.jsonl", [SHORT])))
    with store.session() as session:  # as a store ingested before specialties had a vocabulary
        raw = session.scalar(select(RawRecord))
        raw.payload = {**raw.payload, "specialty": "Maria Delgado, MRN 48213377"}
        raw_id = raw.id
    with pytest.raises(ClinalignError) as err:
        run_stage(store, tmp_path, "deidentify")
    message = str(err.value)
    assert f"raw record {raw_id} (cases.jsonl:1): field 'specialty'" in message
    assert f"clinalign deidentify reject {raw_id}" in message and "Maria" not in message


def test_the_reject_command_and_file_mode_s_out_folder(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from clinalign.cli import app

    runner = CliRunner()
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    cases = write_cases(tmp_path / "cases.jsonl", [SHORT])
    assert runner.invoke(app, ["ingest", str(cases)]).exit_code == 0
    result = runner.invoke(app, ["deidentify", "reject", "1", "--reason", "consent withdrawn"])
    assert result.exit_code == 0 and "raw record 1 rejected" in result.output, result.output
    again = runner.invoke(app, ["deidentify", "reject", "1", "--reason", "consent withdrawn"])
    assert again.exit_code == 2 and "already rejected" in again.output and "Traceback" not in again.output
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    (tmp_path / "folder").mkdir()
    folder = runner.invoke(app, ["deidentify", "--in", str(cases), "--out", str(tmp_path / "folder")])
    assert folder.exit_code == 2 and "is a folder" in folder.output


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


def test_a_surrogate_name_never_holds_the_name_it_replaces():
    for i in range(2000):  # Faker draws "Maria" or "Mariah" for "Maria" now and then: never kept
        new = Surrogates(f"patient-{i}", "secret")("NAME", "Maria Delgado").casefold()
        assert "maria" not in new and "delgado" not in new, new
