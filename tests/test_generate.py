"""Generation: N answers per prompt, recorded against the model artifact; clear model errors."""

import pytest
from sqlalchemy import func, select

from clinalign import lm
from clinalign.schemas import ClinalignError
from clinalign.store import Candidate, Prompt, Run


def test_every_prompt_gets_n_candidates(loop_store):
    with loop_store.session() as session:
        run = session.scalar(select(Run).where(Run.stage == "generate"))
        n = run.config["n_candidates"]
        per_prompt = session.execute(
            select(Candidate.prompt_id, func.count()).where(Candidate.run_id == run.id).group_by(Candidate.prompt_id)
        ).all()
        prompts = session.scalar(select(func.count()).select_from(Prompt))
    assert len(per_prompt) == prompts and {c for _, c in per_prompt} == {n}


def test_a_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(ClinalignError, match=r"^model not found: .*nowhere") as err:
        lm.load(str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)
    with pytest.raises(ClinalignError, match="model not found"):
        lm.load("some-org/not-in-the-cache")


def test_the_stage_refuses_a_missing_model_folder(loop_store, tmp_path):
    from tests.conftest import run_stage

    with pytest.raises(ClinalignError, match="model not found"):
        run_stage(loop_store, tmp_path, "generate", model=str(tmp_path / "missing"))
