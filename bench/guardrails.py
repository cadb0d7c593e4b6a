"""Benchmark: the guardrail policy's accuracy on red flags, and its latency.

    .venv/bin/python bench/guardrails.py [--texts 1000]

Accuracy: escalation recall and specificity on the labelled red-flag sets in ``tests/guardrails``
(the development set the rules were tuned on, and the held-out set written before the last round
of tuning and never tuned on), per kind of phrasing and of hard negative; and the escalation rate on
real consumer and educational questions from ``../shared/data`` (MedQuAD, MedicationQA), where
nothing is an emergency in progress, so every escalation there is a false alarm.

Latency: a full policy check (input rails on a request, output rails on an answer) on texts of
1,000 characters, pinned to one core, after a warm-up; p50 and p99 in milliseconds. Requests are
joined from consumer questions and labelled red-flag messages (so ConText runs on many of them);
answers are cut from MedQuAD's answers.
"""

import argparse
import gzip
import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from clinalign import guardrails

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "guardrails"
SHARED = ROOT.parent / "shared" / "data"


def labelled(name: str) -> list[dict]:
    return [json.loads(line) for line in (LABELLED / name).read_text().splitlines() if line.strip()]


def accuracy(items: list[dict]) -> tuple[str, dict[str, str]]:
    counts = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for item in items:
        fired = guardrails.check_input(item["text"]).disposition != "routine"
        positive = item["expect"] != "none"
        counts[(positive, fired)] += 1
        by_kind[item["kind"]][fired == positive] += 1
    tp, fn = counts[(True, True)], counts[(True, False)]
    tn, fp = counts[(False, False)], counts[(False, True)]
    line = f"recall {tp}/{tp + fn} = {tp / (tp + fn):.3f}, specificity {tn}/{tn + fp} = {tn / (tn + fp):.3f}"
    kinds = {kind: f"{c[True]}/{c[True] + c[False]}" for kind, c in sorted(by_kind.items())}
    return line, kinds


def public_questions() -> dict[str, list[str]]:
    found = {}
    medquad = SHARED / "medquad" / "medquad_qa_with_answers.jsonl.gz"
    if medquad.is_file():
        with gzip.open(medquad, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        found["MedQuAD questions"] = [r["question"] for r in rows]
        found["MedQuAD answers"] = [r["answer"] for r in rows if r.get("answer")]
    medicationqa = SHARED / "medicationqa" / "medicationqa.jsonl"
    if medicationqa.is_file():
        rows = [json.loads(line) for line in medicationqa.read_text().splitlines() if line.strip()]
        key = next(k for k in rows[0] if "question" in k.lower())
        found["MedicationQA questions"] = [r[key] for r in rows if r.get(key)]
    return found


def of_length(pieces: list[str], length: int, rng: random.Random) -> str:
    text = ""
    while len(text) < length:
        text += " " + rng.choice(pieces).strip()
    return text[:length]


def percentiles(times: list[float]) -> str:
    times = sorted(times)
    p50 = statistics.median(times) * 1e3
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))] * 1e3
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    policy = guardrails.load()
    print(f"policy {policy.id}")

    print("\n== red-flag escalation on the labelled sets ==")
    for name in ("red_flags.jsonl", "red_flags_holdout.jsonl"):
        line, kinds = accuracy(labelled(name))
        print(f"{name}: {line}")
        print("  right, by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))

    public = public_questions()
    print("\n== false alarms on public questions (none is an emergency in progress) ==")
    for name in ("MedQuAD questions", "MedicationQA questions"):
        if name in public:
            texts = public[name]
            escalated = sum(guardrails.check_input(t).escalate for t in texts)
            print(f"{name}: {escalated}/{len(texts)} escalated = {escalated / len(texts):.4f}")
    if not public:
        print("(../shared/data not found: skipped)")

    rng = random.Random(0)
    requests_from = [i["text"] for i in labelled("red_flags.jsonl")] + public.get("MedicationQA questions", [])
    answers_from = public.get("MedQuAD answers") or [i["text"] for i in labelled("red_flags.jsonl")]
    requests = [of_length(requests_from, 1000, rng) for _ in range(args.texts)]
    answers = [of_length(answers_from, 1000, rng) for _ in range(args.texts)]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    for text in requests[:50] + answers[:50]:  # warm-up: spaCy and the compiled patterns are built once
        guardrails.check_output(text, request=guardrails.check_input(text))

    consumer = public.get("MedicationQA questions")
    sets = {"red-flag-dense requests": requests}
    if consumer:
        sets["consumer questions only"] = [of_length(consumer, 1000, rng) for _ in range(args.texts)]
    for name, texts in sets.items():
        timings: dict[str, list[float]] = defaultdict(list)
        for request, answer in zip(texts, answers, strict=True):
            start = time.perf_counter()
            verdict = guardrails.check_input(request)
            middle = time.perf_counter()
            guardrails.check_output(answer, request=verdict)
            end = time.perf_counter()
            timings["input rails (request)"].append(middle - start)
            timings["output rails (answer)"].append(end - middle)
            timings["request + answer"].append(end - start)
        with_candidates = sum(bool(guardrails.red_flags._candidates(t, policy)) for t in texts)
        print(f"\n== latency, {name} and MedQuAD answers, {args.texts} of each at 1,000 characters, one core ==")
        print(f"requests with a red-flag candidate (ConText runs): {with_candidates}/{len(texts)}")
        for part, times in timings.items():
            print(f"{part}: {percentiles(times)}")
    print("\ntarget: a full policy check p99 < 2 ms")


if __name__ == "__main__":
    main()
