"""The monitoring page: safety in use, live from the store (the last day and week), and the newest
``clinalign monitor`` report's drift test."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from clinalign import monitor, plots
from clinalign.store import Artifact, utcnow
from clinalign.web.pages import render
from clinalign.web.security import Visitor, require

router = APIRouter()
readers = require("data_expert", "admin", "reviewer")


@router.get("/monitor")
def page(request: Request, found: Visitor = Depends(readers)):
    now = utcnow()
    with request.app.state.store.reading() as session:
        windows = {
            label: monitor.figures(session, now - span, now)
            for label, span in (("last 24 hours", timedelta(days=1)), ("last 7 days", timedelta(days=7)))
        }
        newest = session.scalars(
            select(Artifact).where(Artifact.kind == "monitor_report").order_by(Artifact.id.desc()).limit(1)
        ).first()
    report = None
    if newest is not None and Path(newest.uri).is_file():
        report = json.loads(Path(newest.uri).read_text())
    week = windows["last 7 days"]
    return render(
        request,
        "monitor.html.j2",
        windows=windows,
        report=report,
        report_id=newest.id if newest else None,
        trips_png=plots.trips_plot(week["trips"]),
        fairness=week["fairness"],
    )
