"""Progress for long work: rich bars when a shell turned them on (``shown``), silence otherwise.

Reads: nothing.  Writes: progress bars to the terminal's stderr, only inside ``shown``.

Stages call ``track`` or ``task``; the CLI wraps a command in ``shown`` so bars go to the terminal's
stderr. Library code never prints, and bars carry counts and stage names only, never record text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
_progress: Progress | None = None


@contextmanager
def shown(console: Console | None = None) -> Iterator[None]:
    """Show bars for everything tracked inside the block."""
    global _progress
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    _progress = progress
    try:
        with progress:
            yield
    finally:
        _progress = None


@contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar with ``total`` steps; the block gets a function that advances it."""
    if _progress is None:
        yield lambda _n=1: None
        return
    progress = _progress
    task_id = progress.add_task(description, total=total)
    yield lambda n=1: progress.advance(task_id, n)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as advance:
        for item in items:
            yield item
            advance(1)
