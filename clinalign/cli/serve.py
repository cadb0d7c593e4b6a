"""``clinalign reward serve``: the clinical reward model over HTTP for RL engines (OpenRLHF, verl, TRL
in another process)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from clinalign.cli.base import GROUPS, console, fail, open_store, quiet_libraries

group = GROUPS[("reward",)]


def _reward_model(reference: str | None) -> tuple[str, dict]:
    """The folder to serve and what ``/health`` says of it: an artifact id from the store, a folder,
    or (by default) the store's newest reward model. A served artifact is an audited event."""
    from sqlalchemy import select

    from clinalign.audit import record_event, seal
    from clinalign.store import Artifact

    if reference is not None and not reference.isdigit():
        if not Path(reference).is_dir():
            fail(f"--model {reference}: no such folder (give a reward model's artifact id or folder)")
        return reference, {"folder": str(Path(reference).resolve())}
    store = open_store()
    with store.session() as session:
        query = select(Artifact).where(Artifact.kind == "reward_model")
        if reference is not None:
            art = session.scalar(query.where(Artifact.id == int(reference)))
        else:
            art = session.scalar(query.order_by(Artifact.id.desc()).limit(1))
        if art is None:
            fail(f"no reward model {reference or 'in this store'}: run `clinalign train reward` first")
        info = {"artifact": art.id, "sha256": art.sha256, "test_accuracy": art.meta.get("test_accuracy")}
        record_event(session, os.environ.get("USER", "cli"), "reward.serve", f"artifact:{art.id}", {})
        folder = art.uri
    seal(store)
    return folder, info


@group.command("serve")
def serve(
    model: str | None = typer.Option(None, "--model", help="Reward model: artifact id or folder (default: newest)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8600, help="Port to listen on."),
) -> None:
    """Serve the clinical reward model: POST /get_reward (OpenRLHF), POST /score, GET /health. Beyond
    loopback it requires the API key in CLINALIGN_REWARD_API_KEY."""
    quiet_libraries()
    from clinalign.schemas import ClinalignError
    from clinalign.serve import reward
    from clinalign.settings import is_loopback

    api_key = os.environ.get("CLINALIGN_REWARD_API_KEY") or None
    if not is_loopback(host) and not api_key:
        fail(f"binding {host} exposes the reward model: set CLINALIGN_REWARD_API_KEY first")
    folder, info = _reward_model(model)
    console.print(f"clinalign reward on http://{host}:{port} serving {folder} (Ctrl+C to stop)", soft_wrap=True)
    try:
        reward.serve(folder, host, port, info, api_key)
    except ClinalignError as err:
        fail(str(err))
