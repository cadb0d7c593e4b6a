"""One client for OpenAI-compatible chat endpoints, the judges' way of asking a large model: the
campaigns' AI judge (``annotate/ai_judge.py``) and the rubric and hallucination graders
(``evaluate/graders.py``).

Reads: the endpoint's replies; its key from an environment variable.  Writes: nothing.

Plain http is refused beyond this machine (answers and rubrics travel in it); the key comes from an
environment variable, never a config file; decoding is greedy; a failing endpoint is one clear line
naming it, never a traceback with the request in it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from clinalign.schemas import ClinalignError
from clinalign.settings import is_loopback


class ChatEndpoint:
    def __init__(
        self,
        endpoint: str | None,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_tokens: int = 600,
    ):
        if not endpoint:
            raise ClinalignError("backend openai needs endpoint: the base URL (e.g. http://127.0.0.1:8000/v1)")
        host = urlsplit(endpoint).hostname or ""
        if endpoint.startswith("http://") and not is_loopback(host):
            raise ClinalignError(f"endpoint {endpoint}: plain http beyond this machine; use https")
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_tokens = model, timeout, max_tokens
        key = os.environ.get(api_key_env)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def complete(self, system: str, user: str) -> str:
        """The endpoint's greedy reply to one system and one user message."""
        import httpx

        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        try:
            response = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"] or ""
        except httpx.HTTPStatusError as err:
            raise ClinalignError(f"judge endpoint {self.url}: HTTP {err.response.status_code}") from None
        except httpx.HTTPError as err:
            raise ClinalignError(f"judge endpoint {self.url} unreachable ({type(err).__name__})") from None
        except (ValueError, KeyError, IndexError, TypeError):
            raise ClinalignError(f"judge endpoint {self.url}: not an OpenAI chat completion") from None
