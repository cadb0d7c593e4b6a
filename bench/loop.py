"""Benchmark: the whole loop on its embedded defaults (the issue's target: ~10 minutes on 2 CPU cores).

    .venv/bin/python bench/loop.py [--tiny]

Prints each stage's wall time, the total, and the process's peak resident memory.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinalign import demo  # noqa: E402
from tests.tiny_model import TINY_LOOP, build_tiny  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="the tests' miniature loop on a tiny random model")
    args = parser.parse_args()
    timings: list[tuple[str, float]] = []
    started = time.perf_counter()

    def record(_number: int, stage: str, _run_id: int, _metrics: dict, seconds: float) -> None:
        timings.append((stage, seconds))

    with tempfile.TemporaryDirectory() as tmp:
        base, sizes = "smollm2", None
        if args.tiny:
            base, sizes = str(build_tiny(Path(tmp) / "tiny")), TINY_LOOP
        demo.run(Path(tmp) / "bench", on_stage=record, base=base, sizes=sizes)
    total = time.perf_counter() - started
    for stage, seconds in timings:
        print(f"{stage:<14} {seconds:7.1f} s")
    print(f"{'total':<14} {total:7.1f} s")
    print(f"peak RSS       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB")


if __name__ == "__main__":
    main()
