"""What ``clinalign serve`` puts its rails in front of: a local Hugging Face model, or an upstream
OpenAI-compatible server (vLLM, TGI, llama.cpp's server, another gateway).

Both answer a list of chat messages, whole or as a stream of text pieces; a failure of any kind is a
``BackendError`` with the HTTP status the client should get (502 for a failing upstream, 504 for one
that timed out), so that the caller can fail closed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from clinalign.schemas import ClinalignError


class BackendError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float


class LocalModel:
    """A causal LM from a folder, answering one request at a time (on a CPU, two generations at once
    only share the same cores; a GPU deployment puts vLLM upstream instead)."""

    def __init__(self, folder: str, name: str):
        from clinalign import lm

        self.name = name
        self.lm = lm.load(folder)
        self.turn = threading.Lock()

    def _inputs(self, messages: list[dict]):
        tokenizer = self.lm.tokenizer
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.lm.model.device)

    def _generate(self, inputs, sampling: Sampling, streamer=None):
        import torch

        greedy = sampling.temperature == 0
        options = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p}
        with torch.no_grad():
            return self.lm.model.generate(
                **inputs,
                do_sample=not greedy,
                **options,
                max_new_tokens=sampling.max_tokens,
                pad_token_id=self.lm.tokenizer.pad_token_id,
                streamer=streamer,
            )

    def complete(self, messages: list[dict], sampling: Sampling) -> Answer:
        with self.turn:
            inputs = self._inputs(messages)
            out = self._generate(inputs, sampling)
        new = out[0, inputs["input_ids"].shape[1] :]
        text = self.lm.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Answer(text, int(inputs["input_ids"].shape[1]), int(new.shape[0]))

    def stream(self, messages: list[dict], sampling: Sampling) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        with self.turn:
            inputs = self._inputs(messages)
            streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
            failed: list[BaseException] = []

            def generate() -> None:
                try:
                    self._generate(inputs, sampling, streamer)
                except BaseException as err:  # surfaced to the client as a backend failure below
                    failed.append(err)
                    streamer.end()

            worker = threading.Thread(target=generate, daemon=True)
            worker.start()
            try:
                yield from streamer
            finally:  # a client that leaves mid-stream: the model finishes before the next request starts
                worker.join()
        if failed:
            raise BackendError(502, f"the model failed while generating ({type(failed[0]).__name__})")


class Upstream:
    """An OpenAI-compatible server at ``url`` (ending in ``/v1``), serving ``model``."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ClinalignError(f"--upstream {url}: give an http(s) URL ending in /v1")
        self.name = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _body(self, messages: list[dict], sampling: Sampling, stream: bool) -> dict:
        return {
            "model": self.name,
            "messages": messages,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": stream,
        }

    def _failed(self, err: Exception) -> BackendError:
        import httpx

        if isinstance(err, httpx.TimeoutException):
            return BackendError(504, "the upstream model server timed out")
        if isinstance(err, httpx.HTTPStatusError):
            return BackendError(502, f"the upstream model server answered {err.response.status_code}")
        return BackendError(502, f"the upstream model server failed ({type(err).__name__})")

    def complete(self, messages: list[dict], sampling: Sampling) -> Answer:
        import httpx

        try:
            response = self.client.post("/chat/completions", json=self._body(messages, sampling, False))
            response.raise_for_status()
            body = response.json()
            text = body["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise self._failed(err) from None
        usage = body.get("usage") or {}
        return Answer(text.strip(), usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def stream(self, messages: list[dict], sampling: Sampling) -> Iterator[str]:
        import httpx

        try:
            with self.client.stream("POST", "/chat/completions", json=self._body(messages, sampling, True)) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise self._failed(err) from None
