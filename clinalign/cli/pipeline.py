"""The loop's stage commands that take more than a config: ingest, generate, evaluate, report, and
those that take only a config (curate, the trainers), made from the stage table."""

from __future__ import annotations

from pathlib import Path

import typer

from clinalign.cli.base import ConfigOpt, LoopOpt, SetOpt, console, run, stage_command


@stage_command("scenarios")
def scenarios(
    path: Path | None = typer.Argument(
        None, metavar="[FILE]", help="Scenario templates (YAML); default: the bundled ones."
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    found = run("scenarios", config, set_ + ([f"path={path}"] if path else []), None).metrics
    console.print(
        f"{found['cases']} cases from {found['templates']} templates ({found['counterfactual_groups']} counterfactual "
        f"groups); coverage {found['covered']}/{found['combinations']} stakeholder x specialty x risk cells"
    )
    for gap in found["gaps"][:12]:
        console.print(f"  gap: {gap['stakeholder']} x {gap['specialty']} x {gap['risk']}", highlight=False)
    if len(found["gaps"]) > 12:
        console.print(f"  ... and {len(found['gaps']) - 12} more gaps (coverage.json)")
    console.print(f"next: clinalign ingest {found['path']}")


@stage_command("ingest")
def ingest(
    path: Path = typer.Argument(..., metavar="FILE", help="JSONL, CSV or Parquet file of cases."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = typer.Option(None, "--loop", help="Add these cases to a loop; default: begin a new one."),
) -> None:
    run("ingest", config, set_ + [f"path={path}"], loop)


@stage_command("generate")
def generate(
    model: str | None = typer.Option(None, "--model", help="Model folder, cached hub id or artifact id."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    run("generate", config, set_ + ([f"model={model}"] if model else []), loop)


@stage_command("evaluate")
def evaluate(
    model: str | None = typer.Option(None, "--model", help="Policy to evaluate (default: the loop's newest)."),
    suite: str | None = typer.Option(
        None,
        "--suite",
        help="loop (default), mcq, safety, fairness, rubric, hallucination, or comparison (--set compare=SUITE).",
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    extra = ([f"policy={model}"] if model else []) + ([f"suite={suite}"] if suite else [])
    run("evaluate", config, set_ + extra, loop, begins=suite not in (None, "loop"))


@stage_command("report")
def report(config: Path | None = ConfigOpt, set_: list[str] = SetOpt, loop: int | None = LoopOpt) -> None:
    result = run("report", config, set_, loop)
    console.print(f"report: [bold]{result.metrics['path']}[/]")


def _config_only(name: str):
    def command(config: Path | None = ConfigOpt, set_: list[str] = SetOpt, loop: int | None = LoopOpt) -> None:
        run(name, config, set_, loop)

    return command


def _trainer(name: str):
    def command(
        config: Path | None = ConfigOpt,
        set_: list[str] = SetOpt,
        loop: int | None = LoopOpt,
        resume_from: Path | None = typer.Option(
            None,
            "--resume-from",
            help="Continue from this checkpoint folder (default: the last complete checkpoint of an "
            "unfinished earlier run of the same config, if any).",
        ),
    ) -> None:
        run(name, config, set_, loop, resume_from=resume_from)

    return command


stage_command("curate")(_config_only("curate"))


@stage_command("release")
def promote(
    eval_report: int | None = typer.Option(None, "--eval-report", help="The candidate's evaluation (default: newest)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    found = run("release", config, set_ + ([f"eval_report={eval_report}"] if eval_report else []), loop).metrics
    console.print(f"released v{found['version']}: model {found['model']} (evaluation {found['eval_report']})")


@stage_command("release.rollback")
def rollback(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    found = run("release.rollback", config, set_, None).metrics
    console.print(f"released v{found['version']}: model {found['model']} again (as v{found['restores']})")


@stage_command("monitor")
def monitor(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    found = run("monitor", config, set_, None).metrics
    console.print(
        f"{found['interactions']} interactions; unsafe rate {found['unsafe_rate']:.3f}, escalation rate "
        f"{found['escalation_rate']:.3f}, drift: {found['drift']}; [bold]{found['path']}[/]"
    )


@stage_command("feedback")
def feedback(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    result = run("feedback", config, set_, None)
    found = result.metrics
    console.print(
        f"{found['cases']} cases from {found['flags']} flags ({found['corrected']} with a correction): "
        f"[bold]{found['path']}[/]; next: clinalign ingest {found['path']}"
    )


for _name in ("train.sft", "train.reward", "train.dpo", "train.ppo", "train.grpo"):
    stage_command(_name)(_trainer(_name))
