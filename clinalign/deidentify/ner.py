"""Optional ML backend: a site's own NER model, given by path, adds spans to the rule-based ones.

* ``spacy``: a spaCy pipeline folder, run through Presidio's ``SpacyNlpEngine`` (no download: the
  folder is loaded as it is);
* ``transformers``: a Hugging Face token-classification model folder, through ``transformers.pipeline``.
Entity labels map to clinalign's types; labels that are not PHI (organisations, products) are dropped.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from clinalign.phi import Span
from clinalign.schemas import ClinalignError

LABELS = {
    "PERSON": "NAME",
    "PER": "NAME",
    "NAME": "NAME",
    "PATIENT": "NAME",
    "DOCTOR": "NAME",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "LOCATION": "LOCATION",
    "FAC": "LOCATION",
    "HOSPITAL": "LOCATION",
    "CITY": "LOCATION",
    "DATE": "DATE",
    "AGE": "AGE",
    "PHONE": "PHONE",
    "EMAIL": "EMAIL",
    "ID": "ID",
    "IDNUM": "ID",
}


@cache
def _spacy(path: str):
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": path}])
    engine.load()
    return engine


@cache
def _transformers(path: str):
    from transformers import pipeline

    return pipeline("token-classification", model=path, tokenizer=path, aggregation_strategy="simple", device=-1)


def find(text: str, backend: str, path: str) -> list[Span]:
    if not Path(path).exists():
        raise ClinalignError(f"NER model not found: {path} (give a local folder)")
    if backend == "spacy":
        entities = _spacy(path).process_text(text, "en").entities
        found = [(e.start_char, e.end_char, e.label_) for e in entities]
    elif backend == "transformers":
        found = [(e["start"], e["end"], e["entity_group"]) for e in _transformers(path)(text)]
    else:
        raise ClinalignError(f"unknown NER backend {backend!r}: use spacy or transformers")
    return [
        Span(start, end, LABELS[label.upper()], f"ner_{backend}")
        for start, end, label in found
        if label.upper() in LABELS and end > start
    ]
