"""Tiered oversight of served answers: the tier 2 queue (approve, edit or reject, with a reason), the
escalations sent at once (tier 3), flags on any served answer, and the override rate per tier."""

from __future__ import annotations

import logging
import threading

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from clinalign import monitor
from clinalign.schemas import ERROR_TAGS, ClinalignError
from clinalign.serve import oversight
from clinalign.store import ApiKey, Flag, Interaction
from clinalign.web.pages import Id, render
from clinalign.web.security import Visitor, check_csrf, require

log = logging.getLogger(__name__)
router = APIRouter()
clinical = require("clinician", "reviewer")


@router.get("/oversight")
def queue(request: Request, found: Visitor = Depends(clinical)):
    with request.app.state.store.reading() as session:
        held = oversight.pending(session)
        recent = select(Interaction).where(Interaction.status != "held").order_by(Interaction.id.desc()).limit(30)
        sent = list(session.scalars(recent))
        rates = monitor.override_rates(session)
    return render(request, "oversight.html.j2", held=held, sent=sent, rates=rates)


def _interaction(session, interaction_id: int) -> Interaction:
    interaction = session.get(Interaction, interaction_id)
    if interaction is None:
        raise HTTPException(status_code=404, detail=f"No served answer {interaction_id}.")
    return interaction


@router.get("/oversight/{interaction_id}")
def interaction_page(request: Request, interaction_id: Id, found: Visitor = Depends(clinical)):
    with request.app.state.store.reading() as session:
        interaction = _interaction(session, interaction_id)
        flags = list(session.scalars(select(Flag).where(Flag.interaction_id == interaction_id).order_by(Flag.id)))
    return render(request, "oversight_item.html.j2", item=interaction, flags=flags, error=None)


def _callback(url: str, payload: dict) -> None:
    """Post a decided answer to the client's callback (set on its key by an admin), off the request."""

    def post() -> None:
        import httpx

        try:
            httpx.post(url, json=payload, timeout=10).raise_for_status()
        except httpx.HTTPError as err:  # the client can still poll; the failure is logged by id only
            log.warning("callback for interaction %s failed (%s)", payload["id"], type(err).__name__)

    threading.Thread(target=post, daemon=True).start()


@router.post("/oversight/{interaction_id}/decide")
def decide(
    request: Request,
    interaction_id: Id,
    found: Visitor = Depends(clinical),
    csrf: str = Form(max_length=100),
    decision: str = Form(max_length=10),
    reason: str = Form("", max_length=4000),
    text: str = Form("", max_length=oversight.MAX_TEXT),
):
    check_csrf(found.csrf, csrf)
    store = request.app.state.store
    try:
        with store.session() as session:
            interaction = _interaction(session, interaction_id)
            oversight.decide(session, interaction_id, found.user, decision, text, reason)
            key = session.get(ApiKey, interaction.api_key_id)
            callback = (key.callback_url, oversight.result(interaction)) if key.callback_url else None
    except ClinalignError as err:
        with store.reading() as session:
            interaction = _interaction(session, interaction_id)
            flags = list(session.scalars(select(Flag).where(Flag.interaction_id == interaction_id)))
        return render(request, "oversight_item.html.j2", status=422, item=interaction, flags=flags, error=str(err))
    if callback:
        _callback(*callback)
    return RedirectResponse("/oversight", status_code=303)


@router.post("/oversight/{interaction_id}/flag")
async def flag(request: Request, interaction_id: Id, found: Visitor = Depends(clinical)):
    form = await request.form()
    check_csrf(found.csrf, str(form.get("csrf", "")))
    tags = [t for t in form.getlist("error_tags") if t in ERROR_TAGS]
    correction = str(form.get("correction", ""))[: oversight.MAX_TEXT]
    store = request.app.state.store
    try:
        with store.session() as session:
            _interaction(session, interaction_id)
            oversight.flag(session, interaction_id, error_tags=tags, correction=correction, user=found.user)
    except ClinalignError as err:
        with store.reading() as session:
            interaction = _interaction(session, interaction_id)
            flags = list(session.scalars(select(Flag).where(Flag.interaction_id == interaction_id)))
        return render(request, "oversight_item.html.j2", status=422, item=interaction, flags=flags, error=str(err))
    return RedirectResponse(f"/oversight/{interaction_id}", status_code=303)
