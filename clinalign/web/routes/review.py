"""The reviewer's adjudication queue: disputed items, every judgement shown, one decision with a reason."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from clinalign import preferences
from clinalign.store import Campaign, Candidate, Prompt, Task, User
from clinalign.web.pages import Id, campaign_or_404, render
from clinalign.web.security import Visitor, check_csrf, require

router = APIRouter()
reviewer = require("reviewer")


@router.get("/review")
def queues(request: Request, found: Visitor = Depends(reviewer)):
    with request.app.state.store.session() as session:
        campaigns = list(session.scalars(select(Campaign).order_by(Campaign.id)))
        rows = [(c, len(preferences.disputed(session, c))) for c in campaigns]
    return render(request, "review.html.j2", rows=rows)


@router.get("/review/{campaign_id}")
def next_disputed(request: Request, campaign_id: Id, found: Visitor = Depends(reviewer)):
    with request.app.state.store.session() as session:
        campaign = campaign_or_404(session, campaign_id)
        queue = preferences.disputed(session, campaign)
        if not queue:
            return render(request, "review_done.html.j2", campaign=campaign)
        task, judgements = queue[0]
        prompt = session.get(Prompt, task.prompt_id)
        ids = [task.candidate_a_id] + ([task.candidate_b_id] if task.candidate_b_id else [])
        texts = {c.id: c.text for c in session.scalars(select(Candidate).where(Candidate.id.in_(ids)))}
        names = {
            u.id: u.username for u in session.scalars(select(User).where(User.id.in_([j.user_id for j in judgements])))
        }
    return render(
        request,
        "adjudicate.html.j2",
        campaign=campaign,
        task=task,
        prompt=prompt,
        answers=[texts[i] for i in ids],
        judgements=judgements,
        names=names,
        remaining=len(queue),
    )


@router.post("/review/items/{task_id}")
def decide(
    request: Request,
    task_id: Id,
    found: Visitor = Depends(reviewer),
    csrf: str = Form(max_length=100),
    choice: str = Form(max_length=20),
    reason: str = Form(max_length=4000),
):
    check_csrf(found.csrf, csrf)
    with request.app.state.store.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise HTTPException(status_code=404, detail=f"No item {task_id}.")
        preferences.adjudicate(session, task_id, found.user, choice, reason)
    return RedirectResponse(f"/review/{task.campaign_id}", status_code=303)
