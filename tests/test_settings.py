from pathlib import Path

import pytest

from clinalign import curate, train
from clinalign.schemas import ClinalignError
from clinalign.settings import Settings, load_config
from clinalign.stages import STAGES
from clinalign.train import sft


def test_yaml_and_dotted_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("test_fraction: 0.3\nseed: 1\n")
    config = load_config(curate.Config, path, ["seed=9"])
    assert (config.test_fraction, config.seed) == (0.3, 9)
    nested = load_config(sft.Config, None, ["lora.r=8", "trl.num_train_epochs=1"])
    assert nested.lora.r == 8 and nested.lora.layers == 8 and nested.trl == {"num_train_epochs": 1}
    assert load_config(sft.Config, None, ["lora=null"]).lora is None  # every weight
    assert load_config(sft.Config, None, ["base=6"]).base == "6"  # an artifact id, though YAML reads a number


def test_unknown_keys_are_errors_that_name_the_key(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("test_fraktion: 0.3\n")
    with pytest.raises(ClinalignError, match="test_fraktion: Extra inputs are not permitted"):
        load_config(curate.Config, path)
    with pytest.raises(ClinalignError, match="lora.rank"):
        load_config(sft.Config, None, ["lora.rank=2"])


def test_wrong_type_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ClinalignError, match="seed"):
        load_config(curate.Config, None, ["seed=abc"])
    path = tmp_path / "bad.yaml"
    path.write_text("a: [unclosed\n")
    with pytest.raises(ClinalignError, match="not valid YAML"):
        load_config(curate.Config, path)
    with pytest.raises(ClinalignError, match="key=value"):
        load_config(curate.Config, None, ["seed"])


def test_every_shipped_config_file_validates_against_its_stage():
    repo = Path(__file__).resolve().parent.parent
    # configs/accelerate holds Accelerate's launch configs, not a stage's (tests/test_accelerate_configs.py)
    files = sorted(p for p in (repo / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
    assert files
    for path in files:
        folder = path.parent.relative_to(repo).as_posix()
        owners = [stage for stage in STAGES if stage.configs == folder]
        assert owners, f"{path}: no stage in the stage table keeps its configs in {folder}"
        for stage in owners:
            load_config(stage.load().Config, path)
    assert train  # the package itself imports cleanly


def test_database_url_from_either_variable(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("CLINALIGN_DATA_DIR", str(tmp_path))
    assert Settings().url == f"sqlite:///{tmp_path / 'clinalign.db'}"
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().url == "postgresql+psycopg://u@h/db"


def test_a_bad_value_or_an_out_of_range_one_is_a_clear_error():
    with pytest.raises(ClinalignError, match=r"--set test_fraction: not a valid YAML value"):
        load_config(curate.Config, None, ["test_fraction=["])
    with pytest.raises(ClinalignError, match="test_fraction"):
        load_config(curate.Config, None, ["test_fraction=yes"])  # YAML's yes is 1.0: no test split left
    from clinalign.annotate import panel

    with pytest.raises(ClinalignError, match="overlap"):
        load_config(panel.Config, None, ["overlap=0"])
    with pytest.raises(ClinalignError, match="a name of its own"):
        load_config(panel.Config, None, ["raters=[{name: a, noise: 1}, {name: a, noise: 2}]"])
