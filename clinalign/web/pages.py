"""What every page shares: the templates, rendering with the visitor, ids from paths and forms, and
field names a person can read in a validation message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated

import jinja2
from fastapi import HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from clinalign.schemas import AXIS_LABELS, ERROR_TAG_LABELS
from clinalign.store import Campaign, aware

HERE = FilePath(__file__).parent

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its extension: reviewers read clinicians' free text
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.globals.update(AXIS_LABELS=AXIS_LABELS, ERROR_TAG_LABELS=ERROR_TAG_LABELS)


def utc(moment: datetime | None) -> str:
    """A stored time as shown: always in UTC and saying so (PostgreSQL hands times back in the server's
    zone, SQLite without one; both were stored as UTC)."""
    return f"{aware(moment).astimezone(UTC):%Y-%m-%d %H:%M} UTC" if moment else ""


templates.env.filters["utc"] = utc

# Row ids are 32-bit on PostgreSQL: anything larger names nothing, and is a 404, not a 500.
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    found = getattr(request.state, "visitor", None)
    return templates.TemplateResponse(
        request, name, {"visitor": found, "csrf": found.csrf if found else "", **context}, status_code=status
    )


def campaign_or_404(session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(status_code=404, detail=f"No campaign {campaign_id}.")
    return campaign


# What each form field is called on the page, for validation messages (never the value typed: it could be PHI).
FIELD_LABELS = {
    "choice": "Choice",
    "rationale": "Rationale",
    "rewrite": "Rewrite",
    "name": "Name",
    "candidates": "Candidate answers",
    "mode": "Kind",
    "overlap": "Clinicians per item (overlap)",
    "gold": "Calibration (gold) items",
    "disagreement": "Adjudicate when the minority share exceeds",
    "routing": "Route items by specialty",
    "axes": "Axes rated 1-5",
    "guidelines": "Guidelines",
    "username": "Username",
    "role": "Role",
    "password": "Password",
    "repeat": "Password again",
    "specialties": "Specialties",
    "active": "Status",
    "reason": "Reason",
    "csrf": "Form token (reload the page)",
    "next": "Next page",
}
_SIDES = {"ratings_a": "a", "ratings_b": "b", "tags_a": "a", "tags_b": "b"}
_SOURCES = ("body", "query", "path", "header", "cookie")


def _label(loc: tuple, pair: bool) -> str:
    loc = loc[1:] if loc and loc[0] in _SOURCES else loc
    if not loc:
        return "the form"
    field = str(loc[0])
    if field in _SIDES:
        answer = f"Answer {_SIDES[field].upper()}" if pair else "Answer"
        if field.startswith("tags"):
            return f"{answer}: error tags"
        axis = str(loc[1]) if len(loc) > 1 else ""
        return f"{answer}: {AXIS_LABELS.get(axis, 'ratings')}"
    return FIELD_LABELS.get(field, field.replace("_", " ").capitalize())


def _need(error: dict) -> str:
    """What the field needs, from the error's type and limits (never its ``input``)."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    if kind == "missing":
        return "required"
    for size, words in (("max_length", "at most"), ("min_length", "at least")):
        if size in ctx and kind in ("string_too_long", "too_long", "string_too_short", "too_short"):
            unit = "character" if kind.startswith("string") else "entry" if ctx[size] == 1 else "entries"
            return f"{words} {ctx[size]} {unit}{'s' if unit == 'character' and ctx[size] != 1 else ''}"
    for bound, words in (("le", "at most"), ("lt", "below"), ("ge", "at least"), ("gt", "above")):
        if bound in ctx and kind in ("less_than_equal", "less_than", "greater_than_equal", "greater_than"):
            return f"{words} {ctx[bound]:g}" if isinstance(ctx[bound], float) else f"{words} {ctx[bound]}"
    if kind.startswith("int_"):
        return "a whole number"
    if kind.startswith("float_"):
        return "a number"
    if kind.startswith("bool_"):
        return "yes or no"
    if kind in ("literal_error", "enum"):
        return "one of the options offered"
    return "not valid"


def problems(errors: list[dict], pair: bool = True) -> str:
    """Each invalid field by its label on the page and what it needs, e.g. "Answer A: Agreement with
    scientific consensus (at most 5)"; one entry per field."""
    found: dict[str, str] = {}
    for error in errors:
        found.setdefault(_label(tuple(error.get("loc", ())), pair), _need(error))
    return "; ".join(f"{label} ({need})" for label, need in found.items())
