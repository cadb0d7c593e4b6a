"""``clinalign reward serve``: the clinical reward model over HTTP for RL engines (OpenRLHF, verl, TRL
in another process)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from clinalign.cli.base import GROUPS, console, err_console, fail, open_store, quiet_libraries

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


keys = GROUPS[("keys",)]


@keys.command("add")
def add_key(
    name: str = typer.Argument(..., help="The client's name (unique)."),
    audience: str = typer.Option(
        "patient", help="Who reads its answers: patient, caregiver, clinician, educator, payer."
    ),
    per_minute: int = typer.Option(60, "--per-minute", help="Requests allowed per minute."),
    callback_url: str | None = typer.Option(None, "--callback-url", help="Where decided tier 2 answers are posted."),
) -> None:
    """Create an API key for `clinalign serve`; the key is printed once and only its hash is kept."""
    from clinalign.audit import seal
    from clinalign.schemas import ClinalignError
    from clinalign.serve import oversight

    store = open_store(existing=False)
    try:
        with store.session() as session:
            _key, secret = oversight.add_key(
                session, name, audience, per_minute, os.environ.get("USER", "cli"), callback_url
            )
    except ClinalignError as err:
        fail(str(err))
    seal(store)
    console.print(f"API key for {name} ({audience}, {per_minute}/min); shown once, keep it secret:")
    console.print(secret, highlight=False, soft_wrap=True)


@keys.command("list")
def list_keys() -> None:
    """The API keys: name, audience, rate, and whether revoked (never the keys themselves)."""
    from sqlalchemy import select

    from clinalign.store import ApiKey

    with open_store().reading() as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "live"
            console.print(f"{key.name}\t{key.audience}\t{key.per_minute}/min\t{state}", highlight=False)


@keys.command("revoke")
def revoke_key(name: str = typer.Argument(..., help="The client's name.")) -> None:
    """Revoke an API key at once (every server of this store refuses it from its next request)."""
    from clinalign.audit import seal
    from clinalign.schemas import ClinalignError
    from clinalign.serve import oversight

    store = open_store()
    try:
        with store.session() as session:
            oversight.revoke_key(session, name, os.environ.get("USER", "cli"))
    except ClinalignError as err:
        fail(str(err))
    seal(store)
    console.print(f"revoked {name}")


def _released(store, version: str | None) -> tuple[str, str]:
    """(folder, default name) of a release: the current one, or ``version`` ("3" or "v3")."""
    from clinalign import release

    with store.reading() as session:
        found = release.releases(session)
        if not found:
            fail(
                "nothing is released: `clinalign promote` an evaluated model first (or, to try a model out "
                "before it is evaluated, --unreleased FOLDER)"
            )
        if version is None:
            chosen = found[-1]
        else:
            number = version.lstrip("v")
            chosen = next((r for r in found if number.isdigit() and r.meta["version"] == int(number)), None)
            if chosen is None:
                fail(f"--model {version}: no such release (v1 to v{len(found)})")
        return chosen.meta["model_uri"], f"clinalign-v{chosen.meta['version']}"


@GROUPS[()].command("releases")
def list_releases() -> None:
    """The model registry: every release, promotion or rollback, with its model and evaluation."""
    from clinalign import release

    with open_store().reading() as session:
        found = release.releases(session)
        for r in found:
            how = (
                f"restores v{r.meta['restores']}"
                if r.meta["action"] == "rollback"
                else f"evaluation {r.meta['eval_report']}"
            )
            mark = "  <- served" if r.id == found[-1].id else ""
            console.print(
                f"v{r.meta['version']}\t{r.meta['action']}\tmodel {r.meta['model']}\t{how}{mark}", highlight=False
            )
        if not found:
            console.print("nothing released yet (clinalign promote)")


@GROUPS[()].command("serve")
def serve_chat(
    model: str | None = typer.Option(None, "--model", help="A release to serve, e.g. v3 (default: the current one)."),
    unreleased: Path | None = typer.Option(
        None,
        "--unreleased",
        help="Serve a model folder that was never promoted (development only; said so in every log).",
    ),
    upstream: str | None = typer.Option(None, "--upstream", help="An OpenAI-compatible server's URL, ending in /v1."),
    upstream_model: str | None = typer.Option(None, "--upstream-model", help="The model name the upstream serves."),
    name: str | None = typer.Option(None, "--name", help="The model id clients ask for (default: from the model)."),
    policy: Path | None = typer.Option(None, "--policy", help="Guardrail policy YAML (default: the shipped one)."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Default answer length, in tokens."),
    reward_model: str | None = typer.Option(
        None, "--reward-model", help="A reward model folder: answers its ensemble is unsure of go to review."
    ),
    notify_url: str | None = typer.Option(None, "--notify-url", help="Posted at once on every escalation (ids only)."),
    rate_storage: str = typer.Option(
        "memory://", "--rate-storage", help="Rate-limit counters: memory:// (one process) or redis://host:port."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve the released model (`clinalign promote`) behind the guardrails: OpenAI-compatible
    /v1/chat/completions (and streaming), tiered clinician review, API keys (`clinalign keys add`),
    rate limits, /metrics, and LiteLLM's generic guardrail API. Or put the rails in front of another
    server (--upstream), whose model is outside clinalign's registry."""
    quiet_libraries()
    from clinalign import guardrails
    from clinalign.schemas import ClinalignError
    from clinalign.serve import backends, chat

    if sum(x is not None for x in (model, unreleased, upstream)) > 1:
        fail("give one of --model, --unreleased and --upstream, not several")
    try:
        rules = guardrails.load(policy) if policy is not None else guardrails.load()
        store = open_store(existing=False)
        if upstream is not None:
            if not upstream_model:
                fail("--upstream needs --upstream-model (the model name that server serves)")
            backend = backends.Upstream(upstream, upstream_model, os.environ.get("CLINALIGN_UPSTREAM_API_KEY"))
            backend.name = name or upstream_model
        elif unreleased is not None:
            err_console.print("[bold yellow]warning:[/] serving a model that was never evaluated and promoted")
            backend = backends.LocalModel(str(unreleased), name or f"unreleased-{unreleased.name}")
        else:
            folder, default_name = _released(store, model)
            backend = backends.LocalModel(folder, name or default_name)
        scorer = None
        if reward_model is not None:
            from clinalign import rewards

            scorer = rewards.Local(reward_model)
        app = chat.create_app(
            store,
            backend,
            rules,
            max_tokens=max_tokens,
            rate_storage=rate_storage,
            scorer=scorer,
            notify_url=notify_url,
        )
    except ClinalignError as err:
        fail(str(err))
    console.print(
        f"clinalign serve on http://{host}:{port}/v1 serving {backend.name}, policy {rules.id}", soft_wrap=True
    )
    chat.serve(app, host, port)
