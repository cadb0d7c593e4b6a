"""``clinalign serve``: an OpenAI-compatible chat API in front of a model, with the guardrail policy on
every request and every answer, tiered clinician oversight, per-client API keys and rate limits.

* ``GET /v1/models``; ``POST /v1/chat/completions`` (whole, or streamed as server-sent events);
* ``GET /v1/reviews/{id}``: a held (tier 2) answer's status, and the clinician's answer once decided;
* ``POST /v1/flags``: a client reports a served answer as wrong (error tags, correction);
* ``POST /beta/litellm_basic_guardrail_api``: LiteLLM's generic guardrail API (``litellm.py``);
* ``GET /metrics`` (Prometheus) and ``GET /health``, without a key.

Every request: API key, rate limit, size limits, PHI replaced by type tags before the model or the
store sees it, input rails; every answer: output rails, then by tier: 1 sent, 2 held for a clinician
(the client gets 202 and the holding text, and polls), 3 sent at once with emergency guidance. A
failing model or a failing rail never lets an unchecked answer out (fail closed). Errors are
OpenAI-shaped (``{"error": {"message", "type", "code", "param"}}``), never a stack trace or PHI.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from clinalign import guardrails, phi
from clinalign.guardrails import Action, Policy
from clinalign.guardrails.rails import Checked, fallback_text, output_parts
from clinalign.schemas import ERROR_TAGS, ClinalignError
from clinalign.serve import oversight
from clinalign.serve.backends import BackendError, Sampling
from clinalign.serve.gate import Gate, error
from clinalign.serve.metrics import Metrics
from clinalign.store import ApiKey, Interaction, Store

log = logging.getLogger(__name__)

MAX_MESSAGES = 64
MAX_TOKENS = 1024
_SENTENCE_END = re.compile(r"[.!?\n](?=\s)")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields that change nothing here (user...)
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    """Demographic and context tags, kept with the interaction for the fairness breakdowns."""


class FlagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interaction: int
    error_tags: list[Literal[ERROR_TAGS]] = Field(min_length=1)  # type: ignore[valid-type]
    correction: str | None = Field(None, max_length=oversight.MAX_TEXT)


class Served:
    """One interaction in progress: the request's verdict and what the rails let out."""

    def __init__(self, key: ApiKey, body: ChatRequest, policy: Policy, scorer=None):
        self.key, self.body, self.policy, self.scorer = key, body, policy, scorer
        self.started = time.perf_counter()
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        given = [{"role": m.role, "content": m.text()} for m in body.messages]
        self.messages = oversight.deidentify_messages(given)
        # The input rails read every message as given, in memory: a harmful request in a system turn
        # counts, and PHI tags must not hide words ("Sudden Worst Headache Of My Life" reads as names
        # to a name detector). What they keep as evidence is scrubbed (``guardrails.rails``).
        self.request = guardrails.check_input("\n".join(m["content"] for m in given), policy=policy)

    def sampling(self, default_tokens: int) -> Sampling:
        tokens = self.body.max_completion_tokens or self.body.max_tokens or default_tokens
        return Sampling(tokens, self.body.temperature, self.body.top_p)

    def check(self, answer: str, final: bool = True) -> Checked:
        """The output rails; on the whole answer (``final``) with the reward-model ensemble's spread
        when a reward model is configured, so that answers it is unsure of go to review."""
        spread = None
        if final and self.scorer is not None and answer.strip():
            question = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
            spread = self.scorer.score([question], [answer])["uncertainty"][0]
        return output_parts(
            answer,
            request=self.request,
            policy=self.policy,
            audience=self.key.audience,
            reward_spread=spread,
            disclaimer=True,
        )


def create_app(
    store: Store,
    backend,
    policy: Policy,
    *,
    max_tokens: int = 256,
    rate_storage: str = "memory://",
    scorer=None,
    notify_url: str | None = None,
    key_ttl: float = 2.0,
):
    """The guarded API for ``backend`` (``backends.LocalModel`` or ``backends.Upstream``). ``scorer`` (a
    ``rewards.Local``) routes answers the reward-model ensemble disagrees on to review; ``notify_url``
    hears of every escalation (tier 3) at once: ``{"interaction", "disposition", "categories"}``, no text.
    ``key_ttl``: see ``gate.Gate``."""
    from contextlib import asynccontextmanager

    from starlette.concurrency import run_in_threadpool

    from clinalign.audit import Sealer
    from clinalign.serve import litellm

    sys.setswitchinterval(0.0005)  # as in the web app: SQLite writers take turns on one lock

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Requests record audit events; the sealer chains them off the request path, and seals the
        # rest when the server stops. Every 2 s, not the web app's 0.25 s: a seal holds SQLite's write
        # lock, and requests waiting on it were the whole p99 of serving's overhead (7.3 ms against
        # 4.2 ms without seals, bench/guardrails.py). Events are committed and signed meanwhile.
        sealer = Sealer(store, every=2.0).start()
        yield
        await run_in_threadpool(sealer.close)

    metrics = Metrics(store)
    app = FastAPI(title="clinalign serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.metrics = metrics

    app.add_middleware(Gate, store=store, metrics=metrics, rate_storage=rate_storage, key_ttl=key_ttl)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, str(exc.detail), "invalid_request_error", code)

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        log.error("unexpected %s while serving; nothing unchecked was sent", type(exc).__name__)
        return error(500, "internal error; nothing unchecked was sent", "api_error", "internal_error")

    @app.exception_handler(RequestValidationError)
    async def malformed(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error(400, f"{where}: {first.get('msg', 'invalid')}", "invalid_request_error", "invalid_value", where)

    def save(
        served: Served,
        *,
        answer: str | None,
        checked: Checked | None,
        sent: str | None,
        status: str,
        usage: tuple[int | None, int | None] = (None, None),
    ) -> Interaction:
        verdict = checked.verdict if checked is not None else served.request
        with store.session() as session:
            interaction = oversight.record(
                session,
                key=served.key,
                model=backend.name,
                messages=served.messages,
                answer=(checked.deidentified or None) if checked is not None else answer,
                checked=None if checked is None else checked.text,
                sent=sent,
                verdict=verdict,
                status=status,
                tags=served.body.metadata or {},
                seconds=time.perf_counter() - served.started,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
            session.flush()
            session.expunge(interaction)
        if status != "failed":
            metrics.answered(interaction.tier, interaction.action, interaction.reasons, interaction.escalate)
            metrics.latency.observe(time.perf_counter() - served.started)
        if interaction.escalate:  # failed or not: the person may be in danger
            notify(interaction)
        return interaction

    def notify(interaction: Interaction) -> None:
        """Tell the on-call clinicians' system of an escalation, off the request (ids and categories only)."""
        if not notify_url:
            return
        payload = {
            "interaction": interaction.id,
            "disposition": interaction.disposition,
            "categories": sorted({r.get("category", "") for r in interaction.reasons if r["rule"] == "red_flag"}),
        }

        def post() -> None:
            import httpx

            try:
                httpx.post(notify_url, json=payload, timeout=10).raise_for_status()
            except httpx.HTTPError as err:  # the escalation is on the oversight page and in the audit trail
                log.warning("escalation notice for interaction %s failed (%s)", interaction.id, type(err).__name__)
                metrics.errors.labels("notify").inc()

        threading.Thread(target=post, daemon=True).start()

    app.state.notify = notify

    def completion(served: Served, content: str, interaction: Interaction, finish: str) -> dict:
        return {
            "id": served.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": backend.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": interaction.prompt_tokens or 0,
                "completion_tokens": interaction.completion_tokens or 0,
                "total_tokens": (interaction.prompt_tokens or 0) + (interaction.completion_tokens or 0),
            },
            "clinalign": extension(interaction),
        }

    def extension(interaction: Interaction) -> dict:
        found = {
            "interaction": interaction.id,
            "tier": interaction.tier,
            "action": interaction.action,
            "escalate": interaction.escalate,
            "policy": interaction.policy,
            "reasons": [{"rule": r["rule"], "category": r.get("category", "")} for r in interaction.reasons],
        }
        if interaction.status == "held":
            found["review"] = {"status": "held", "poll": f"/v1/reviews/{interaction.id}"}
        return found

    def failure(served: Served, err: Exception) -> tuple[Interaction, str | None, JSONResponse]:
        """Record a failed answer. An escalated request still gets the emergency guidance (the one
        text that needs no model and no check); anything else gets the error only."""
        fallback = fallback_text(served.request, policy) if served.request.escalate else None
        interaction = save(served, answer=None, checked=None, sent=fallback, status="failed")
        if isinstance(err, BackendError):
            metrics.errors.labels("upstream").inc()
            return interaction, fallback, error(err.status, str(err), "api_error", "upstream_error")
        log.error("guardrail failure on a request (%s); nothing unchecked was sent", type(err).__name__)
        metrics.errors.labels("rails").inc()
        response = error(503, "the answer could not be checked, so it was not sent", "api_error", "guardrail_failure")
        return interaction, fallback, response

    def failed(served: Served, err: Exception):
        interaction, fallback, response = failure(served, err)
        if fallback is None:
            return response
        body = completion(served, fallback, interaction, "stop")
        body["clinalign"]["error"] = json.loads(response.body)["error"]["message"]
        return body

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": backend.name, "policy": policy.id}

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": backend.name, "object": "model", "owned_by": "clinalign"}]}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest, request: Request):
        if body.model != backend.name:
            return error(
                404,
                f"model {body.model[:100]!r} is not served here; see /v1/models",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        with metrics.rail_seconds.labels("input").time():
            try:
                served = Served(request.state.key, body, policy, scorer)
            except Exception as err:  # fail closed: no model call on an unchecked request
                log.error("input rails failed (%s)", type(err).__name__)
                metrics.errors.labels("rails").inc()
                return error(503, "the request could not be checked", "api_error", "guardrail_failure")
        if body.stream:
            return StreamingResponse(stream(served), media_type="text/event-stream")
        if served.request.action is Action.BLOCK:
            checked = served.check("")
            interaction = save(served, answer=None, checked=checked, sent=checked.text, status="blocked")
            return completion(served, checked.text, interaction, "content_filter")
        try:
            answer = backend.complete(served.messages, served.sampling(max_tokens))
            with metrics.rail_seconds.labels("output").time():
                checked = served.check(answer.text)
        except Exception as err:
            return failed(served, err)
        usage = (answer.prompt_tokens, answer.completion_tokens)
        metrics.prompt_tokens.inc(answer.prompt_tokens or 0)
        metrics.generation_tokens.inc(answer.completion_tokens or 0)
        if checked.verdict.tier == 2:
            interaction = save(served, answer=answer.text, checked=checked, sent=None, status="held", usage=usage)
            return JSONResponse(completion(served, policy.texts.held, interaction, "stop"), status_code=202)
        interaction = save(served, answer=answer.text, checked=checked, sent=checked.text, status="sent", usage=usage)
        return completion(served, checked.text, interaction, "stop")

    def stream(served: Served) -> Iterator[str]:
        """Server-sent events. The answer is released sentence by sentence, each only after the output
        rails have passed everything up to it; the emergency text goes first; notes go last. If a
        later sentence calls for review, or would change what was already released, nothing more of
        the answer is released: the rest waits for a clinician."""

        def event(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
            chunk = {
                "id": served.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": backend.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps({**chunk, **(extra or {})})}\n\n"

        yield event({"role": "assistant", "content": ""})
        if served.request.action is Action.BLOCK:
            checked = served.check("")
            interaction = save(served, answer=None, checked=checked, sent=checked.text, status="blocked")
            yield event({"content": checked.text}, "content_filter", {"clinalign": extension(interaction)})
            yield "data: [DONE]\n\n"
            return
        raw, header_out, body_out, held, checked_upto = "", False, "", False, 0
        released: list[str] = []
        saved = False

        def release(text: str) -> str:
            released.append(text)
            if len(released) == 1:
                metrics.first_token.observe(time.perf_counter() - served.started)
            return event({"content": text})

        def emergency_first(checked: Checked) -> Iterator[str]:
            """The emergency text as soon as the case escalates, held or not, before anything else."""
            nonlocal header_out
            if checked.header and not header_out:
                header_out = True
                yield release(("\n\n" if released else "") + checked.header + "\n\n")

        try:
            try:
                for piece in backend.stream(served.messages, served.sampling(max_tokens)):
                    raw += piece
                    ends = [m.end() for m in _SENTENCE_END.finditer(raw, checked_upto)]
                    if held or not ends or scorer is not None:  # the ensemble judges whole answers only
                        continue
                    checked_upto = ends[-1]
                    checked = served.check(raw[:checked_upto], final=False)
                    yield from emergency_first(checked)
                    if checked.verdict.tier == 2 or not checked.body.startswith(body_out):
                        held = True
                        yield release(("\n\n" if released else "") + policy.texts.held)
                        continue
                    if len(checked.body) > len(body_out):
                        yield release(checked.body[len(body_out) :])
                        body_out = checked.body
                checked = served.check(raw)
            except Exception as err:
                saved = True
                interaction, fallback, response = failure(served, err)
                if fallback and not header_out:
                    yield release(("\n\n" if released else "") + fallback)
                yield f"data: {json.dumps({'error': json.loads(response.body)['error']})}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield from emergency_first(checked)
            if not held and (checked.verdict.tier == 2 or not checked.body.startswith(body_out)):
                held = True
                yield release(("\n\n" if released else "") + policy.texts.held)
            if held:
                if checked.verdict.escalate and checked.notes:  # crisis lines, Poison Control: not for later
                    yield release("".join("\n\n" + note for note in checked.notes))
            else:
                rest = checked.body[len(body_out) :] + "".join("\n\n" + note for note in checked.notes)
                if rest:
                    yield release(rest)
            saved = True
            interaction = save(
                served, answer=raw, checked=checked, sent="".join(released), status="held" if held else "sent"
            )
            yield event({}, "stop", {"clinalign": extension(interaction)})
            yield "data: [DONE]\n\n"
        finally:
            if not saved:  # the client went away mid-stream: keep what it was sent
                save(served, answer=phi.scrub(raw)[0], checked=None, sent="".join(released), status="cut")

    @app.get("/v1/reviews/{interaction_id}")
    def review(interaction_id: int, request: Request):
        with store.reading() as session:
            interaction = session.get(Interaction, interaction_id)
            if interaction is None or interaction.api_key_id != request.state.key.id:
                return error(404, f"no interaction {interaction_id} for this key", "invalid_request_error", "not_found")
            return oversight.result(interaction)

    @app.post("/v1/flags")
    def flag(body: FlagRequest, request: Request):
        try:
            with store.session() as session:
                found = oversight.flag(
                    session,
                    body.interaction,
                    error_tags=list(body.error_tags),
                    correction=body.correction,
                    key=request.state.key,
                )
                flag_id = found.id
        except ClinalignError as err:
            return error(404, str(err), "invalid_request_error", "not_found", "interaction")
        return {"flag": flag_id, "interaction": body.interaction}

    litellm.add_routes(app, store, policy, backend.name)
    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
