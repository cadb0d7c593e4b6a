"""Data experts' pages: campaigns (create, list), the agreement dashboard, and exports."""

from __future__ import annotations

import io
import re
import zipfile

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from clinalign import plots, preferences
from clinalign.annotate.campaigns import DEFAULT_GUIDELINES, Config, reach
from clinalign.audit import record_event
from clinalign.schemas import AXES
from clinalign.stages import run_stage
from clinalign.store import Campaign, Judgement, Run, Task, artifacts_of_kind
from clinalign.web.pages import MAX_ID, Id, campaign_or_404, problems, render
from clinalign.web.security import Visitor, check_csrf, require

router = APIRouter()
experts = require("data_expert", "admin")
readers = require("data_expert", "admin", "reviewer")


@router.get("/campaigns")
def campaign_list(request: Request, found: Visitor = Depends(readers)):
    with request.app.state.store.session() as session:
        campaigns = list(session.scalars(select(Campaign).order_by(Campaign.id)))
        counts = dict(
            session.execute(
                select(Task.campaign_id, func.count(Judgement.id))
                .join(Judgement, Judgement.task_id == Task.id)
                .group_by(Task.campaign_id)
            ).all()
        )
        items = dict(session.execute(select(Task.campaign_id, func.sum(Task.overlap)).group_by(Task.campaign_id)).all())
    rows = [(c, counts.get(c.id, 0), items.get(c.id) or 0) for c in campaigns]
    return render(request, "campaigns.html.j2", rows=rows)


@router.get("/campaigns/new")
def new_campaign(request: Request, found: Visitor = Depends(experts)):
    with request.app.state.store.session() as session:
        sources = artifacts_of_kind(session, "candidates")
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_({a.run_id for a in sources})))}
    return render(request, "campaign_new.html.j2", sources=sources, runs=runs, axes=AXES, guidelines=DEFAULT_GUIDELINES)


@router.post("/campaigns")
def create(
    request: Request,
    found: Visitor = Depends(experts),
    csrf: str = Form(max_length=100),
    name: str = Form(max_length=100),
    candidates: int = Form(ge=1, le=MAX_ID),
    mode: str = Form(max_length=10),
    overlap: int = Form(ge=1, le=20),
    gold: int = Form(default=0, ge=0, le=10_000),
    guidelines: str = Form(default="", max_length=20_000),
    axes: list[str] = Form(default=[]),
    routing: bool = Form(default=False),
    disagreement: float = Form(default=0.34, ge=0, le=1),
):
    check_csrf(found.csrf, csrf)
    try:
        config = Config(
            name=name.strip(),
            candidates=candidates,
            mode=mode,
            overlap=overlap,
            gold=gold,
            guidelines=guidelines.strip() or DEFAULT_GUIDELINES,
            axes=axes,
            routing=routing,
            disagreement=disagreement,
        )
    except ValidationError as err:
        raise HTTPException(status_code=422, detail=f"Please correct: {problems(err.errors())}.") from None
    settings = request.app.state.settings
    made = run_stage("annotate.campaign", request.app.state.store, settings.data_dir, config, actor=found.user.username)
    return RedirectResponse(f"/campaigns/{made.metrics['campaign']}", status_code=303)


@router.get("/campaigns/{campaign_id}")
def dashboard(request: Request, campaign_id: Id, found: Visitor = Depends(readers)):
    with request.app.state.store.session() as session:
        campaign = campaign_or_404(session, campaign_id)
        figures = preferences.stats(session, preferences.Config(campaign=campaign.name))
        disputed = len(preferences.disputed(session, campaign))
        judged = session.scalar(
            select(func.count(Judgement.id))
            .join(Task, Task.id == Judgement.task_id)
            .where(Task.campaign_id == campaign.id)
        )
        wanted = session.scalar(select(func.sum(Task.overlap)).where(Task.campaign_id == campaign.id)) or 0
        short = reach(session, campaign)
    plot = plots.agreement_plot(figures) if figures["judgements"] else None
    return render(
        request,
        "dashboard.html.j2",
        campaign=campaign,
        f=figures,
        plot=plot,
        disputed=disputed,
        judged=judged,
        wanted=wanted,
        short=short,
    )


@router.post("/campaigns/{campaign_id}/export")
def export(request: Request, campaign_id: Id, found: Visitor = Depends(experts), csrf: str = Form(max_length=100)):
    """Run the preferences stage on this campaign and send its files as one zip."""
    check_csrf(found.csrf, csrf)
    with request.app.state.store.session() as session:
        campaign = campaign_or_404(session, campaign_id)
    config = preferences.Config(campaign=campaign.name)
    settings = request.app.state.settings
    made = run_stage("preferences", request.app.state.store, settings.data_dir, config)
    figures = made.metrics
    folder = settings.data_dir / "artifacts" / str(made.run_id) / "preferences"
    with request.app.state.store.session() as session:
        record_event(
            session, found.user.username, "export", f"artifact:{figures['artifact']}", {"campaign": campaign.id}
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", f"clinalign-{campaign.name}-export-{figures['artifact']}.zip")
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
