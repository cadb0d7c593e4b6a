"""Benchmark: clinalign's de-identification against Presidio's offline default, on the same notes.

    .venv/bin/python bench/deidentify.py [--notes 1000]

Corpus: synthetic clinical notes (``clinalign deidentify synth``) joined into notes of about 500
characters, every PHI span annotated. Presidio runs its default English recognizers with a blank
spaCy pipeline (tokens and lemmas for its context words, no NER model: none can be downloaded here)
and tldextract's bundled suffix list instead of a network fetch. Prints notes per second (best of
several passes) and recall (overlap, type-aware) on names, dates and identifiers, precision, and the
cost per character for
growing note length and corpus size (it should stay flat: linear cost).
"""

import argparse
import tempfile
import time
from pathlib import Path

from clinalign import phi
from clinalign.deidentify.evaluation import GoldDoc, score
from clinalign.deidentify.synthetic import generate

GROUPS = {"names": {"NAME"}, "dates": {"DATE", "AGE"}, "locations": {"LOCATION"}}
# Every other type is an identifier (fax and ZIP are scored as phone and location).
GROUPS["identifiers"] = set(phi.TYPES) - set().union(*GROUPS.values()) - {"FAX", "ZIP"}
PRESIDIO_TYPES = {
    "PERSON": "NAME",
    "DATE_TIME": "DATE",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "US_SSN": "SSN",
    "US_ITIN": "SSN",
    "CREDIT_CARD": "ACCOUNT",
    "IBAN_CODE": "ACCOUNT",
    "US_BANK_NUMBER": "ACCOUNT",
    "IP_ADDRESS": "IP",
    "URL": "URL",
    "US_DRIVER_LICENSE": "LICENSE",
    "MEDICAL_LICENSE": "LICENSE",
    "US_PASSPORT": "LICENSE",
    "NHS": "MRN",
    "LOCATION": "LOCATION",
    "MAC_ADDRESS": "DEVICE",
    "UUID": "ID",
    "CRYPTO": "ACCOUNT",
}


def corpus(n_notes: int, length: int, seed: int = 1) -> list[GoldDoc]:
    """Join generated notes into notes of about ``length`` characters, shifting their spans."""
    docs, text, spans = [], "", []
    for note in generate(n_notes * max(1, length // 150) * 2, seed):
        if len(text) >= length:
            docs.append(GoldDoc(text, tuple(spans)))
            text, spans = "", []
            if len(docs) == n_notes:
                break
        offset = len(text) + (1 if text else 0)
        text = f"{text} {note['text']}" if text else note["text"]
        spans += [phi.Span(s["start"] + offset, s["end"] + offset, s["type"], "gold") for s in note["spans"]]
    return docs


def presidio_detector():
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    folder = Path(tempfile.mkdtemp()) / "blank_en"
    spacy.blank("en").to_disk(folder)
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(folder)}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])

    def detect(text: str) -> list[phi.Span]:
        return [
            phi.Span(r.start, r.end, PRESIDIO_TYPES[r.entity_type], "presidio")
            for r in analyzer.analyze(text=text, language="en")
            if r.entity_type in PRESIDIO_TYPES
        ]

    return detect


def timed(docs: list[GoldDoc], detect, repeats: int) -> tuple[dict, float]:
    """Detection alone is timed, best of ``repeats`` passes (the least disturbed by the rest of the
    machine); scoring runs afterwards on the stored predictions."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predictions = {doc.text: detect(doc.text) for doc in docs}
        best = min(best, time.perf_counter() - started)
    return score(docs, predictions.__getitem__), best


def group_figures(figures: dict) -> dict[str, tuple[float | None, float | None]]:
    out = {}
    for group, kinds in GROUPS.items():
        rows = [figures["per_type"][k] for k in kinds if k in figures["per_type"]]
        gold = sum(r["gold"] for r in rows)
        found = sum(round((r["overlap"]["recall"] or 0) * r["gold"]) for r in rows)
        predicted = sum(r["predicted"] for r in rows)
        correct = sum(round((r["overlap"]["precision"] or 0) * r["predicted"]) for r in rows)
        out[group] = (found / gold if gold else None, correct / predicted if predicted else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notes", type=int, default=1000)
    args = parser.parse_args()
    docs = corpus(args.notes, 500)
    chars = sum(len(d.text) for d in docs)
    print(
        f"corpus: {len(docs)} notes, {chars / len(docs):.0f} characters each on average, "
        f"{sum(len(d.spans) for d in docs)} PHI spans"
    )
    phi.find("warm up: Dr. Smith")
    ours, ours_s = timed(docs, phi.find, repeats=5)
    presidio = presidio_detector()
    presidio("warm up")
    theirs, theirs_s = timed(docs, presidio, repeats=3)
    print(
        f"\n{'':12} {'notes/s':>9} {'recall names':>13} {'dates':>7} {'identifiers':>12} {'locations':>10} "
        f"{'precision (all)':>16}"
    )
    for name, figures, seconds in (("clinalign", ours, ours_s), ("presidio", theirs, theirs_s)):
        groups = group_figures(figures)
        predicted = sum(r["predicted"] for r in figures["per_type"].values())
        correct = sum(round((r["overlap"]["precision"] or 0) * r["predicted"]) for r in figures["per_type"].values())

        def f(v):
            return "   -" if v is None else f"{v:.3f}"

        print(
            f"{name:12} {len(docs) / seconds:9.0f} {f(groups['names'][0]):>13} {f(groups['dates'][0]):>7} "
            f"{f(groups['identifiers'][0]):>12} {f(groups['locations'][0]):>10} {f(correct / predicted):>16}"
        )
    print(f"\nthroughput ratio clinalign / presidio: {theirs_s / ours_s:.1f}x")
    print("\ncost per character (clinalign), growing note length and corpus size:")
    for n_notes, length in ((200, 500), (200, 2000), (200, 8000), (400, 2000), (800, 2000)):
        sample = corpus(n_notes, length, seed=2)
        text_chars = sum(len(d.text) for d in sample)
        started = time.perf_counter()
        for doc in sample:
            phi.find(doc.text)
        elapsed = time.perf_counter() - started
        print(f"  {n_notes:4} notes x {length:5} chars: {elapsed / text_chars * 1e6:6.2f} us/char, {elapsed:6.2f} s")


if __name__ == "__main__":
    main()
