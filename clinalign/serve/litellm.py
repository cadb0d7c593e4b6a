"""LiteLLM's generic guardrail API (``POST /beta/litellm_basic_guardrail_api``), so that a LiteLLM
gateway in front of any model can use clinalign's policy: configure a guardrail with
``guardrail: generic_guardrail_api``, ``api_base`` this server, ``api_key`` a clinalign API key, and
run it ``pre_call`` and ``post_call``.

LiteLLM sends ``texts`` with ``input_type`` ``request`` or ``response`` and expects ``action``
``NONE``, ``GUARDRAIL_INTERVENED`` (with the changed ``texts``) or ``BLOCKED`` (with
``blocked_reason``). The mapping:

* request: PHI is replaced by type tags (intervened, so the model never sees it); a harmful request is
  blocked; the verdict is kept by ``litellm_call_id`` for the response of the same call;
* response: the output rails on each text, with that request's verdict on the first, so that an
  escalation raised on the request is carried to the answer (the emergency text goes first); a tier 2
  answer cannot be held by a gateway, so it is blocked with the review's id and queued for a
  clinician like any held answer; an escalation is notified like one on the chat route. Run the
  guardrail in both modes: a response whose request this server never saw (no ``litellm_call_id``,
  another worker, a restart) is checked on its own, and its reasons say so (``request_unseen``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from clinalign import guardrails, phi
from clinalign.guardrails import Action, Policy, Reason, Verdict, combine
from clinalign.guardrails.rails import output_parts
from clinalign.serve import oversight
from clinalign.store import Store

REMEMBERED = 10_000  # request verdicts kept for their responses (oldest dropped first)


class GuardrailRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    texts: list[str] = []
    images: list[str] | None = None
    input_type: Literal["request", "response"]
    litellm_call_id: str | None = None
    litellm_trace_id: str | None = None
    request_data: dict[str, Any] = {}
    additional_provider_specific_params: dict[str, Any] = {}


def add_routes(app: FastAPI, store: Store, policy: Policy, backend_name: str) -> None:
    requests: OrderedDict[str, tuple[Verdict, list[str]]] = OrderedDict()

    @app.post("/beta/litellm_basic_guardrail_api")
    def apply_guardrail(body: GuardrailRequest, request: Request) -> dict:
        key = request.state.key
        metrics = app.state.metrics
        if body.input_type == "request":
            scrubbed = [phi.scrub(text)[0] for text in body.texts]
            verdict = guardrails.check_input("\n".join(scrubbed), policy=policy)
            if body.litellm_call_id:
                requests[body.litellm_call_id] = (verdict, scrubbed)
                while len(requests) > REMEMBERED:
                    requests.popitem(last=False)
            if verdict.action is Action.BLOCK:
                metrics.errors.labels("blocked").inc()
                return {"action": "BLOCKED", "blocked_reason": "clinalign: a request no answer may serve"}
            changed = scrubbed != body.texts
            return {"action": "GUARDRAIL_INTERVENED", "texts": scrubbed} if changed else {"action": "NONE"}

        remembered = requests.pop(body.litellm_call_id, None) if body.litellm_call_id else None
        verdict, asked = remembered or (Verdict(policy=policy.id), [])
        # One text per text LiteLLM sent; the request's verdict (its escalation) rides on the first.
        checks = [
            output_parts(
                text,
                request=verdict if i == 0 else None,
                policy=policy,
                audience=key.audience,
                disclaimer=i == len(body.texts) - 1,
            )
            for i, text in enumerate(body.texts)
        ]
        combined = combine(*(c.verdict for c in checks)) if checks else verdict
        if remembered is None:  # post_call without its pre_call: the request's own red flags are unknown
            reason = Reason("request_unseen", Action.ALLOW, "litellm", "no pre_call verdict for this call id")
            combined = combine(combined, Verdict(reasons=(reason,)))
        held = combined.tier == 2
        answer = "\n\n".join(c.deidentified for c in checks)
        texts = [c.text for c in checks]
        with store.session() as session:
            interaction = oversight.record(
                session,
                key=key,
                model=f"litellm:{backend_name}",
                answer=answer,
                messages=[{"role": "user", "content": t} for t in asked],
                checked="\n\n".join(texts),
                sent=None if held else "\n\n".join(texts),
                verdict=combined,
                status="held" if held else "sent",
                tags={},
            )
            session.flush()
            session.expunge(interaction)
        metrics.answered(
            combined.tier, str(combined.action), [r.as_dict() for r in combined.reasons], combined.escalate
        )
        if combined.escalate:
            app.state.notify(interaction)
        if held or combined.action is Action.BLOCK:
            reason = (
                f"clinalign: held for clinician review (interaction {interaction.id})" if held else "clinalign: blocked"
            )
            return {"action": "BLOCKED", "blocked_reason": reason}
        return {"action": "GUARDRAIL_INTERVENED", "texts": texts} if texts != body.texts else {"action": "NONE"}
