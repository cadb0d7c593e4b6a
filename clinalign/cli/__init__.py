"""The ``clinalign`` command line: one thin command per stage of the stage table, plus audit, lineage,
accounts, the web app and the demo.

Every stage command takes ``--config FILE`` (YAML), any number of ``--set key.sub=value`` and
``--loop ID``. Errors a user can fix print as one red line (exit code 2), never a stack trace.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from clinalign.cli import annotate, audit, deidentify, demo, guard, pipeline, serve, users  # noqa: F401 - they register commands
from clinalign.cli.base import app, err_console

__all__ = ["app"]


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage's progress."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="The store's folder (default: CLINALIGN_DATA_DIR, else ./clinalign-data)."
    ),
) -> None:
    from rich.logging import RichHandler

    if data_dir is not None:
        os.environ["CLINALIGN_DATA_DIR"] = str(data_dir)  # read by Settings wherever the store is opened
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
