"""Benchmark: the whole loop on its embedded defaults (the issue's target: ~10 minutes on 2 CPU cores).

    .venv/bin/python bench/loop.py [--quick]

Prints each stage's wall time, the total, and the process's peak resident memory.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from clinalign import demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the miniature loop the tests use")
    args = parser.parse_args()
    timings: list[tuple[str, float]] = []
    started = time.perf_counter()

    def record(_number: int, stage: str, _run_id: int, _metrics: dict, seconds: float) -> None:
        timings.append((stage, seconds))

    with tempfile.TemporaryDirectory() as tmp:
        demo.run(Path(tmp) / "bench", quick=args.quick, on_stage=record)
    total = time.perf_counter() - started
    for stage, seconds in timings:
        print(f"{stage:<14} {seconds:7.1f} s")
    print(f"{'total':<14} {total:7.1f} s")
    print(f"peak RSS       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB")


if __name__ == "__main__":
    main()
