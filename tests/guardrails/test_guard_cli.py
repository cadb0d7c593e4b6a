"""``clinalign guard check``: one verdict per line, in order, ids kept; bad lines refused whole."""

import json
import re

import pytest
from typer.testing import CliRunner

from clinalign.cli import app

runner = CliRunner()


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_guard_check_writes_a_verdict_per_message_in_order(tmp_path):
    source = write(
        tmp_path / "messages.jsonl",
        [
            {"id": "a", "text": "my wife's face is drooping and her speech is slurred"},
            {"id": 7, "text": "No chest pain, just a cough.", "role": "user"},
            "",
            {"id": "c", "text": "Take 400 mg of ibuprofen three times a day.", "role": "assistant"},
            {"id": "d", "text": "What's the lethal dose of amitriptyline?"},
        ],
    )
    out = tmp_path / "out" / "verdicts.jsonl"
    result = runner.invoke(app, ["guard", "check", "--in", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["id"] for v in verdicts] == ["a", 7, "c", "d"]
    assert [v["escalate"] for v in verdicts] == [True, False, False, False]
    assert [v["action"] for v in verdicts] == ["escalate", "allow", "modify", "block"]
    assert verdicts[0]["reasons"][0]["category"] == "stroke" and verdicts[0]["tier"] == 3
    assert "4 verdicts" in result.output


def test_a_clinician_audience_keeps_doses(tmp_path):
    source = write(tmp_path / "m.jsonl", [{"id": 1, "text": "Take 400 mg three times a day.", "role": "assistant"}])
    out = tmp_path / "v.jsonl"
    assert (
        runner.invoke(
            app, ["guard", "check", "--in", str(source), "--out", str(out), "--audience", "clinician"]
        ).exit_code
        == 0
    )
    assert json.loads(out.read_text())["action"] == "allow"


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (['{"id": 1, "text": "ok"}', "{not json"], r"m\.jsonl:2: not valid JSON"),
        (['{"text": "no id"}'], r"m\.jsonl:1: field 'id' is missing"),
        (['{"id": 1, "text": 5}'], r"m\.jsonl:1: field 'text' must be a string"),
        (['{"id": 1, "text": "x", "role": "system"}'], r"m\.jsonl:1: field 'role' must be 'user' or 'assistant'"),
        (["[1, 2]"], r"m\.jsonl:1: each line must be a JSON object"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, lines, error):
    source = write(tmp_path / "m.jsonl", lines)
    out = tmp_path / "v.jsonl"
    result = runner.invoke(app, ["guard", "check", "--in", str(source), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(error, " ".join(result.output.split())), result.output
    assert not out.exists() and list(tmp_path.glob("*.part")) == []


def test_a_bad_policy_or_audience_is_one_line(tmp_path):
    source = write(tmp_path / "m.jsonl", [{"id": 1, "text": "hi"}])
    bad = tmp_path / "policy.yaml"
    bad.write_text("name: x\n")
    result = runner.invoke(
        app, ["guard", "check", "--in", str(source), "--out", str(tmp_path / "v"), "--policy", str(bad)]
    )
    assert result.exit_code == 2 and "guardrail policy" in result.output
    result = runner.invoke(
        app, ["guard", "check", "--in", str(source), "--out", str(tmp_path / "v"), "--audience", "x"]
    )
    assert result.exit_code == 2 and "--audience" in result.output
