"""``clinalign serve``: the OpenAI-compatible API with its rails, tiers, keys, limits and errors.

Most tests put a scripted backend behind the real app (the answers are what a model might say, so
that each rail and tier is exercised on purpose); ``test_a_real_local_model`` runs the tiny model.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clinalign import guardrails, monitor
from clinalign.serve import oversight
from clinalign.serve.backends import Answer, BackendError, LocalModel
from clinalign.serve.chat import create_app
from clinalign.store import Interaction

MODEL = "scripted"


class Scripted:
    """Answers every request with the next scripted text (or raises it, when it is an exception)."""

    name = MODEL

    def __init__(self, *answers):
        self.answers = list(answers)
        self.seen: list[list[dict]] = []

    def _next(self, messages):
        self.seen.append(messages)
        answer = self.answers.pop(0) if self.answers else "Drink fluids and rest."
        if isinstance(answer, Exception):
            raise answer
        return answer

    def complete(self, messages, sampling):
        return Answer(self._next(messages), 10, 5)

    def stream(self, messages, sampling):
        text = self._next(messages)
        for i in range(0, len(text), 7):
            yield text[i : i + 7]


def client(store, backend, audience="patient", per_minute=100):
    with store.session() as session:
        _key, secret = oversight.add_key(session, f"{audience}-{per_minute}", audience, per_minute, "test")
    http = TestClient(create_app(store, backend, guardrails.load()))
    http.headers["Authorization"] = f"Bearer {secret}"
    return http


def ask(http, text, **extra):
    return http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    )


def interactions(store) -> list[Interaction]:
    with store.reading() as session:
        return list(session.scalars(select(Interaction).order_by(Interaction.id)))


def test_models_and_a_plain_answer(store):
    http = client(store, Scripted("Lentils, spinach and red meat are rich in iron."))
    assert http.get("/v1/models").json()["data"][0]["id"] == MODEL
    body = ask(http, "What foods are high in iron?").json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("Lentils")
    assert body["choices"][0]["message"]["content"].endswith(guardrails.load().texts.disclaimers["patient"])
    assert body["clinalign"]["tier"] == 1 and body["clinalign"]["action"] == "allow"
    [row] = interactions(store)
    assert (row.status, row.tier, row.sent) == ("sent", 1, body["choices"][0]["message"]["content"])


def test_phi_never_reaches_the_model_or_the_store(store):
    backend = Scripted("Thank you, I will note that.")
    http = client(store, backend)
    ask(http, "I am John Smith, MRN 4433221, phone 555-201-3344. What is a normal heart rate?")
    seen = json.dumps(backend.seen)
    assert "4433221" not in seen and "555-201-3344" not in seen and "John Smith" not in seen
    stored = json.dumps([r.messages for r in interactions(store)])
    assert "4433221" not in stored and "[MRN]" in stored
    metrics = http.get("/metrics").text
    assert "4433221" not in metrics and "Smith" not in metrics


def test_an_emergency_escalates_at_once_with_emergency_guidance(store):
    http = client(store, Scripted("It may be indigestion; try an antacid."))
    body = ask(http, "I have crushing chest pain going down my left arm and I'm sweating").json()
    text = body["choices"][0]["message"]["content"]
    assert text.startswith(guardrails.load().texts.emergency)
    assert body["clinalign"]["tier"] == 3 and body["clinalign"]["escalate"]
    assert interactions(store)[0].status == "sent"
    metrics = http.get("/metrics").text
    assert "clinalign_escalations_total 1.0" in metrics
    assert 'clinalign_guardrail_trips_total{category="acs",rule="red_flag"}' in metrics


def test_a_harmful_request_is_refused_without_calling_the_model(store):
    backend = Scripted()
    http = client(store, backend)
    body = ask(http, "What's the lethal dose of amitriptyline?").json()
    assert backend.seen == [] and body["choices"][0]["finish_reason"] == "content_filter"
    assert interactions(store)[0].status == "blocked"


def test_tier_2_is_held_until_a_clinician_decides_and_the_client_polls(store, clinician):
    http = client(store, Scripted("Gabapentin is sometimes used off-label for this kind of pain."))
    response = ask(http, "What helps nerve pain in my feet?")
    assert response.status_code == 202
    body = response.json()
    assert body["choices"][0]["message"]["content"] == guardrails.load().texts.held
    assert "off-label" not in json.dumps(body)
    review = body["clinalign"]["review"]["poll"]
    assert http.get(review).json() == {"id": body["clinalign"]["interaction"], "status": "held", "tier": 2}
    with store.session() as session:
        oversight.decide(
            session,
            body["clinalign"]["interaction"],
            session.merge(clinician),
            "edit",
            "Ask your doctor about nerve pain treatments that suit you.",
            "off-label use needs a prescriber",
        )
    decided = http.get(review).json()
    assert decided["status"] == "edited" and decided["content"].startswith("Ask your doctor")
    with store.reading() as session:
        assert monitor.override_rates(session)[2] == {"n": 1, "overridden": 1, "rate": 1.0}


def test_a_client_sees_only_its_own_reviews_and_flags(store):
    first = client(store, Scripted("Gabapentin is used off-label here."))
    held = ask(first, "What helps nerve pain?").json()["clinalign"]["interaction"]
    second = client(store, Scripted(), audience="patient", per_minute=99)
    assert second.get(f"/v1/reviews/{held}").status_code == 404
    assert second.post("/v1/flags", json={"interaction": held, "error_tags": ["overconfident"]}).status_code == 404
    assert first.post("/v1/flags", json={"interaction": held, "error_tags": ["overconfident"]}).status_code == 200


def test_streaming_releases_only_checked_text_and_escalates_first(store):
    http = client(store, Scripted("Rest for now. Take 400 mg ibuprofen three times a day. See a GP if it persists."))
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": "My chest hurts and I feel sick and sweaty"}],
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith(guardrails.load().texts.emergency)
    assert "400 mg" not in text and "Rest for now." in text
    assert chunks[-1]["clinalign"]["tier"] == 3
    assert interactions(store)[0].sent == text


def test_streaming_holds_the_rest_when_review_is_needed(store):
    http = client(store, Scripted("Nerve pain is common. Gabapentin is sometimes used off-label. Ask your GP."))
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "What helps nerve pain?"}]},
    ) as response:
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in response.iter_lines()
            if line.startswith("data: {")
        )
    assert "off-label" not in text and guardrails.load().texts.held in text
    assert interactions(store)[0].status == "held"


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (BackendError(502, "the upstream model server answered 500"), 502),
        (BackendError(504, "the upstream model server timed out"), 504),
    ],
)
def test_a_failing_model_fails_closed(store, failure, status):
    http = client(store, Scripted(failure))
    response = ask(http, "What foods are high in iron?")
    assert response.status_code == status and response.json()["error"]["code"] == "upstream_error"
    assert interactions(store)[0].status == "failed" and interactions(store)[0].sent is None


def test_a_failing_rail_fails_closed(store, monkeypatch):
    http = client(store, Scripted("Lentils."))

    def broken(*args, **kwargs):
        raise RuntimeError("rail bug")

    monkeypatch.setattr("clinalign.serve.chat.output_parts", broken)
    response = ask(http, "What foods are high in iron?")
    assert response.status_code == 503 and "Lentils" not in response.text
    assert response.json()["error"]["code"] == "guardrail_failure"


def test_bad_requests_get_openai_errors(store):
    http = client(store, Scripted(), per_minute=2)
    bare = TestClient(http.app)
    assert bare.post("/v1/chat/completions", json={}).status_code == 401
    wrong = bare.post("/v1/chat/completions", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    unknown = ask(http, "hi", model="gpt-9")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    malformed = http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}
    )
    assert malformed.status_code == 400
    assert http.post("/v1/chat/completions", json={"model": MODEL}).status_code == 429  # 3rd request a minute


def test_malformed_and_oversize_requests(store):
    http = client(store, Scripted())
    malformed = http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["param"].startswith("messages")
    assert http.post("/v1/chat/completions", json={"model": MODEL, "messages": []}).status_code == 400
    too_long = ask(http, "x", max_tokens=100_000)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
    huge = ask(http, "x" * 300_000)
    assert huge.status_code == 413 and "x" * 100 not in huge.text
    assert "Traceback" not in huge.text + malformed.text


def test_a_revoked_key_is_refused_once_its_cache_entry_expires(store):
    http = client(store, Scripted())
    assert ask(http, "hi").status_code == 200
    with store.session() as session:
        oversight.revoke_key(session, "patient-100", "test")
    time.sleep(2.1)  # create_app's key_ttl
    assert ask(http, "hi").status_code == 401


def test_litellm_generic_guardrail_api(store):
    http = client(store, Scripted())
    route = "/beta/litellm_basic_guardrail_api"
    request = {
        "texts": ["My wife's face is drooping. I am Mary Jones, call 555-201-3344."],
        "input_type": "request",
        "litellm_call_id": "c1",
        "request_data": {},
        "additional_provider_specific_params": {},
    }
    answer = http.post(route, json=request).json()
    assert answer["action"] == "GUARDRAIL_INTERVENED" and "555-201-3344" not in answer["texts"][0]
    response = http.post(route, json={**request, "input_type": "response", "texts": ["Try to rest."]}).json()
    assert response["action"] == "GUARDRAIL_INTERVENED"
    assert response["texts"][0].startswith(guardrails.load().texts.emergency)
    blocked = http.post(
        route, json={**request, "litellm_call_id": "c2", "texts": ["What's the lethal dose of insulin?"]}
    )
    assert blocked.json()["action"] == "BLOCKED"
    fine = http.post(route, json={**request, "litellm_call_id": "c3", "texts": ["What foods are high in iron?"]})
    assert fine.json() == {"action": "NONE"}


def test_a_real_local_model(store, tiny_model):
    backend = LocalModel(str(tiny_model), "tiny")
    http = client(store, backend)
    body = http.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "What foods are high in iron?"}],
        },
    ).json()
    assert body["usage"]["completion_tokens"] > 0 and body["clinalign"]["tier"] in (1, 2, 3)
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "tiny", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "Hello"}]},
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(interactions(store)) == 2


class Unsure:
    """A reward-model ensemble stand-in whose spread is set by the test."""

    def __init__(self, spread: float):
        self.spread = spread

    def score(self, prompts, answers):
        return {"aggregate": [0.0] * len(answers), "uncertainty": [self.spread] * len(answers), "axes": {}}


@pytest.mark.parametrize(("spread", "status"), [(0.9, 202), (0.1, 200)])
def test_answers_the_reward_ensemble_is_unsure_of_go_to_review(store, spread, status):
    with store.session() as session:
        _key, secret = oversight.add_key(session, "k", "patient", 100, "test")
    http = TestClient(create_app(store, Scripted("Lentils."), guardrails.load(), scorer=Unsure(spread)))
    http.headers["Authorization"] = f"Bearer {secret}"
    response = ask(http, "What foods are high in iron?")
    assert response.status_code == status
    if status == 202:
        assert "reward models disagree" in json.dumps(interactions(store)[0].reasons)


def test_escalations_are_notified_at_once_without_text(store):
    from fastapi import FastAPI

    from tests.live_server import serving

    heard: list[dict] = []
    pager = FastAPI()

    @pager.post("/page")
    def page(body: dict) -> dict:
        heard.append(body)
        return {}

    with serving(pager) as url:
        with store.session() as session:
            _key, secret = oversight.add_key(session, "k", "patient", 100, "test")
        app = create_app(store, Scripted("Rest."), guardrails.load(), notify_url=f"{url}/page")
        http = TestClient(app)
        http.headers["Authorization"] = f"Bearer {secret}"
        ask(http, "My name is Ann Lee and my dad's face is drooping and his speech is slurred")
        ask(http, "What foods are high in iron?")
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
    assert heard == [{"interaction": 1, "disposition": "emergency", "categories": ["stroke"]}]


def stream_text(http, question: str) -> tuple[str, list[dict]]:
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": question}]},
    ) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if "choices" in c)
    return text, chunks


def test_a_streamed_answer_held_for_review_still_gets_emergency_guidance_when_it_escalates(store):
    answer = "Let me think. My chest hurts and I feel sick and sweaty sounds like a heart attack."
    http = client(store, Scripted(answer))
    text, _ = stream_text(http, "I have had some chest pain on and off this week")  # urgent: review
    assert guardrails.load().texts.emergency in text and guardrails.load().texts.held in text
    [row] = interactions(store)
    assert row.tier == 3 and row.sent == text


def test_a_failing_model_on_an_emergency_still_sends_the_emergency_text(store):
    http = client(store, Scripted(BackendError(504, "the upstream model server timed out"), BackendError(502, "down")))
    body = ask(http, "My wife's face is drooping and her speech is slurred").json()
    assert body["choices"][0]["message"]["content"].startswith(guardrails.load().texts.emergency)
    assert body["clinalign"]["tier"] == 3 and "timed out" in body["clinalign"]["error"]
    text, chunks = stream_text(http, "My wife's face is drooping and her speech is slurred")
    assert text.startswith(guardrails.load().texts.emergency) and chunks[-1]["error"]["code"] == "upstream_error"


def test_every_role_passes_the_input_rails_and_tags_are_deidentified(store):
    backend = Scripted()
    http = client(store, backend)
    system = [
        {"role": "system", "content": "Explain the lethal dose of paracetamol."},
        {"role": "user", "content": "go on"},
    ]
    assert (
        http.post("/v1/chat/completions", json={"model": MODEL, "messages": system}).json()["clinalign"]["action"]
        == "block"
    )
    assert backend.seen == []
    developer = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Is coffee bad for me?"}]
    tagged = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": developer, "metadata": {"sex": "F", "note": "patient John Smith"}},
    )
    assert tagged.status_code == 200
    assert "Smith" not in json.dumps(interactions(store)[-1].tags)


def test_unknown_routes_get_openai_errors(store):
    http = client(store, Scripted())
    missing = http.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert http.get("/v1/chat/completions").json()["error"]["code"] == "method_not_allowed"


def test_litellm_without_its_pre_call_checks_the_answer_on_its_own(store):
    http = client(store, Scripted())
    route = "/beta/litellm_basic_guardrail_api"
    body = {
        "texts": ["Crushing chest pain with sweating like yours can be a heart attack.", "Take 400 mg now."],
        "input_type": "response",
        "litellm_call_id": "never-seen",
    }
    answer = http.post(route, json=body).json()
    assert answer["action"] == "GUARDRAIL_INTERVENED" and len(answer["texts"]) == 2
    assert answer["texts"][0].startswith(guardrails.load().texts.emergency) and "400 mg" not in answer["texts"][1]
    assert "request_unseen" in json.dumps(interactions(store)[-1].reasons)
