"""What every page shares: the templates, rendering with the visitor, ids from paths and forms, and
field names a person can read in a validation message."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

import jinja2
from fastapi import HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from clinalign.schemas import AXIS_LABELS, ERROR_TAG_LABELS
from clinalign.store import Campaign

HERE = FilePath(__file__).parent

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its extension: reviewers read clinicians' free text
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.globals.update(AXIS_LABELS=AXIS_LABELS, ERROR_TAG_LABELS=ERROR_TAG_LABELS)

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
