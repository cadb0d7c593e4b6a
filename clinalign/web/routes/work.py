"""The clinician's pages: work list, the comparison (or single-answer) screen, history and edits."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from clinalign.annotate import queue
from clinalign.schemas import JudgementIn
from clinalign.store import Assignment, Campaign, Judgement, Prompt, Task
from clinalign.web.pages import Id, campaign_or_404, problems, render
from clinalign.web.security import Visitor, check_csrf, require

router = APIRouter()
clinician = require("clinician")


def judgement_from_form(form, campaign: Campaign, csrf: str) -> JudgementIn:
    """Read the comparison form into the shared judgement shape; on error, the fields as the form labels
    them ("Answer A: Empathy"), never the values typed."""
    check_csrf(csrf, form.get("csrf"))
    ratings: dict[str, dict[str, object]] = {"a": {}, "b": {}}
    for side in ratings:
        for axis in campaign.axes:
            value = form.get(f"{side}_{axis}")
            if value not in (None, ""):
                ratings[side][axis] = value
    rewrite = (form.get("rewrite") or "").strip()
    try:
        return JudgementIn.model_validate(
            {
                "choice": form.get("choice"),
                "ratings_a": ratings["a"],
                "ratings_b": ratings["b"] if campaign.mode == "pair" else None,
                "tags_a": form.getlist("tags_a"),
                "tags_b": form.getlist("tags_b"),
                "rationale": (form.get("rationale") or "").strip(),
                "rewrite": rewrite or None,
            }
        )
    except ValidationError as err:
        detail = f"Please correct: {problems(err.errors(), pair=campaign.mode == 'pair')}."
        raise HTTPException(status_code=422, detail=detail) from None


@router.get("/work")
def work_list(request: Request, found: Visitor = Depends(clinician)):
    with request.app.state.store.session() as session:
        campaigns = list(session.scalars(select(Campaign).where(Campaign.status == "open").order_by(Campaign.id)))
        rows = [(c, *queue.progress(session, c, found.user)) for c in campaigns]
    return render(request, "work.html.j2", rows=rows)


@router.get("/work/{campaign_id}/next")
def next_item(request: Request, campaign_id: Id, found: Visitor = Depends(clinician)):
    lease = timedelta(minutes=request.app.state.settings.session_idle_minutes)
    store = request.app.state.store
    with store.reading() as session:
        campaign = campaign_or_404(session, campaign_id)
    assignment = queue.claim_next(store, campaign, found.user, lease)
    with store.reading() as session:
        if assignment is None:
            done, total = queue.progress(session, campaign, found.user)
            return render(request, "done.html.j2", campaign=campaign, done=done, total=total)
        item = queue.item(session, assignment, found.user, campaign)
    # The item itself, not a redirect to it: one round trip fewer between two items. Reloading this
    # page shows the same item again (it stays claimed until judged).
    return render(request, "item.html.j2", item=item, action=f"/items/{assignment.id}", values=None)


@router.get("/items/{assignment_id}")
def show_item(request: Request, assignment_id: Id, found: Visitor = Depends(clinician)):
    store = request.app.state.store
    with store.reading() as session:
        assignment = queue.owned(session, assignment_id, found.user)
        if assignment.judgement_id is not None:
            return RedirectResponse(f"/judgements/{assignment.judgement_id}/edit", status_code=303)
        item = queue.item(session, assignment, found.user)
    with store.session() as session:
        queue.viewed(session, found.user, assignment)
    return render(request, "item.html.j2", item=item, action=f"/items/{assignment_id}", values=None)


def _submit(request: Request, assignment_id: int, found: Visitor, form) -> int:
    store = request.app.state.store
    with store.reading() as session:  # validate before queueing for the write lock
        assignment = queue.owned(session, assignment_id, found.user)
        campaign = session.scalar(select(Campaign).join(Task).where(Task.id == assignment.task_id))
    judgement = judgement_from_form(form, campaign, found.csrf)
    keep = request.app.state.settings.keep_clinician_originals
    with store.session() as session:  # committed before the redirect acknowledges it
        assignment = queue.owned(session, assignment_id, found.user)
        queue.submit(session, assignment, found.user, judgement, campaign, keep_original=keep)
    return campaign.id


@router.post("/items/{assignment_id}")
async def submit_item(request: Request, assignment_id: Id, found: Visitor = Depends(clinician)):
    # async only to read the form; the store is used from the thread pool, never on the event loop
    form = await request.form(max_fields=200, max_files=0)
    campaign_id = await run_in_threadpool(_submit, request, assignment_id, found, form)
    return RedirectResponse(f"/work/{campaign_id}/next", status_code=303)


@router.get("/work/{campaign_id}/history")
def history(request: Request, campaign_id: Id, found: Visitor = Depends(clinician)):
    with request.app.state.store.session() as session:
        campaign = campaign_or_404(session, campaign_id)
        rows = queue.history(session, campaign, found.user)
        questions = dict(
            session.execute(
                select(Task.id, Prompt.text)
                .join(Prompt, Prompt.id == Task.prompt_id)
                .where(Task.id.in_([a.task_id for a, _ in rows]))
            ).all()
        )
    return render(request, "history.html.j2", campaign=campaign, rows=rows, questions=questions)


def _own(session, judgement_id: int, found: Visitor) -> tuple[Judgement, Assignment]:
    judgement = session.get(Judgement, judgement_id)
    assignment = session.scalar(select(Assignment).where(Assignment.judgement_id == judgement_id))
    if judgement is None or assignment is None or judgement.user_id != found.user.id:
        raise queue.NotFound(f"judgement {judgement_id} is not yours")
    return judgement, assignment


@router.get("/judgements/{judgement_id}/edit")
def edit_page(request: Request, judgement_id: Id, found: Visitor = Depends(clinician)):
    with request.app.state.store.session() as session:
        judgement, assignment = _own(session, judgement_id, found)
        item = queue.item(session, assignment, found.user)
        queue.viewed(session, found.user, assignment)
        values = queue.display_order(judgement, assignment.swapped)
    return render(request, "item.html.j2", item=item, action=f"/judgements/{judgement_id}/edit", values=values)


def _edit(request: Request, judgement_id: int, found: Visitor, form) -> int:
    with request.app.state.store.session() as session:
        judgement, _ = _own(session, judgement_id, found)
        campaign = session.get(Campaign, session.get(Task, judgement.task_id).campaign_id)
        keep = request.app.state.settings.keep_clinician_originals
        queue.edit(
            session, judgement_id, found.user, judgement_from_form(form, campaign, found.csrf), keep_original=keep
        )
        return campaign.id


@router.post("/judgements/{judgement_id}/edit")
async def edit(request: Request, judgement_id: Id, found: Visitor = Depends(clinician)):
    form = await request.form(max_fields=200, max_files=0)
    campaign_id = await run_in_threadpool(_edit, request, judgement_id, found, form)
    return RedirectResponse(f"/work/{campaign_id}/history", status_code=303)
