"""Benchmark: the guardrail policy's accuracy on red flags, and its latency.

    .venv/bin/python bench/guardrails.py [--texts 1000]

Accuracy: escalation recall and specificity on the labelled red-flag sets in ``tests/guardrails``
(the development set the rules were tuned on, and the held-out set written before the last round
of tuning and never tuned on), per kind of phrasing and of hard negative; and the escalation rate on
real consumer and educational questions from ``../shared/data`` (MedQuAD, MedicationQA), where
nothing is an emergency in progress, so every escalation there is a false alarm.

Serving (``--serve-seconds``): ``clinalign serve``'s app under uvicorn on loopback, in front of an
instant stand-in model, against a bare FastAPI route that returns the same model's answer: the
overhead of the rails, the store and the API per request (p50, p99), and a bounded load test with
concurrent clients (errors, and whether every answer that went out has a verdict in the store).

Latency: a full policy check (input rails on a request, output rails on an answer) on texts of
1,000 characters, pinned to one core, after a warm-up; p50 and p99 in milliseconds. Requests are
joined from consumer questions and labelled red-flag messages (so ConText runs on many of them);
answers are cut from MedQuAD's answers.
"""

import argparse
import concurrent.futures
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' live server helper

from clinalign import guardrails, stats  # noqa: E402

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
    recall, specificity = stats.proportion(tp, tp + fn), stats.proportion(tn, tn + fp)
    line = (
        f"recall {tp}/{tp + fn} = {recall['value']:.3f} [{recall['low']:.2f}, {recall['high']:.2f}], "
        f"specificity {tn}/{tn + fp} = {specificity['value']:.3f} [{specificity['low']:.2f}, {specificity['high']:.2f}]"
    )
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


class Instant:
    """A stand-in model that answers at once, so that what is timed is everything around the model."""

    name = "instant"

    def __init__(self, texts: list[str]):
        self.texts, self.i = texts, 0

    def complete(self, messages, sampling):
        from clinalign.serve.backends import Answer

        self.i += 1
        return Answer(self.texts[self.i % len(self.texts)], 20, 40)

    def stream(self, messages, sampling):
        yield self.complete(messages, sampling).text


def bare_app(backend):
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        answer = backend.complete(body["messages"], None)
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}}]}

    return app


def timed_requests(url: str, key: str, questions: list[str], n: int) -> list[float]:
    import httpx

    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(n):
            body = {"model": "instant", "messages": [{"role": "user", "content": questions[i % len(questions)]}]}
            start = time.perf_counter()
            http.post("/v1/chat/completions", json=body).raise_for_status()
            times.append(time.perf_counter() - start)
    return times


def serving(questions: list[str], answers: list[str], seconds: float, clients: int) -> None:
    import httpx
    from sqlalchemy import select

    from clinalign.serve import oversight
    from clinalign.serve.chat import create_app
    from clinalign.store import Interaction, Store
    from tests.live_server import serving as live

    store = Store.open(f"sqlite:///{tempfile.mkdtemp()}/serve.db")
    with store.session() as session:
        _key, key = oversight.add_key(session, "bench", "patient", 10**9, "bench")
    backend = Instant(answers)
    print(f"\n== serving: overhead over the bare model call, {len(questions)} sequential requests ==")
    with live(bare_app(backend)) as url:
        timed_requests(url, key, questions, 50)
        bare = timed_requests(url, key, questions, len(questions))
    with live(create_app(store, backend, guardrails.load())) as url:
        timed_requests(url, key, questions, 50)
        guarded = timed_requests(url, key, questions, len(questions))
        print(f"bare FastAPI route: {percentiles(bare)}")
        print(f"clinalign serve:    {percentiles(guarded)}")
        print(f"slowest: bare {max(bare) * 1e3:.2f} ms, clinalign serve {max(guarded) * 1e3:.2f} ms")
        for q in (0.5, 0.99):
            b, g = sorted(bare)[int(q * (len(bare) - 1))], sorted(guarded)[int(q * (len(guarded) - 1))]
            print(f"overhead p{int(q * 100)}: {(g - b) * 1e3:.2f} ms (target p99 <= 5 ms)")

        print(f"\n== load: {clients} concurrent clients for {seconds:.0f} s on loopback ==")
        with store.reading() as session:
            before = session.scalar(select(Interaction.id).order_by(Interaction.id.desc()).limit(1)) or 0
        deadline = time.monotonic() + seconds
        statuses: Counter = Counter()
        served_ids: list[int] = []
        unchecked = 0

        def client(n: int) -> None:
            nonlocal unchecked
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
                i = n
                while time.monotonic() < deadline:
                    body = {
                        "model": "instant",
                        "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                    }
                    response = http.post("/v1/chat/completions", json=body)
                    statuses[response.status_code] += 1
                    verdict = response.json().get("clinalign", {})
                    if response.status_code in (200, 202):
                        if "action" not in verdict:
                            unchecked += 1
                        served_ids.append(verdict.get("interaction"))
                    i += clients

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        with store.reading() as session:
            stored = dict(
                session.execute(select(Interaction.id, Interaction.action).where(Interaction.id > before)).all()
            )
        total = sum(statuses.values())
        errors = total - statuses[200] - statuses[202]
        missing = sum(1 for i in served_ids if stored.get(i) is None)
        print(f"requests: {total} ({total / seconds:.0f}/s), status codes: {dict(statuses)}")
        print(f"errors: {errors}; answers out without a verdict: {unchecked}; without a stored interaction: {missing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--serve-seconds", type=float, default=10.0, help="Length of the load test (0: skip serving).")
    parser.add_argument("--clients", type=int, default=8)
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
            rate = stats.proportion(escalated, len(texts))
            interval = f"[{rate['low']:.4f}, {rate['high']:.4f}]"
            print(f"{name}: {escalated}/{len(texts)} escalated = {rate['value']:.4f} {interval}")
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
    if args.serve_seconds > 0:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # the server and its clients share the cores
        questions = [of_length(requests_from, 300, rng) for _ in range(min(args.texts, 500))]
        serving(questions, [a[:600] for a in answers], args.serve_seconds, args.clients)


if __name__ == "__main__":
    main()
