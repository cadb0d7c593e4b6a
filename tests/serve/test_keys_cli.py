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
