"""Rollback: the release before the current one (or a named one) becomes the served release again,
as a new version that says which it restores and which it replaces.

Reads: the registry (``release`` artifacts).  Writes: a ``release`` artifact (and an audit event).
"""

from __future__ import annotations

from pydantic import Field

from clinalign.audit import RunContext, record_event
from clinalign.release import releases
from clinalign.schemas import ClinalignError
from clinalign.settings import StageConfig


class Config(StageConfig):
    version: int | None = Field(default=None, ge=1)
    """The release to go back to (default: the one before the current one)."""

    note: str = Field(default="", max_length=2000)


def run(ctx: RunContext, config: Config) -> dict:
    with ctx.store.session() as session:
        found = releases(session)
        if not found:
            raise ClinalignError("nothing is released: there is nothing to roll back")
        served = found[-1]
        if config.version is not None:
            target = next((r for r in found if r.meta["version"] == config.version), None)
            if target is None:
                raise ClinalignError(f"no release v{config.version} (releases: v1 to v{len(found)})")
        else:
            earlier = [r for r in found if r.meta["model"] != served.meta["model"]]
            if not earlier:
                raise ClinalignError(f"v{served.meta['version']} is the only model ever released")
            target = earlier[-1]
        if target.meta["model"] == served.meta["model"]:
            raise ClinalignError(f"v{target.meta['version']} serves the model already released")
        ctx.use(target.id)
        version = len(found) + 1
        meta = {
            **target.meta,
            "version": version,
            "action": "rollback",
            "restores": target.meta["version"],
            "replaces": served.meta["version"],
            "note": config.note,
        }
        release = ctx.produce(session, "release", f"release://v{version}", target.sha256, meta)
        record_event(session, "release", "release.rollback", f"artifact:{release.id}", {"version": version})
    return {"version": version, "model": meta["model"], "restores": meta["restores"]}
