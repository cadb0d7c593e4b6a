"""``clinalign deidentify``: the stage (store or file mode), its evaluation and its synthetic gold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from clinalign.cli.base import GROUPS, ConfigOpt, LoopOpt, SetOpt, console, fail, open_store, run, stage_command
from clinalign.schemas import ClinalignError

group = GROUPS[("deidentify",)]


def _writable(path: Path) -> None:
    if path.is_dir():
        fail(f"--out {path} is a folder: name the file to write")


@stage_command("deidentify")
def deidentify(
    ctx: typer.Context,
    source: Path | None = typer.Option(None, "--in", help="File mode: JSONL with a 'text' field per line."),
    target: Path | None = typer.Option(None, "--out", help="File mode: where to write the de-identified JSONL."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
    loop: int | None = LoopOpt,
) -> None:
    """De-identify the loop's quarantined cases, or a JSONL file with --in/--out."""
    if ctx.invoked_subcommand is not None:
        return
    if (source is None) != (target is None):
        fail("file mode needs both --in and --out")
    if source is None:
        run("deidentify", config, set_, loop)
        return
    _writable(target)
    run("deidentify.file", config, set_, source=source, target=target)


@group.command("eval")
def deidentify_eval(
    gold: Path = typer.Option(..., "--gold", help="Gold spans: JSONL {text, spans}, or a public set's file."),
    layout: str = typer.Option("clinalign", help="clinalign | presidio | eds"),
    out: Path | None = typer.Option(None, help="Also write the figures as JSON here."),
    config: Path | None = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Precision, recall, F1 and F2 per PHI type, strict and overlapping spans."""
    from clinalign.deidentify import Config, detect
    from clinalign.deidentify.evaluation import read_gold, score
    from clinalign.settings import load_config

    if out is not None:
        _writable(out)
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
        cells = [o["precision"], o["recall"], o["f1"], o["f2"], st["precision"], st["recall"], st["f1"]]
        table.add_row(kind, str(row["gold"]), str(row["predicted"]), *map(f, cells))
    console.print(table)
    console.print(f"leak recall (gold spans removed under any type): {f(figures['leak_recall'])}")
    if out:
        out.write_text(json.dumps(figures, indent=1))


@group.command("reject")
def deidentify_reject(
    raw_id: int = typer.Argument(..., help="The raw record's number, as a de-identification error names it."),
    reason: str = typer.Option(..., "--reason", help="Why, in a sentence (500 characters at most)."),
) -> None:
    """Remove a quarantined case for good: its content is emptied, the reason and an audit event kept.

    For a case that cannot or must not be de-identified; ingest the corrected case afterwards if there is one.
    """
    from clinalign import deidentify
    from clinalign.audit import seal

    store = open_store()
    try:
        deidentify.reject(store, raw_id, reason, os.environ.get("USER", "cli"))
        seal(store)
    except ClinalignError as err:
        fail(str(err))
    console.print(f"raw record {raw_id} rejected: its content was removed; `clinalign deidentify` can run again")


@group.command("synth")
def deidentify_synth(
    out: Path = typer.Option(..., "--out", help="Where to write the annotated notes (JSONL)."),
    n: int = typer.Option(500, help="How many notes."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write synthetic clinical notes with every PHI span annotated (gold for `deidentify eval`)."""
    from clinalign.deidentify.synthetic import write

    _writable(out)
    write(out, n, seed)
    console.print(f"wrote {n} annotated notes to {out}")
