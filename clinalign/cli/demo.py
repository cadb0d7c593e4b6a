"""``clinalign demo``: the whole loop on the bundled scenarios, and where to look afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from clinalign.cli.base import app, console, fail, quiet_libraries, render_metrics
from clinalign.schemas import ClinalignError


@app.command()
def demo(
    workspace: Path | None = typer.Option(
        None, help="Folder for this demo's database and files (default: runs/demo-<time>)."
    ),
    base: str = typer.Option("smollm2", help="The policy to align: smollm2 (bundled), a model folder or hub id."),
    algorithm: str = typer.Option("dpo", help="How the policy is tuned after SFT: dpo, ppo, grpo or rloo."),
    set_: list[str] = typer.Option(
        [], "--set", help="A stage's setting, e.g. train.ppo.steps=24 (repeatable; values read as YAML)."
    ),
) -> None:
    """Run the whole loop on the bundled synthetic scenarios, aligning SmolLM2-135M-Instruct, and write the
    HTML report."""
    quiet_libraries()
    from clinalign import demo as demo_module

    started = time.perf_counter()

    def show(number: int, stage: str, run_id: int, metrics: dict, seconds: float) -> None:
        console.rule(f"[bold]{number}/{len(demo_module.steps(algorithm))} {stage}[/] ({seconds:.0f} s)")
        render_metrics(stage, run_id, metrics)

    try:
        path = demo_module.run(workspace, on_stage=show, base=base, algorithm=algorithm, overrides=set_)
    except ClinalignError as err:
        fail(str(err))
    folder = path.parent
    console.print(f"\nThe whole loop took {time.perf_counter() - started:.0f} s.")
    console.print(f"\n[bold green]Report:[/] {path}", soft_wrap=True)
    console.print(
        f"[bold]Store:[/] {folder / 'clinalign.db'}. Inspect it with:\n"
        f"  clinalign --data-dir {folder} loops\n"
        f"  clinalign --data-dir {folder} audit verify\n"
        f"  clinalign --data-dir {folder} lineage ARTIFACT_ID   (ids are in the report)\n"
        f"  CLINALIGN_DATA_DIR={folder} clinalign web   (the campaign dashboards, after `users add`)",
        highlight=False,
        soft_wrap=True,
    )
