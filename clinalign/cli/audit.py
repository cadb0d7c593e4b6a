"""``clinalign audit`` (verify, head), ``clinalign lineage`` and ``clinalign loops``: reading the trail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from clinalign.cli.base import GROUPS, app, console, fail, open_store
from clinalign.schemas import ClinalignError

group = GROUPS[("audit",)]


@group.command("verify")
def audit_verify(
    kept: Path | None = typer.Option(
        None, "--head", help="A head saved earlier with `clinalign audit head`: check the chain still holds it."
    ),
) -> None:
    """Chain any events still pending, then recompute the chain, check its signed head and every
    judgement and adjudication against its event; name the first problem."""
    from clinalign.audit import seal, verify_chain

    store = open_store()
    kept_head = None
    if kept is not None:
        try:
            kept_head = json.loads(kept.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            fail(f"{kept}: not a saved head ({type(err).__name__})")
    seal(store)
    result = verify_chain(store, kept_head)
    if not result.ok:
        where = f" at event {result.first_broken}" if result.first_broken else ""
        fail(f"audit check failed{where}: {result.reason}")
    waiting = f"; {result.pending} recorded since, not yet chained" if result.pending else ""
    held = f"; the kept head ({kept_head['events']} events) is still held" if kept_head else ""
    console.print(
        f"audit chain intact: {result.events} events, signed head matches, "
        f"{result.rows_checked} judgements and decisions match their events{held}{waiting}"
    )


@group.command("head")
def audit_head(
    reset: bool = typer.Option(False, "--reset", help="Sign the present tip (a store made before signed heads)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the head to this file."),
) -> None:
    """Print the chain's signed head (events, hash): keep a copy where the database's users cannot
    write, and `audit verify --head FILE` proves later that nothing before it was cut or rewritten."""
    from clinalign import audit

    store = open_store()
    try:
        found = audit.reset_head(store, os.environ.get("USER", "cli")) if reset else audit.head(store)
    except ClinalignError as err:
        fail(str(err))
    if found is None:
        fail("the chain has no signed head yet (nothing was sealed)")
    text = json.dumps(found, indent=1)
    if out is not None:
        if out.is_dir():
            fail(f"--out {out} is a folder: name the file to write")
        out.write_text(text + "\n", encoding="utf-8")
    console.print(text, highlight=False)


@app.command()
def lineage(artifact_id: int = typer.Argument(..., help="Artifact id (see the report or a stage's output).")) -> None:
    """Print the runs and data behind an artifact, back to the source files."""
    from clinalign import audit

    try:
        with open_store().reading() as session:
            for step in audit.lineage(session, artifact_id):
                a, run = step.artifact, step.run
                made = (
                    f"run {run.id} {run.stage} ({run.code_version}, config {run.config_hash[:10]})"
                    if run
                    else "outside"
                )
                pad = "  " * step.depth
                sha = (a.sha256 or "-")[:12]
                console.print(f"{pad}artifact {a.id} [bold]{a.kind}[/] sha256:{sha} <- {made}", highlight=False)
                console.print(f"{pad}  {a.uri}", style="dim", highlight=False, soft_wrap=True)
    except ClinalignError as err:
        fail(str(err))


@app.command()
def loops() -> None:
    """Every loop in the store: which stages ran in it, and what it made last."""
    from sqlalchemy import func, select

    from clinalign.store import Run
    from clinalign.store import loops as found_loops

    table = Table("loop", "began", "runs", "stages (in order)", "last run", title="loops", title_justify="left")
    with open_store().reading() as session:
        ids = found_loops(session)
        runs = list(session.scalars(select(Run).where(Run.loop_id.in_(ids)).order_by(Run.id)))
        outside = session.scalar(select(func.count()).select_from(Run).where(Run.loop_id.is_(None)))
    by_loop: dict[int, list] = {}
    for run in runs:
        by_loop.setdefault(run.loop_id, []).append(run)
    for loop_id, group_runs in by_loop.items():
        stages = list(dict.fromkeys(r.stage for r in group_runs if r.status == "succeeded"))
        last = group_runs[-1]
        table.add_row(
            str(loop_id),
            f"{group_runs[0].started_at:%Y-%m-%d %H:%M} UTC",
            str(len(group_runs)),
            " > ".join(stages),
            f"{last.id} {last.stage} ({last.status})",
        )
    console.print(table)
    if outside:
        console.print(f"{outside} more run(s) in no loop: failed first ingests, file-mode de-identification")
