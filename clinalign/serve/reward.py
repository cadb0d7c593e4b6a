"""``clinalign reward serve``: the clinical reward model over HTTP, for RL engines in other processes.

* ``POST /get_reward``: OpenRLHF's remote reward (``--reward.remote_url``): ``{"query": [...],
  "prompts": [...], "labels": [...]}`` -> ``{"rewards": [...], "scores": [...], "extra_logs": {axis:
  [...], "uncertainty": [...]}}``, every list aligned with ``query`` (empty lists allowed).
* ``POST /score``: ``{"prompts": [...], "answers": [...]}`` -> ``{"aggregate", "uncertainty", "axes"}``,
  what ``clinalign.rewards.Remote`` (TRL callables, verl's ``compute_score``) calls.
* ``GET /health``: the model served (its artifact id and digest when it came from the store) and its axes.

One request is one batched scoring call; requests take turns on the model (on a CPU, two batches at
once only split the same cores). Errors are a JSON body ``{"error": "..."}`` naming the field: 422 for
a malformed or misaligned request, 413 beyond the size limits, 401 without the key. Bound beyond
loopback, the service requires an API key (``Authorization: Bearer``), compared in constant time.
"""

from __future__ import annotations

import hmac
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from clinalign import rewards
from clinalign.schemas import ClinalignError
from clinalign.settings import is_loopback

MAX_BODY = 4 * rewards.MAX_ITEMS * rewards.MAX_CHARS  # bytes: every text at its limit, JSON-escaped


class OpenRLHFRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenRLHF may send more keys in later versions
    query: list[str]
    prompts: list[str] | None = None
    labels: list | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: list[str]
    answers: list[str]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(folder: str, info: dict | None = None, api_key: str | None = None) -> FastAPI:
    """The service for the reward-model ``folder``; ``info`` is shown by ``/health``."""
    scorer = rewards.Local(folder)
    scorer.score(["warm-up"], ["warm-up"])  # load the encoder now, not on a client's first request
    turn = threading.Lock()
    app = FastAPI(title="clinalign reward", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if request.method == "POST" and not length.isdigit():  # a chunked body would be read whole, unbounded
            return _error(411, "send Content-Length with the request body")
        if length.isdigit() and int(length) > MAX_BODY:
            return _error(413, f"request body of {int(length)} bytes; at most {MAX_BODY}")
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer ...)")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(rewards.RewardError)
    async def refused(_request, exc: rewards.RewardError):
        return _error(413 if isinstance(exc, rewards.TooLarge) else 422, str(exc))

    def score(prompts: list[str], answers: list[str]) -> dict:
        rewards.check_batch(prompts, answers)  # before waiting for the model
        with turn:
            return scorer.score(prompts, answers)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "axes": scorer.axes, **(info or {})}

    @app.post("/score")
    def score_pairs(body: ScoreRequest) -> dict:
        return score(body.prompts, body.answers)

    @app.post("/get_reward")
    def get_reward(body: OpenRLHFRequest) -> dict:
        for name in ("prompts", "labels"):
            given = getattr(body, name)
            if given is not None and len(given) != len(body.query):
                raise rewards.RewardError(f"{name}: {len(given)} items for {len(body.query)} queries")
        pairs = [rewards.split_query(q, body.prompts[i] if body.prompts else None) for i, q in enumerate(body.query)]
        scores = score([p for p, _ in pairs], [a for _, a in pairs])
        return {
            "rewards": scores["aggregate"],
            "scores": scores["aggregate"],
            "extra_logs": {**scores["axes"], "uncertainty": scores["uncertainty"]},
        }

    return app


def serve(folder: str, host: str, port: int, info: dict | None = None, api_key: str | None = None) -> None:
    """Run the service under uvicorn; beyond loopback only with an API key."""
    import uvicorn

    if not is_loopback(host) and not api_key:
        raise ClinalignError(f"binding {host} exposes the reward model: set CLINALIGN_REWARD_API_KEY first")
    uvicorn.run(create_app(folder, info, api_key), host=host, port=port, log_level="warning")
