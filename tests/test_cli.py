"""The command line: thin commands, one-line errors with exit code 2, never a stack trace."""

import json
import re

import pytest
from typer.testing import CliRunner

from clinalign.cli import app
from clinalign.ingest import BUNDLED_SCENARIOS
from clinalign.stages import STAGES

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CLINALIGN_DATABASE_URL", raising=False)
    return tmp_path


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert re.search(pattern, lines[0]), lines[0]


def test_every_stage_of_the_table_has_its_command_with_its_summary():
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for stage in STAGES:
        shown = runner.invoke(app, [*stage.command, "--help"], terminal_width=400)
        assert shown.exit_code == 0, stage.name
        assert " ".join(stage.summary.split()[:4]) in " ".join(shown.output.split()), stage.name
    for command in ("audit", "lineage", "loops", "demo", "users", "web"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_ingest_needs_a_path_and_reading_commands_need_a_store(env):
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 2 and "Missing argument" in result.output
    assert not (env / "data" / "clinalign.db").exists()  # nothing was ingested, no store made
    for command in (["audit", "verify"], ["lineage", "1"], ["loops"], ["curate"], ["users", "list"]):
        assert_one_line_error(runner.invoke(app, command), r"no clinalign store at .*--data-dir")
    assert not (env / "data" / "clinalign.db").exists()


def test_data_dir_names_the_store(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    assert runner.invoke(app, ["--data-dir", str(elsewhere), "ingest", str(BUNDLED_SCENARIOS)]).exit_code == 0
    assert (elsewhere / "clinalign.db").exists() and not (env / "data" / "clinalign.db").exists()
    verified = runner.invoke(app, ["--data-dir", str(elsewhere), "audit", "verify"])
    assert verified.exit_code == 0 and "intact" in verified.output


def test_stage_commands_run_on_the_store(env):
    assert runner.invoke(app, ["ingest", str(BUNDLED_SCENARIOS)]).exit_code == 0
    assert runner.invoke(app, ["deidentify"]).exit_code == 0
    result = runner.invoke(app, ["curate", "--set", "test_fraction=0.25"])
    assert result.exit_code == 0 and "dataset_version" in result.output
    assert (env / "data" / "clinalign.db").exists()
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0 and "intact" in verified.output
    listed = runner.invoke(app, ["loops"])
    assert listed.exit_code == 0 and all(stage in listed.output for stage in ("ingest", "deidentify", "curate"))
    head = runner.invoke(app, ["audit", "head", "--out", str(env / "head.json")])
    assert head.exit_code == 0 and json.loads((env / "head.json").read_text())["events"] > 0
    assert runner.invoke(app, ["ingest", str(env / "other.jsonl")]).exit_code == 2  # no such file: nothing added
    kept = runner.invoke(app, ["audit", "verify", "--head", str(env / "head.json")])
    assert kept.exit_code == 0, kept.output


def test_bad_input_is_one_line(env):
    bad = env / "cases.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "fine here"}) + "\n" + json.dumps({"id": "b"}) + "\n")
    assert_one_line_error(runner.invoke(app, ["ingest", str(bad)]), r"cases\.jsonl:2: field 'prompt'")
    assert_one_line_error(runner.invoke(app, ["curate", "--set", "tset_fraction=0.1"]), "tset_fraction")
    assert_one_line_error(
        runner.invoke(app, ["generate", "--model", str(env / "no-model")]),
        r"no prompt_set in the store yet: run `clinalign curate` first",
    )
    assert_one_line_error(runner.invoke(app, ["lineage", "424242"]), "artifact 424242 does not exist")
    missing = runner.invoke(app, ["train", "dpo"])
    assert_one_line_error(missing, "preference_dataset")


def test_users_add_then_campaign_then_stats_from_the_command_line(env):
    from clinalign.settings import Settings
    from clinalign.store import Store
    from tests.web.seed import seed

    settings = Settings()
    seed(Store.open(settings.url), settings.data_dir)
    added = runner.invoke(
        app, ["users", "add", "dr.first", "--role", "admin", "--password-stdin"], input="a long passphrase\n"
    )
    assert added.exit_code == 0 and "created dr.first (admin)" in added.output
    assert_one_line_error(
        runner.invoke(
            app, ["users", "add", "dr.first", "--role", "admin", "--password-stdin"], input="a long passphrase\n"
        ),
        "already exists",
    )
    assert_one_line_error(
        runner.invoke(app, ["users", "add", "x.y", "--role", "king", "--password-stdin"], input="a long passphrase\n"),
        "role",
    )
    assert "dr.first" in runner.invoke(app, ["users", "list"]).output
    made = runner.invoke(app, ["annotate", "campaign", "--name", "cli round", "--set", "overlap=2", "--set", "gold=2"])
    assert made.exit_code == 0, made.output
    assert re.search(r"items\s+│?\s*14", made.output)
    stats = runner.invoke(app, ["preferences", "stats", "--campaign", "cli round"])
    assert stats.exit_code == 0 and "alpha_choice" in stats.output and "per rater" in stats.output
    assert_one_line_error(runner.invoke(app, ["preferences", "stats", "--campaign", "nope"]), "no campaign named")
    assert "not computable yet" in stats.output  # nothing judged: no figure is made up
    assert "warning" not in made.output  # no routing, nothing unreachable
    routed = runner.invoke(
        app, ["annotate", "campaign", "--name", "routed", "--set", "overlap=2", "--set", "routing=true"]
    )
    assert routed.exit_code == 0, routed.output
    warnings = " ".join(routed.output.split())
    assert "warning: 4 cardiology items can reach only 1 active clinician(s) of that specialty, fewer than the 2" in (
        warnings
    )
    assert "warning: 4 dermatology items can reach only 0 active" in warnings
    assert "general items" not in warnings  # general items go to everyone: 4 clinicians


def test_the_demo_says_where_its_store_is_and_how_to_inspect_it(env, monkeypatch):
    from clinalign import demo

    workspace = env / "runs" / "demo-x"
    monkeypatch.setattr(demo, "run", lambda folder, on_stage, base, algorithm, overrides: workspace / "report.html")
    result = runner.invoke(app, ["demo", "--workspace", str(workspace)], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert f"clinalign --data-dir {workspace} audit verify" in result.output
    assert f"clinalign --data-dir {workspace} loops" in result.output
