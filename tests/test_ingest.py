"""Ingest: validation that names file, line and field; all-or-nothing storage; no PHI in errors."""

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from clinalign.ingest import read_cases
from clinalign.schemas import ClinalignError
from clinalign.store import RawRecord, Run
from tests.conftest import ingest_bundled, run_stage

GOOD = {"id": "c1", "prompt": "My chest hurts, what should I do?", "reference": "Call 911.", "risk": "emergency"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def count(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(RawRecord))


def test_the_bundled_scenarios_ingest(store, tmp_path):
    metrics = ingest_bundled(store, tmp_path)
    assert metrics["ingested"] == count(store) >= 150
    with store.session() as session:
        payloads = [r.payload for r in session.scalars(select(RawRecord))]
    personas = {p["persona"] for p in payloads}
    risks = {p["risk"] for p in payloads}
    assert sum(1 for p in payloads if p["variants"]) == len(payloads)  # every case has a bad variant
    assert personas == {"patient", "clinician", "educator", "payer"}
    assert risks == {"emergency", "urgent", "routine"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "c2", "prompt": "x"', r"bad\.jsonl:2: malformed JSON"),
        (json.dumps({"id": "c2"}), r"bad\.jsonl:2: field 'prompt': Field required"),
        (json.dumps({"id": "c2", "prompt": 5}), r"bad\.jsonl:2: field 'prompt': Input should be a valid string"),
        (json.dumps({"id": "c2", "prompt": "x", "risk": "severe"}), r"bad\.jsonl:2: field 'risk'"),
        (
            json.dumps({"id": "c2", "prompt": "x", "variants": [{"kind": "dismissive"}]}),
            r"bad\.jsonl:2: field 'variants\.0\.text'",
        ),
        (json.dumps({"id": "c2", "prompt": "x", "colour": "red"}), r"bad\.jsonl:2: field 'colour': Extra inputs"),
        (json.dumps({"id": "c1", "prompt": "again"}), r"bad\.jsonl:2: field 'id': duplicate of line 1"),
        ("[1, 2]", r"bad\.jsonl:2: expected an object"),
        (json.dumps({"id": "c2", "prompt": "x", "specialty": "Maria Delgado"}), r"bad\.jsonl:2: field 'specialty'"),
        (
            json.dumps({"id": "c2", "prompt": "x", "variants": [{"kind": "other", "text": "x" * 20_001}]}),
            r"bad\.jsonl:2: field 'variants\.0\.text': .*longer than 20000 characters",
        ),
        (
            json.dumps({"id": "c2", "prompt": "x", "variants": [{"kind": "other", "text": "y"}] * 21}),
            r"bad\.jsonl:2: field 'variants': .*at most 20",
        ),
        (json.dumps({"id": "x" * 201, "prompt": "x"}), r"bad\.jsonl:2: field 'id'"),
    ],
)
def test_bad_lines_stop_the_ingest_and_store_nothing(store, tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, line, {**GOOD, "id": "c3"}])
    with pytest.raises(ClinalignError, match=message):
        run_stage(store, tmp_path, "ingest", path=str(path))
    assert count(store) == 0
    with store.session() as session:
        assert session.scalar(select(Run.status).order_by(Run.id.desc())) == "failed"


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "c2", "prompt": "caf\xe9"}\n')
    with pytest.raises(ClinalignError, match=r"latin\.jsonl:2: not valid UTF-8"):
        read_cases(path)


def test_errors_never_quote_the_value(tmp_path):
    secret = "Jane Roe, SSN 123-45-6789"
    path = write_jsonl(tmp_path / "phi.jsonl", [{"id": "c1", "prompt": secret, "risk": secret}])
    with pytest.raises(ClinalignError) as err:
        read_cases(path)
    assert "Jane" not in str(err.value) and "6789" not in str(err.value)


def test_csv_and_parquet_inputs(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "cases.csv"
    csv_path.write_text(
        "id,prompt,reference,risk,variants\n"
        'a1,"Fever and stiff neck, what now?",Go to the emergency department.,emergency,'
        '"[{""kind"": ""dismissive"", ""text"": ""It is nothing.""}]"\n',
        encoding="utf-8",
    )
    pq.write_table(
        pa.Table.from_pylist([{"id": "b1", "prompt": "Is a flu shot useful?", "risk": "routine"}]),
        tmp_path / "cases.parquet",
    )
    run_stage(store, tmp_path, "ingest", path=str(csv_path))
    run_stage(store, tmp_path, "ingest", path=str(tmp_path / "cases.parquet"))
    with store.session() as session:
        rows = {r.external_id: r.payload for r in session.scalars(select(RawRecord))}
    assert rows["a1"]["variants"] == [{"kind": "dismissive", "text": "It is nothing."}]
    assert rows["b1"]["risk"] == "routine"


def test_the_same_file_or_the_same_ids_twice_are_refused(store, tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [GOOD])
    run_stage(store, tmp_path, "ingest", path=str(path))
    with pytest.raises(ClinalignError, match="already ingested"):
        run_stage(store, tmp_path, "ingest", path=str(path))
    other = write_jsonl(tmp_path / "two.jsonl", [{**GOOD, "prompt": "changed text"}])
    with pytest.raises(ClinalignError, match=r"two\.jsonl:1: field 'id': a case with this id is already in the store"):
        run_stage(store, tmp_path, "ingest", path=str(other))
    assert count(store) == 1


def test_specialty_is_normalised_and_a_missing_one_is_unknown(store, tmp_path):
    cases = [{**GOOD, "specialty": "Cardiology"}, {**GOOD, "id": "c2"}, {**GOOD, "id": "c3", "specialty": None}]
    path = write_jsonl(tmp_path / "s.jsonl", cases)
    run_stage(store, tmp_path, "ingest", path=str(path))
    with store.session() as session:
        rows = {r.external_id: r.payload for r in session.scalars(select(RawRecord))}
    assert rows["c1"]["specialty"] == "cardiology" and rows["c2"]["specialty"] == rows["c3"]["specialty"] == "unknown"


def test_csv_header_problems_are_the_header_s(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_text("id,reference\na1,Call 911.\n", encoding="utf-8")
    with pytest.raises(ClinalignError, match=r"cases\.csv:1: missing column 'prompt'$"):
        read_cases(path)
    path.write_text("id,prompt,colour\na1,Is a flu shot useful?,red\n", encoding="utf-8")
    with pytest.raises(ClinalignError, match=r"cases\.csv:1: unknown column 'colour'"):
        read_cases(path)
    path.write_text("id,prompt,prompt\na1,Is a flu shot useful?,again\n", encoding="utf-8")
    with pytest.raises(ClinalignError, match=r"cases\.csv:1: column 'prompt' appears twice"):
        read_cases(path)
    path.write_text("id,prompt\na1,Is a flu shot useful?,Jane Roe\n", encoding="utf-8")
    with pytest.raises(ClinalignError, match=r"cases\.csv:2: more cells than the header has columns") as err:
        read_cases(path)
    assert "Jane" not in str(err.value)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ClinalignError, match=r"cases\.csv: no cases found"):
        read_cases(path)


def test_csv_with_a_byte_order_mark_and_quoted_line_breaks(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        'id,prompt,specialty\r\na1,"Line one\r\nline two",Neurology\r\na2,Second case here,\r\n'.encode("utf-8-sig")
    )
    cases = read_cases(path)
    assert [(n, c.id) for n, c in cases] == [(2, "a1"), (4, "a2")]  # each case's first line
    assert cases[0][1].prompt == "Line one\nline two" and cases[0][1].specialty == "neurology"
    assert cases[1][1].specialty == "unknown"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(json.dumps(GOOD).encode("utf-8-sig") + b"\n")
    assert read_cases(jsonl)[0][1].id == "c1"


def test_a_corrupt_or_incomplete_parquet_file_is_one_error_naming_it(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from clinalign.cli import app

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(ClinalignError, match=r"broken\.parquet: not a readable Parquet file"):
        read_cases(broken)
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["ingest", str(broken)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and "broken.parquet: not a readable Parquet file" in lines[0], result.output
    no_prompt = tmp_path / "no_prompt.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "b1", "question": "Is a flu shot useful?"}]), no_prompt)
    with pytest.raises(ClinalignError, match=r"no_prompt\.parquet: missing column 'prompt'"):
        read_cases(no_prompt)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "cases.txt").write_text("x")
    with pytest.raises(ClinalignError, match="cannot tell the format"):
        read_cases(tmp_path / "cases.txt")
    with pytest.raises(ClinalignError, match="input file not found"):
        read_cases(tmp_path / "nope.jsonl")
