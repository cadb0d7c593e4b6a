"""``clinalign annotate`` (the simulated panel, campaigns, queue order) and ``clinalign preferences``."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from clinalign.cli.base import (
    GROUPS,
    ConfigOpt,
    LoopOpt,
    SetOpt,
    console,
    err_console,
    fail,
    open_store,
    render_metrics,
    run,
    stage_command,
)
from clinalign.schemas import ClinalignError


@stage_command("annotate")
def annotate(ctx: typer.Context, config: Path | None = ConfigOpt, set_: list[str] = SetOpt, loop: int | None = LoopOpt):
    if ctx.invoked_subcommand is None:
        run("annotate", config, set_, loop)


@stage_command("annotate.campaign")
def annotate_campaign(
    name: str = typer.Option(..., "--name", help="A unique campaign name."),
    actor: str = typer.Option(os.environ.get("USER", "cli"), help="Who creates it (for the audit trail)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config, e.g. configs/annotate/campaign/round-1.yaml."
    ),
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    result = run("annotate.campaign", config, set_ + [f"name={name}"], loop, actor=actor)
    for specialty, reach in result.metrics.get("unreachable", {}).items():
        err_console.print(
            f"[bold yellow]warning:[/] {reach['items']} {specialty} items can reach only {reach['clinicians']} "
            f"active clinician(s) of that specialty, fewer than the {reach['overlap']} each needs: they "
            "will wait for judgements nobody can give (add clinicians with that specialty, or turn routing off)",
            highlight=False,
            soft_wrap=True,
        )


@stage_command("annotate.prioritise")
def annotate_prioritise(
    campaign: str = typer.Option(..., "--campaign", help="Campaign name."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    run("annotate.prioritise", config, set_ + [f"campaign={campaign}"])


@stage_command("annotate.ai")
def annotate_ai(
    campaign: str | None = typer.Option(None, "--campaign", help="A clinician campaign (default: simulated panel's)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    result = run("annotate.ai", config, set_ + ([f"campaign={campaign}"] if campaign else []), loop)
    if result.metrics["unparseable"]:
        err_console.print(
            f"[bold yellow]warning:[/] {result.metrics['unparseable']} replies were not a valid judgement "
            "and were not stored",
            highlight=False,
        )


@stage_command("preferences")
def preferences(
    ctx: typer.Context,
    campaign: str | None = typer.Option(None, "--campaign", help="A clinician campaign (default: simulated panel)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    if ctx.invoked_subcommand is None:
        run("preferences", config, set_ + ([f"campaign={campaign}"] if campaign else []), loop)


@GROUPS[("preferences",)].command("stats")
def preferences_stats(
    campaign: str = typer.Option(..., "--campaign", help="Campaign name (see the web app or `clinalign loops`)."),
) -> None:
    """Print every agreement figure: alpha, Fleiss, Cohen, Gwet's AC1, gold accuracy, vs consensus."""
    from clinalign import preferences as stage

    try:
        with open_store().reading() as session:
            figures = stage.stats(session, stage.Config(campaign=campaign))
    except ClinalignError as err:
        fail(str(err))
    per_rater = figures.pop("per_rater")
    render_metrics(f"agreement ({campaign})", None, figures)
    table = Table(title="per rater", title_justify="left")
    for column in ("rater", "judgements", "gold accuracy", "gold items", "vs consensus", "vs rest"):
        table.add_column(column)
    for name, r in per_rater.items():
        cells = [r["judgements"], r["gold_accuracy"], r["gold_items"], r["vs_consensus"], r["vs_rest"]]
        table.add_row(name, *("-" if c is None else f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells))
    console.print(table)
