"""The ``clinalign`` command line: one thin command per stage, plus audit, lineage and the demo.

Every stage command takes ``--config FILE`` (YAML) and any number of ``--set key.sub=value``.
Errors a user can fix print as one red line (exit code 2), never a stack trace.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from clinalign.schemas import ClinalignError

# Locals in a traceback could hold record text: never print them.
app = typer.Typer(
    help="Align a language model with your own clinicians, safely and auditably.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
train_app = typer.Typer(help="Train a policy or reward model with TRL.", no_args_is_help=True)
audit_app = typer.Typer(help="Check the tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(audit_app, name="audit")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config for the stage.", exists=False)
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: key.sub=value (repeatable).")


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames, not ours to fix
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow this one
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        elif not isinstance(value, list):  # curves go to the report
            rows.append((prefix + key, f"{value:.4g}" if isinstance(value, float) else value))
    return rows


def render_metrics(stage: str, run_id: int, metrics: dict) -> None:
    table = Table(title=f"{stage} (run {run_id})", show_header=False, title_justify="left")
    for key, value in _flat(metrics):
        table.add_row(key, str(value))
    console.print(table)


def run_stage(stage: str, module_name: str, config_path: Path | None, overrides: list[str], call=None) -> dict:
    """Load the stage's config, open the store, run the stage (or ``call``) inside ``track_run``, show figures."""
    _quiet_libraries()
    from clinalign import progress
    from clinalign.audit import track_run
    from clinalign.settings import Settings, load_config
    from clinalign.store import Store

    module = importlib.import_module(f"clinalign.{module_name}")
    try:
        config = load_config(module.Config, config_path, overrides)
        settings = Settings()
        store = Store.open(settings.url)
        with progress.shown(err_console), track_run(store, stage, config, settings.data_dir) as ctx:
            metrics = (call or module.run)(ctx, config)
    except ClinalignError as err:
        fail(str(err))
    render_metrics(stage, ctx.run_id, metrics)
    return metrics


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage's progress.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


@app.command()
def ingest(
    path: Path | None = typer.Argument(None, help="JSONL, CSV or Parquet file of cases."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Validate and store cases in quarantine (they may hold PHI)."""
    run_stage("ingest", "ingest", config, set_ + ([f"path={path}"] if path else []))


deidentify_app = typer.Typer(help="Remove PHI (all 18 Safe Harbor identifiers); measure how well.")
app.add_typer(deidentify_app, name="deidentify")


@deidentify_app.callback(invoke_without_command=True)
def deidentify(
    ctx: typer.Context,
    source: Path | None = typer.Option(None, "--in", help="File mode: JSONL with a 'text' field per line."),
    target: Path | None = typer.Option(None, "--out", help="File mode: where to write the de-identified JSONL."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """De-identify quarantined cases in the store, or a JSONL file with --in/--out."""
    if ctx.invoked_subcommand is not None:
        return
    if (source is None) != (target is None):
        fail("file mode needs both --in and --out")
    if source is None:
        run_stage("deidentify", "deidentify", config, set_)
        return
    from clinalign import deidentify as stage

    run_stage(
        "deidentify", "deidentify", config, set_, call=lambda ctx_, cfg: stage.run_file(ctx_, cfg, source, target)
    )


@deidentify_app.command("eval")
def deidentify_eval(
    gold: Path = typer.Option(..., "--gold", help="Gold spans: JSONL {text, spans}, or a public set's file."),
    layout: str = typer.Option("clinalign", help="clinalign | presidio | eds"),
    out: Path | None = typer.Option(None, help="Also write the figures as JSON here."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Precision, recall, F1 and F2 per PHI type, strict and overlapping spans."""
    import json

    from clinalign.deidentify import Config, detect
    from clinalign.deidentify.evaluation import read_gold, score
    from clinalign.settings import load_config

    try:
        cfg = load_config(Config, config, set_)
        figures = score(read_gold(gold, layout), lambda text: detect(text, cfg))
    except ClinalignError as err:
        fail(str(err))
    table = Table(
        title=f"{gold.name}: {figures['documents']} documents, {figures['gold_spans']} gold spans", title_justify="left"
    )
    for column in ("type", "gold", "pred", "P", "R", "F1", "F2", "strict P", "strict R", "strict F1"):
        table.add_column(column, justify="left" if column == "type" else "right")

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for kind, row in figures["per_type"].items():
        o, st = row["overlap"], row["strict"]
        table.add_row(
            kind,
            str(row["gold"]),
            str(row["predicted"]),
            f(o["precision"]),
            f(o["recall"]),
            f(o["f1"]),
            f(o["f2"]),
            f(st["precision"]),
            f(st["recall"]),
            f(st["f1"]),
        )
    console.print(table)
    console.print(f"leak recall (gold spans removed under any type): {f(figures['leak_recall'])}")
    if out:
        out.write_text(json.dumps(figures, indent=1))


@deidentify_app.command("synth")
def deidentify_synth(
    out: Path = typer.Option(..., "--out", help="Where to write the annotated notes (JSONL)."),
    n: int = typer.Option(500, help="How many notes."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write synthetic clinical notes with every PHI span annotated (gold for `deidentify eval`)."""
    from clinalign.deidentify.synthetic import write

    write(out, n, seed)
    console.print(f"wrote {n} annotated notes to {out}")


@app.command()
def curate(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Deduplicate, filter and split de-identified records into a versioned prompt set."""
    run_stage("curate", "curate", config, set_)


@app.command()
def generate(
    model: str | None = typer.Option(None, "--model", help="Model folder, cached hub id or artifact id."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Sample candidate answers for every prompt."""
    run_stage("generate", "generate", config, set_ + ([f"model={model}"] if model else []))


annotate_app = typer.Typer(help="Clinician campaigns, and the SIMULATED panel the demo uses.")
app.add_typer(annotate_app, name="annotate")


@annotate_app.callback(invoke_without_command=True)
def annotate(ctx: typer.Context, config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Build the pairwise task queue and judge it with the SIMULATED clinician panel."""
    if ctx.invoked_subcommand is None:
        run_stage("annotate", "annotate", config, set_)


@annotate_app.command("campaign")
def annotate_campaign(
    name: str = typer.Option(..., "--name", help="A unique campaign name."),
    actor: str = typer.Option(os.environ.get("USER", "cli"), help="Who creates it (for the audit trail)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Create a clinician campaign from candidate answers (see configs/annotate/campaign.yaml)."""
    from clinalign.annotate import campaigns

    run_stage(
        "annotate",
        "annotate.campaigns",
        config,
        set_ + [f"name={name}"],
        call=lambda ctx_, cfg: campaigns.create_campaign(ctx_, cfg, actor),
    )


@annotate_app.command("prioritise")
def annotate_prioritise(
    campaign: str = typer.Option(..., "--campaign", help="Campaign name."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Order a campaign's queue by reward-model uncertainty and clinician disagreement."""
    from clinalign.annotate import active

    run_stage(
        "annotate",
        "annotate.active",
        config,
        set_ + [f"campaign={campaign}"],
        call=active.prioritise,
    )


preferences_app = typer.Typer(help="Agreement, consensus, adjudicated decisions and TRL-format datasets.")
app.add_typer(preferences_app, name="preferences")


@preferences_app.callback(invoke_without_command=True)
def preferences(
    ctx: typer.Context,
    campaign: str | None = typer.Option(None, "--campaign", help="A clinician campaign (default: simulated panel)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Measure agreement, take the consensus and export preference pairs, KTO, SFT and a flat table."""
    if ctx.invoked_subcommand is None:
        run_stage("preferences", "preferences", config, set_ + ([f"campaign={campaign}"] if campaign else []))


@preferences_app.command("stats")
def preferences_stats(
    campaign: str | None = typer.Option(None, "--campaign", help="A clinician campaign (default: simulated panel)."),
) -> None:
    """Print every agreement figure: alpha, Fleiss, Cohen, Gwet's AC1, gold accuracy, vs consensus."""
    from clinalign import preferences as stage
    from clinalign.settings import Settings
    from clinalign.store import Store

    try:
        with Store.open(Settings().url).session() as session:
            figures = stage.stats(session, stage.Config(campaign=campaign))
    except ClinalignError as err:
        fail(str(err))
    per_rater = figures.pop("per_rater")
    render_metrics(f"agreement ({campaign or 'simulated panel'})", 0, figures)
    table = Table(title="per rater", title_justify="left")
    for column in ("rater", "judgements", "gold accuracy", "gold items", "vs consensus", "vs rest"):
        table.add_column(column)
    for name, r in per_rater.items():
        cells = [r["judgements"], r["gold_accuracy"], r["gold_items"], r["vs_consensus"], r["vs_rest"]]
        table.add_row(name, *("-" if c is None else f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells))
    console.print(table)


@train_app.command("sft")
def train_sft(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Supervised fine-tuning (TRL SFTTrainer); with no base, builds a small model from scratch."""
    run_stage("train.sft", "train.sft", config, set_)


@train_app.command("reward")
def train_reward(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Reward model on the consensus pairs (TRL RewardTrainer)."""
    run_stage("train.reward", "train.reward", config, set_)


@train_app.command("dpo")
def train_dpo(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Direct preference optimisation with LoRA (TRL DPOTrainer + PEFT)."""
    run_stage("train.dpo", "train.dpo", config, set_)


@app.command()
def evaluate(
    model: str | None = typer.Option(None, "--model", help="Policy to evaluate (default: newest)."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Compare a policy with its baseline on the held-out split: safety first, then accuracy."""
    run_stage("evaluate", "evaluate", config, set_ + ([f"policy={model}"] if model else []))


@app.command()
def report(config: Path | None = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Write the self-contained HTML report (figures, plots, lineage)."""
    metrics = run_stage("report", "report", config, set_)
    console.print(f"report: [bold]{metrics['path']}[/]")


@audit_app.command("verify")
def audit_verify() -> None:
    """Chain any events still pending, then recompute the chain; name the first event that was altered,
    inserted or removed."""
    from clinalign.audit import seal, verify_chain
    from clinalign.settings import Settings
    from clinalign.store import Store

    store = Store.open(Settings().url)
    seal(store)
    with store.session() as session:
        result = verify_chain(session)
    if not result.ok:
        fail(f"audit chain broken at event {result.first_broken}: {result.reason}")
    waiting = f"; {result.pending} recorded since, not yet chained" if result.pending else ""
    console.print(f"audit chain intact: {result.events} events{waiting}")


@app.command()
def lineage(artifact_id: int = typer.Argument(..., help="Artifact id (see the report or a stage's output).")) -> None:
    """Print the runs and data behind an artifact, back to the source files."""
    from clinalign import audit
    from clinalign.settings import Settings
    from clinalign.store import Store

    try:
        with Store.open(Settings().url).session() as session:
            steps = audit.lineage(session, artifact_id)
            for step in steps:
                a, run = step.artifact, step.run
                made = (
                    f"run {run.id} {run.stage} ({run.code_version}, config {run.config_hash[:10]})"
                    if run
                    else "outside"
                )
                sha = (a.sha256 or "-")[:12]
                console.print(
                    f"{'  ' * step.depth}artifact {a.id} [bold]{a.kind}[/] sha256:{sha} <- {made}",
                    highlight=False,
                    soft_wrap=True,
                )
                console.print(f"{'  ' * step.depth}  {a.uri}", style="dim", highlight=False, soft_wrap=True)
    except ClinalignError as err:
        fail(str(err))


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(2, min=1, help="Server processes (Python runs one request at a time per process)."),
) -> None:
    """Serve the clinician web app on the store named by the environment (migrated on start)."""
    from clinalign.settings import Settings
    from clinalign.store import Store
    from clinalign.web.server import serve

    try:
        Store.open(Settings().url).engine.dispose()  # migrate once, before the workers start
    except ClinalignError as err:
        fail(str(err))
    console.print(f"clinalign web on http://{host}:{port} (Ctrl+C to stop)")
    serve(host, port, workers)


users_app = typer.Typer(help="Accounts for the web app.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    username: str = typer.Argument(..., help="Lower-case login name."),
    role: str = typer.Option(..., "--role", help="admin | data_expert | clinician | reviewer"),
    specialty: list[str] = typer.Option([], "--specialty", help="Routes this specialty's items to them (repeatable)."),
    sso: bool = typer.Option(False, "--sso", help="No password: signs in through the OpenID Connect provider."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Create an account; asks for the password twice (hidden) unless --password-stdin or --sso."""
    from clinalign import accounts
    from clinalign.audit import seal
    from clinalign.settings import Settings
    from clinalign.store import Store

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sso:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        store = Store.open(Settings().url)
        with store.session() as session:
            user = accounts.create_user(session, username, role, password, os.environ.get("USER", "cli"), specialty)
        seal(store)
    except ClinalignError as err:
        fail(str(err))
    console.print(f"created {user.username} ({user.role})")


@users_app.command("list")
def users_list() -> None:
    """Every account, its role and whether it is active."""
    from sqlalchemy import select

    from clinalign.settings import Settings
    from clinalign.store import Store, User

    table = Table("username", "role", "specialties", "active", title="accounts", title_justify="left")
    with Store.open(Settings().url).session() as session:
        for user in session.scalars(select(User).where(User.simulated.is_(False)).order_by(User.username)):
            table.add_row(user.username, user.role, ", ".join(user.specialties), "yes" if user.active else "no")
    console.print(table)


@app.command()
def demo(
    workspace: Path | None = typer.Option(
        None, help="Folder for this demo's database and files (default: runs/demo-<time>)."
    ),
    quick: bool = typer.Option(False, help="A miniature loop (about a minute) for smoke tests."),
) -> None:
    """Run the whole loop on the bundled synthetic scenarios and write the HTML report."""
    _quiet_libraries()
    from clinalign import demo as demo_module

    started = time.perf_counter()

    def show(number: int, stage: str, run_id: int, metrics: dict, seconds: float) -> None:
        console.rule(f"[bold]{number}/{len(demo_module.STAGES)} {stage}[/] ({seconds:.0f} s)")
        render_metrics(stage, run_id, metrics)

    try:
        path = demo_module.run(workspace, quick=quick, on_stage=show)
    except ClinalignError as err:
        fail(str(err))
    console.print(f"\nThe whole loop took {time.perf_counter() - started:.0f} s.")
    console.print(f"\n[bold green]Report:[/] {path}")


if __name__ == "__main__":
    sys.exit(app())
