"""``clinalign keys``: a key is shown once, stored as a hash, listed without itself, revoked at once."""

from sqlalchemy import select
from typer.testing import CliRunner

from clinalign.cli import app
from clinalign.serve import oversight
from clinalign.settings import Settings
from clinalign.store import ApiKey, Store

runner = CliRunner()


def test_keys_add_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    added = runner.invoke(app, ["keys", "add", "portal", "--audience", "clinician", "--per-minute", "30"])
    assert added.exit_code == 0, added.output
    secret = added.output.strip().splitlines()[-1]
    assert secret.startswith("cla-")
    store = Store.open(Settings().url)
    with store.reading() as session:
        [key] = session.scalars(select(ApiKey)).all()
        assert key.digest == oversight.digest(secret) and secret not in str(vars(key))
        assert oversight.key_for(session, secret).name == "portal"
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.output.split() == ["portal", "clinician", "30/min", "live"]
    again = runner.invoke(app, ["keys", "add", "portal"])
    assert again.exit_code == 2 and "exists already" in again.output
    bad = runner.invoke(app, ["keys", "add", "other", "--audience", "martian"])
    assert bad.exit_code == 2 and "audience" in bad.output
    assert runner.invoke(app, ["keys", "revoke", "portal"]).exit_code == 0
    with store.reading() as session:
        assert oversight.key_for(session, secret) is None
    assert runner.invoke(app, ["keys", "revoke", "nobody"]).exit_code == 2


def test_serve_refuses_bad_options_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path / "data"))
    both = runner.invoke(app, ["serve", "--model", str(tmp_path), "--upstream", "http://x/v1"])
    assert both.exit_code == 2 and "not several" in both.output
    nameless = runner.invoke(app, ["serve", "--upstream", "http://127.0.0.1:9/v1"])
    assert nameless.exit_code == 2 and "--upstream-model" in nameless.output
    bad = tmp_path / "policy.yaml"
    bad.write_text("name: x\n")
    policy = runner.invoke(
        app, ["serve", "--upstream", "http://127.0.0.1:9/v1", "--upstream-model", "m", "--policy", str(bad)]
    )
    assert policy.exit_code == 2 and "guardrail policy" in policy.output and "Traceback" not in policy.output
    unreleased = runner.invoke(app, ["serve"])
    assert unreleased.exit_code == 2 and "nothing is released" in unreleased.output
    missing = runner.invoke(app, ["serve", "--unreleased", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "model not found" in missing.output
