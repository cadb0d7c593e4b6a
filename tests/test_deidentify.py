"""De-identification (first version): each supported identifier is gone, clinical text survives."""

import json
from importlib import resources

import pytest
from sqlalchemy import select

from clinalign.deidentify import redact
from clinalign.store import DEIDENTIFIED, Record
from tests.conftest import run_stage


@pytest.mark.parametrize(
    ("text", "secret", "tag"),
    [
        ("Hi, this is Maria Delgado, date of birth 03/14/1962.", "Maria Delgado", "[NAME]"),
        ("Hi, this is Maria Delgado, date of birth 03/14/1962.", "03/14/1962", "[DATE]"),
        ("Re: Tom O'Neil, MRN 48213377, seen today.", "48213377", "[MRN]"),
        ("Re: Tom O'Neil, MRN 48213377, seen today.", "Tom O'Neil", "[NAME]"),
        ("Seen on June 23, 2026 at the Lakeview clinic.", "June 23, 2026", "[DATE]"),
        ("Seen on June 23, 2026 at the Lakeview clinic.", "Lakeview", "[LOCATION]"),
        ("Call me on (818) 662-0116 tonight.", "662-0116", "[PHONE]"),
        ("Call me on (007) 782-7584 tonight.", "782-7584", "[PHONE]"),  # not a valid plan number: still PHI
        ("Member ID ZX123456789 needs review.", "ZX123456789", "[PLAN_ID]"),
        ("Write to jane.roe@example.org about it.", "jane.roe@example.org", "[EMAIL]"),
        ("SSN: 219-09-9999 on file.", "219-09-9999", "[SSN]"),
        ("Portal https://portal.example.org/p/123 shows it.", "portal.example.org", "[URL]"),
        ("Logged in from 192.168.10.24 yesterday.", "192.168.10.24", "[IP]"),
        ("Referred by Dr. Okafor for follow-up.", "Okafor", "[NAME]"),
        ("RE: JOHN SMITH, MRN 12345678.", "JOHN SMITH", "[NAME]"),
    ],
)
def test_each_identifier_is_replaced_by_its_tag(text, secret, tag):
    clean, counts = redact(text)
    assert secret not in clean
    assert tag in clean
    assert sum(counts.values()) >= 1


def test_clinical_language_survives():
    text = (
        "Call 911 now: chest pain with sweating can be a heart attack. Take levothyroxine 30 minutes "
        "before breakfast. Blood pressure of 182/112 needs review today. This is medically necessary."
    )
    clean, counts = redact(text)
    assert clean == text and not counts


def test_the_stage_removes_the_fake_phi_of_the_bundled_set(store, tmp_path):
    raw = [json.loads(line) for line in (resources.files("clinalign") / "data" / "scenarios.jsonl").open()]
    run_stage(store, tmp_path, "ingest")
    metrics = run_stage(store, tmp_path, "deidentify")
    with store.session() as session:
        records = {r.external_id: r for r in session.scalars(select(Record))}
    assert len(records) == len(raw) and {r.deid_status for r in records.values()} == {DEIDENTIFIED}
    assert metrics["records_with_phi"] >= 40
    for case in raw:
        if case["prompt"].startswith(("Hi, this is", "Re:", "Member")):
            clean = records[case["id"]].prompt
            assert "[NAME]" in clean, case["id"]
            # Every digit run of 4+ in the PHI preamble (phones, MRNs, member ids, dates) is gone.
            preamble = case["prompt"].split(". I")[0]
            for token in preamble.replace(",", " ").replace(".", " ").split():
                if sum(ch.isdigit() for ch in token) >= 4:
                    assert token not in clean, case["id"]
        assert records[case["id"]].reference == case["reference"], "a reference answer was altered"
