"""What every command shares: the Typer groups, one-line errors, the store, and running a stage.

Errors a user can fix print as one red line (exit code 2), never a stack trace.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from clinalign.schemas import ClinalignError
from clinalign.stages import BY_NAME, LOOP, STAGES, Result


class LoopOrder(TyperGroup):
    """``clinalign --help`` lists the loop's commands in the loop's order, then the rest."""

    def list_commands(self, ctx):
        names = super().list_commands(ctx)
        order = list(dict.fromkeys(BY_NAME[stage].command[0] for stage in LOOP))
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))


# Locals in a traceback could hold record text: never print them.
app = typer.Typer(
    cls=LoopOrder,
    help="Align a language model with your own clinicians, safely and auditably.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
# Groups of commands, by the words before the last one (``clinalign train sft`` is in ("train",)).
GROUPS: dict[tuple[str, ...], typer.Typer] = {
    (): app,
    ("train",): typer.Typer(help="Train a policy or reward model with TRL.", no_args_is_help=True),
    ("deidentify",): typer.Typer(help="Remove PHI (all 18 Safe Harbor identifiers); measure how well."),
    ("annotate",): typer.Typer(help="Clinician campaigns, and the SIMULATED panel the demo uses."),
    ("preferences",): typer.Typer(help="Agreement, consensus, adjudicated decisions and TRL-format datasets."),
    ("audit",): typer.Typer(help="Check and anchor the tamper-evident audit trail.", no_args_is_help=True),
    ("users",): typer.Typer(help="Accounts for the web app.", no_args_is_help=True),
    ("reward",): typer.Typer(help="Serve the clinical reward model to RL engines.", no_args_is_help=True),
    ("guard",): typer.Typer(help="Check messages against the clinical guardrail policy.", no_args_is_help=True),
    ("keys",): typer.Typer(help="API keys for the guarded server (`clinalign serve`).", no_args_is_help=True),
}
for (name,), group in [(k, v) for k, v in GROUPS.items() if k]:
    app.add_typer(group, name=name)

console = Console()
err_console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config for the stage.", exists=False)
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: key.sub=value (repeatable).")
LoopOpt = typer.Option(
    None, "--loop", help="Continue this loop (see `clinalign loops`); default: the loop of the inputs given."
)


def stage_command(name: str):
    """Register a command at the stage table's words for stage ``name``, with its summary as help: a
    stage that is also a group (``annotate``, ``deidentify``, ``preferences``) is the group's callback."""
    stage = BY_NAME[name]
    summary = " ".join(s.summary for s in STAGES if s.command == stage.command)  # stages sharing a command
    if stage.command in GROUPS:
        return GROUPS[stage.command].callback(invoke_without_command=True, help=summary)
    return GROUPS[stage.command[:-1]].command(stage.command[-1], help=summary)


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames, not ours to fix
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow this one
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _figure(value: dict) -> str:
    """A figure with its interval (``stats.figure``): 0.600 [0.313, 0.832] n=10."""
    if value["value"] is None:
        return "not computable yet (n=0)"
    return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}] n={value['n']}"


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict) and set(value) == {"value", "n", "low", "high"}:
            rows.append((prefix + key, _figure(value)))
        elif isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        elif value is None:
            rows.append((prefix + key, "not computable yet"))
        elif not isinstance(value, list):  # curves go to the report
            rows.append((prefix + key, f"{value:.4g}" if isinstance(value, float) else value))
    return rows


def render_metrics(title: str, run_id: int | None, metrics: dict) -> None:
    heading = f"{title} (run {run_id})" if run_id is not None else title
    table = Table(title=heading, show_header=False, title_justify="left")
    for key, value in _flat(metrics):
        table.add_row(key, str(value))
    console.print(table)


def open_store(existing: bool = True):
    """The store the environment names (``--data-dir``, ``CLINALIGN_DATA_DIR``, ``DATABASE_URL``),
    migrated. ``existing``: refuse to create one, so a typo in a folder is not an empty, intact store."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from clinalign.settings import Settings
    from clinalign.store import Store

    url = Settings().url
    parsed = make_url(url)
    where = parsed.render_as_string(hide_password=True)
    hint = "point --data-dir (or CLINALIGN_DATA_DIR, or DATABASE_URL) at a store; the demo prints its own"
    file = (
        parsed.database
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        else None
    )
    try:
        if existing and file is not None and not Path(file).is_file():
            fail(f"no clinalign store at {where}: {hint}")
        store = Store.open(url, migrate=False)
        if existing and "alembic_version" not in inspect(store.engine).get_table_names():
            fail(f"{where} holds no clinalign store: {hint}")
        store.migrate()
    except ClinalignError as err:
        fail(str(err))
    return store


def run(
    name: str, config: Path | None, overrides: list[str], loop: int | None = None, begins: bool = False, **extra
) -> Result:
    """Run stage ``name`` on the environment's store with a progress bar, show its figures; ``begins``:
    the run may be a store's first (a benchmark of an outside model needs nothing in it)."""
    quiet_libraries()
    from clinalign import progress
    from clinalign.settings import Settings
    from clinalign.stages import run_stage

    store = open_store(existing=not begins and name not in ("ingest", "deidentify.file", "scenarios"))
    try:
        with progress.shown(err_console):
            result = run_stage(
                name, store, Settings().data_dir, config_path=config, overrides=overrides, loop=loop, **extra
            )
    except ClinalignError as err:
        fail(str(err))
    render_metrics(name, result.run_id, result.metrics)
    return result
