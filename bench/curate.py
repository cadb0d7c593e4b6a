"""Benchmark: near-duplicate search as the corpus grows (MinHash/LSH should stay near-linear).

    .venv/bin/python bench/curate.py

Builds corpora of synthetic prompts, a tenth of them re-sent with a word changed or a phrase added,
and prints for each size the seconds, prompts per second and the share of planted near-duplicates
found (recall), and how many other prompts were dropped as near-duplicates (template notes that
differ only in their fake identifiers are near-duplicates too).
"""

import random
import time

from clinalign.curate import Config, select_records
from clinalign.deidentify.synthetic import generate
from clinalign.store import Record


def corpus(n: int, seed: int = 0) -> tuple[list[Record], set[int]]:
    rng = random.Random(seed)
    notes = generate(n, seed)
    records, planted = [], set()
    for note in notes:
        records.append(Record(id=len(records) + 1, prompt=note["text"], risk="routine", reference="r"))
        if rng.random() < 0.1:
            words = note["text"].split()
            words[rng.randrange(len(words))] = rng.choice(["today", "again", "urgently", "now"])
            text = " ".join(words) if rng.random() < 0.5 else note["text"] + " Please advise."
            records.append(Record(id=len(records) + 1, prompt=text, risk="routine", reference="r"))
            planted.add(len(records))
    return records, planted


def main() -> None:
    print(f"{'prompts':>8} {'seconds':>8} {'prompts/s':>10} {'recall':>7} {'other near-dups':>16}")
    for n in (1000, 4000, 16000):
        records, planted = corpus(n)
        started = time.perf_counter()
        kept, _ = select_records(records, Config(require_reference=False))
        seconds = time.perf_counter() - started
        kept_ids = {r.id for r in kept}
        found = sum(1 for i in planted if i not in kept_ids) / len(planted)
        others = sum(1 for r in records if r.id not in planted and r.id not in kept_ids)
        print(f"{len(records):8} {seconds:8.2f} {len(records) / seconds:10.0f} {found:7.3f} {others:16}")


if __name__ == "__main__":
    main()
