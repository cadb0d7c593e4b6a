"""``clinalign guard check``: the guardrail policy over a JSONL file of messages, one verdict per line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer

from clinalign.cli.base import GROUPS, console, fail

group = GROUPS[("guard",)]

AUDIENCES = ("patient", "caregiver", "clinician", "educator", "payer")


def _messages(path: Path):
    """(id, text, role) for each line; a bad line stops everything, naming the line and the field."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                fail(f"{where}: not valid JSON ({err.msg} at column {err.colno})")
            if not isinstance(item, dict):
                fail(f"{where}: each line must be a JSON object")
            if "id" not in item:
                fail(f"{where}: field 'id' is missing")
            if not isinstance(item.get("text"), str):
                fail(f"{where}: field 'text' must be a string")
            role = item.get("role", "user")
            if role not in ("user", "assistant"):
                fail(f"{where}: field 'role' must be 'user' or 'assistant', got {str(role)[:20]!r}")
            yield item["id"], item["text"], role


@group.command("check")
def check(
    source: Path = typer.Option(..., "--in", help="JSONL: one object per line with id, text, optional role."),
    out: Path = typer.Option(..., "--out", help="Where to write one verdict per line, in the input's order."),
    policy: Path | None = typer.Option(None, "--policy", help="Guardrail policy YAML (default: the shipped one)."),
    audience: str = typer.Option("patient", help=f"Who reads the answers: {', '.join(AUDIENCES)}."),
) -> None:
    """Check each message: a user's through the input rails, an assistant's through the output rails.
    Each verdict keeps the message's id and gives escalate, action, tier, disposition and reasons."""
    from clinalign import guardrails
    from clinalign.schemas import ClinalignError

    if not source.is_file():
        fail(f"--in {source}: no such file")
    if audience not in AUDIENCES:
        fail(f"--audience must be one of {', '.join(AUDIENCES)}, got {audience!r}")
    try:
        rules = guardrails.load(policy) if policy is not None else guardrails.load()
    except ClinalignError as err:
        fail(str(err))
    counts: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".part", delete=False, encoding="utf-8")
    try:
        with handle:
            for key, text, role in _messages(source):
                verdict = guardrails.check(text, role, policy=rules, audience=audience)
                handle.write(json.dumps({"id": key, "role": role, **verdict.as_dict()}) + "\n")
                counts[str(verdict.action)] = counts.get(str(verdict.action), 0) + 1
        os.replace(handle.name, out)  # all verdicts or none: a bad line leaves no half-written file
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "no messages"
    console.print(f"{sum(counts.values())} verdicts written to {out} ({summary}); policy {rules.id}", soft_wrap=True)
