"""``--upstream``: the rails in front of another OpenAI-compatible server, over real HTTP (the stand-in
upstream is a small FastAPI app speaking OpenAI's chat API, whole and streamed)."""

from __future__ import annotations

import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from clinalign import guardrails
from clinalign.serve import oversight
from clinalign.serve.backends import Upstream
from clinalign.serve.chat import create_app
from tests.live_server import serving

ANSWER = "Rest and fluids help. Take 500 mg paracetamol four times a day."


def upstream_app(mode: str) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if mode == "error":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if mode == "slow":
            time.sleep(2)
        if body.get("stream"):

            def events():
                for i in range(0, len(ANSWER), 5):
                    yield f"data: {json.dumps({'choices': [{'delta': {'content': ANSWER[i : i + 5]}}]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        usage = {"prompt_tokens": 7, "completion_tokens": 11}
        return {"choices": [{"message": {"role": "assistant", "content": ANSWER}}], "usage": usage}

    return app


def guarded(store, url: str, timeout: float = 10) -> TestClient:
    with store.session() as session:
        _key, secret = oversight.add_key(session, f"k{time.monotonic_ns()}", "patient", 100, "test")
    http = TestClient(create_app(store, Upstream(url + "/v1", "up-model", timeout=timeout), guardrails.load()))
    http.headers["Authorization"] = f"Bearer {secret}"
    return http


def ask(http, stream=False):
    message = {"role": "user", "content": "I have a cold, what helps?"}
    return http.post("/v1/chat/completions", json={"model": "up-model", "messages": [message], "stream": stream})


def test_the_upstream_answer_passes_the_rails_whole_and_streamed(store):
    with serving(upstream_app("ok")) as url:
        http = guarded(store, url)
        body = ask(http).json()
        text = body["choices"][0]["message"]["content"]
        assert "Rest and fluids help." in text and "500 mg" not in text
        assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
        streamed = ask(http, stream=True).text
        pieces = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
        text = "".join(p["choices"][0]["delta"].get("content", "") for p in pieces)
        assert "Rest and fluids help." in text and "500 mg" not in text


def test_a_failing_or_slow_upstream_fails_closed(store):
    with serving(upstream_app("error")) as url:
        response = ask(guarded(store, url))
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
        assert "boom" not in response.text
    with serving(upstream_app("slow")) as url:
        response = ask(guarded(store, url, timeout=0.5))
        assert response.status_code == 504
