"""Benchmark: scoring pairs with the clinical reward model, through ``clinalign reward serve`` and through
the trainer's own held-out evaluation, on the same model and the same pairs, in one run.

    .venv/bin/python bench/reward.py [--pairs 512] [--batch 64]

The pairs are the bundled scenarios' questions (PHI scrubbed first) with their reference answers
against their unsafe variants. A reward model is trained on them (a few seconds), then:

* trainer: ``train/reward.py``'s evaluation path (features for every answer, then every member);
* service: the model served in a separate process (the CLI), scored over HTTP in ``--batch`` pairs per
  ``POST /score``, as an RL engine would call it.

Prints pairs/s for each (the target: the service at least as fast as the trainer's loop), the service's
first-request latency, and peak resident memory of this process and of the server.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from clinalign import embed, phi  # noqa: E402
from clinalign.ingest import BUNDLED_SCENARIOS  # noqa: E402
from clinalign.schemas import AXES  # noqa: E402
from clinalign.train import reward  # noqa: E402
from tests.live_server import free_port  # noqa: E402


def items(n: int) -> list[dict]:
    """``n`` decided items: a reference answer against one of its unsafe variants, sides alternating."""
    cases = [json.loads(line) for line in BUNDLED_SCENARIOS.read_text().splitlines() if line.strip()]
    pool = [
        (phi.scrub(c["prompt"])[0], c["reference"], v["text"])
        for c in cases
        if c.get("reference")
        for v in c["variants"]
    ]
    rows = []
    for i in range(n):
        question, good, bad = pool[i % len(pool)]
        a, b = (good, bad) if i % 2 else (bad, good)
        row = {"task_id": i, "split": "test" if i % 4 == 0 else "train", "prompt": question, "answer_a": a}
        row.update(answer_b=b, consensus="B" if a == bad else "A", margin=0.5)
        row.update({f"{side}_{axis}": None for side in "ab" for axis in AXES})
        rows.append(row)
    return rows


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    rows = items(args.pairs)
    encoder = embed.default_path()
    config = reward.Config(members=5, steps=100)
    with tempfile.TemporaryDirectory() as tmp:
        data = reward._Data(rows, encoder)
        net, drawn = reward._train(data, config)
        folder = reward.save(Path(tmp) / "model", net, config, reward._temperature(net, data, config, drawn), encoder)

        started = time.perf_counter()  # the trainer's evaluation: features of every answer, then every member
        evaluated = reward._Data(rows, encoder)
        reward._figures(net, evaluated, config, 1.0, [], {})
        trainer = len(rows) / (time.perf_counter() - started)

        port = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "clinalign"),
                "reward",
                "serve",
                "--model",
                str(folder),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the reward service did not start") from None
                    time.sleep(0.2)
            first = time.perf_counter()
            post(url + "/score", {"prompts": [rows[0]["prompt"]], "answers": [rows[0]["answer_a"]]})
            first = time.perf_counter() - first
            started = time.perf_counter()
            scored = 0
            for start in range(0, len(rows), args.batch):
                chunk = rows[start : start + args.batch]
                prompts = [r["prompt"] for r in chunk for _ in (0, 1)]
                answers = [r[f"answer_{s}"] for r in chunk for s in ("a", "b")]
                scored += len(post(url + "/score", {"prompts": prompts, "answers": answers})["aggregate"]) // 2
            service = scored / (time.perf_counter() - started)
            server_peak = peak_mib(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    print(f"pairs                {len(rows)}")
    print(f"trainer eval loop    {trainer:8.1f} pairs/s")
    print(f"service (/score)     {service:8.1f} pairs/s   (batches of {args.batch} pairs; {service / trainer:.2f}x)")
    print(f"service first call   {first * 1000:8.1f} ms")
    print(f"peak RSS bench       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MiB")
    print(f"peak RSS service     {server_peak:8.0f} MiB")


if __name__ == "__main__":
    main()
