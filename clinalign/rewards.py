"""The clinical reward model as other trainers take it: one scoring call, then TRL reward callables
(one per axis), verl's ``compute_score``, and the parsing of OpenRLHF's remote-reward requests.

Reads: a reward-model folder (scored in this process) or a ``clinalign reward serve`` URL (scored there).
Writes: nothing (returns scores).

A *source* is either. The engines that scale RL out (OpenRLHF, verl) live in environments of their own,
with their own pinned transformers; there, give a URL: this module then needs only the standard library,
so the engine can load it by file path (verl's ``custom_reward_function.path``) without installing
clinalign. Every batch is one scoring call however many axes are asked for: TRL calls each reward
function in turn on the same completions, and the functions made together share the last batch's scores.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

MAX_ITEMS = 1024  # one request's pairs: a GRPO step is far fewer; a larger one is a client's bug
MAX_CHARS = 16_000  # one prompt or answer: more than any policy here writes; beyond it, a misuse


class RewardError(ValueError):
    """A request the scorer cannot take: the message says which field and why."""


class TooLarge(RewardError):
    """A request beyond the size limits."""


class _Transient(RewardError):
    """A failure another try may not meet: the service unreachable, slow, or failing (5xx, 429)."""


def check_batch(prompts: Sequence[str], answers: Sequence[str]) -> None:
    """Refuse what cannot be scored: lists of different lengths, too many items, oversize or non-text."""
    if len(prompts) != len(answers):
        raise RewardError(f"{len(prompts)} prompts but {len(answers)} answers: the lists must align")
    if len(prompts) > MAX_ITEMS:
        raise TooLarge(f"{len(prompts)} items in one request; at most {MAX_ITEMS}")
    for field, texts in (("prompt", prompts), ("answer", answers)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RewardError(f"{field} {i}: expected text, got {type(text).__name__}")
            if len(text) > MAX_CHARS:
                raise TooLarge(f"{field} {i}: {len(text)} characters; at most {MAX_CHARS}")


class Local:
    """Scores in this process with a reward-model folder (loaded once per folder)."""

    def __init__(self, folder: str):
        from clinalign import reward_model

        self.model = reward_model.load(str(folder))
        self.axes = list(self.model.axes)

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> dict:
        check_batch(prompts, answers)
        scores = self.model.score(list(zip(prompts, answers, strict=True)))
        return {
            "aggregate": scores.aggregate.tolist(),
            "uncertainty": scores.spread.tolist(),
            "axes": {axis: values.tolist() for axis, values in scores.axes.items()},
        }


class Remote:
    """Scores through a ``clinalign reward serve`` endpoint (its ``POST /score``), standard library only.
    A call that cannot reach the service, times out or gets a 5xx/429 is tried again ``retries`` times
    (after 1 s, 2 s, ...); a request the service refuses (4xx) is not."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 0):
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("CLINALIGN_REWARD_API_KEY")
        self.timeout, self.retries = timeout, retries
        self.health = self._call("GET", "/health")  # what is served: its axes, and its artifact when known
        self.axes = self.health["axes"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, path, body)
            except _Transient as err:
                if attempt == self.retries:
                    tries = f" ({attempt + 1} tries)" if attempt else ""
                    raise RewardError(f"{err}{tries}") from None
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, body: dict | None) -> dict:
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            failure = _Transient if err.code >= 500 or err.code == 429 else RewardError
            raise failure(f"reward service {self.url}{path}: HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise _Transient(f"reward service {self.url}{path} unreachable: {err}") from None

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> dict:
        check_batch(prompts, answers)
        return self._call("POST", "/score", {"prompts": list(prompts), "answers": list(answers)})


def scorer(source: str, api_key: str | None = None) -> Local | Remote:
    """A scorer for ``source``: an ``http(s)://`` URL of the service, else a reward-model folder."""
    source = str(source)
    if source.startswith(("http://", "https://")):
        return Remote(source, api_key)
    return Local(source)


# --- OpenRLHF: POST /get_reward ---------------------------------------------------------------------

# Chat markup the policy's template wraps turns in (ChatML, Llama 3).
_TURN = re.compile(
    r"<\|im_start\|>(?P<chatml>system|user|assistant)\s*\n"
    r"|<\|start_header_id\|>(?P<llama3>system|user|assistant)<\|end_header_id\|>\s*"
)
_END = re.compile(r"\s*(<\|im_end\|>|<\|eot_id\|>|<\|endoftext\|>|</s>|<\|end_of_text\|>)\s*")


def _turns(text: str) -> list[tuple[str, str]] | None:
    """(role, content) of every turn of chat-formatted text; None for plain text."""
    marks = list(_TURN.finditer(text))
    if not marks:
        return None
    turns = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : following.start() if following else len(text)]
        turns.append((mark.group("chatml") or mark.group("llama3"), _END.sub(" ", body).strip()))
    return turns


def _last_user_turn(prompt: str) -> str:
    """The last user turn of a chat-formatted prompt, or the prompt itself."""
    turns = _turns(prompt)
    users = [content for role, content in turns or [] if role == "user"]
    return users[-1] if users else _END.sub(" ", prompt).strip()


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """The question and the answer of one OpenRLHF ``query`` (the prompt and the response, as the
    policy's tokenizer decoded them together), given its ``prompt`` when sent.

    The policy writes the response, so nothing in it may change what is scored: with the prompt, the
    question comes from the prompt alone and the answer is everything after it (end-of-turn markers
    dropped; any role markup the policy wrote stays in the answer, as text). Without it, the query is
    read as a single exchange: the first user turn, and everything after the first assistant header
    that follows it. Send ``prompts`` for multi-turn conversations."""
    if prompt and query.startswith(prompt):
        return _last_user_turn(prompt), _END.sub(" ", query[len(prompt) :]).strip()
    marks = list(_TURN.finditer(query))
    user = next((i for i, m in enumerate(marks) if (m.group("chatml") or m.group("llama3")) == "user"), None)
    reply = (
        next(
            (m for m in marks[user + 1 :] if (m.group("chatml") or m.group("llama3")) == "assistant"),
            None,
        )
        if user is not None
        else None
    )
    if reply is None:
        return _last_user_turn(prompt or ""), _END.sub(" ", query).strip()
    return _last_user_turn(query[: reply.start()]), _END.sub(" ", query[reply.end() :]).strip()


# --- TRL: reward callables ------------------------------------------------------------------------


def text_of(value) -> str:
    """A prompt or completion as TRL passes it: text, or a conversation (the last user turn of a
    prompt, the assistant's words of a completion)."""
    if isinstance(value, str):
        return value
    users = [m["content"] for m in value if m.get("role") == "user"]
    spoken = [m["content"] for m in value if m.get("role") == "assistant"]
    return (users or spoken or [""])[-1]


def trl_reward_functions(
    source: str, axes: Sequence[str] | None = None, aggregate: bool = True, api_key: str | None = None
) -> list[Callable]:
    """Reward functions for TRL's GRPO/RLOO trainers (``reward_funcs=``, with ``reward_weights`` to
    weigh them): ``clinical_aggregate`` (the safety-gated aggregate) and one ``clinical_<axis>`` per
    axis asked for (default: every axis). Never hand TRL the multi-head model itself: it would read
    only the first head. All the functions share one scoring call per batch."""
    model = scorer(source, api_key)
    chosen = list(model.axes if axes is None else axes)
    unknown = [a for a in chosen if a not in model.axes]
    if unknown:
        raise RewardError(f"unknown axes {', '.join(unknown)} (the model has {', '.join(model.axes)})")
    last: dict = {}

    def scores(prompts, completions) -> dict:
        key = (tuple(map(text_of, prompts)), tuple(map(text_of, completions)))
        if last.get("key") != key:
            last.update(key=key, scores=model.score(list(key[0]), list(key[1])))
        return last["scores"]

    def make(name: str, pick: Callable[[dict], list[float]]) -> Callable:
        def reward(prompts, completions, **_kwargs) -> list[float]:
            values = [float(v) for v in pick(scores(prompts, completions))]
            if not all(map(math.isfinite, values)):  # TRL would read NaN as "not applicable" and go on
                raise RewardError(f"{name}: the reward model returned a non-finite score")
            return values

        reward.__name__ = reward.__qualname__ = name  # TRL logs each reward under its function's name
        return reward

    functions = [make("clinical_aggregate", lambda s: s["aggregate"])] if aggregate else []
    for axis in chosen:
        functions.append(make(f"clinical_{axis}", lambda s, axis=axis: s["axes"][axis]))
    return functions


# --- verl: compute_score --------------------------------------------------------------------------

_SCORERS: dict[tuple[str, str | None], Local | Remote] = {}


def _cached_scorer(reward_model: str | None, url: str | None, api_key: str | None) -> Local | Remote:
    source = url or reward_model or os.environ.get("CLINALIGN_REWARD_URL") or os.environ.get("CLINALIGN_REWARD_MODEL")
    if not source:
        raise RewardError(
            "say which reward model: reward_kwargs url=... (a `clinalign reward serve` address) or "
            "reward_model=FOLDER, or set CLINALIGN_REWARD_URL"
        )
    if (source, api_key) not in _SCORERS:
        _SCORERS[(source, api_key)] = scorer(source, api_key)
    return _SCORERS[(source, api_key)]


def _question(extra_info, i: int) -> str:
    if not isinstance(extra_info, dict) or not isinstance(extra_info.get("question"), str):
        raise RewardError(
            f"item {i}: verl passes no prompt to a reward function: put the question in each row's "
            "extra_info['question'] when preparing the dataset"
        )
    return extra_info["question"]


def compute_score(
    data_source=None,
    solution_str=None,
    ground_truth=None,
    extra_info=None,
    *,
    data_sources=None,
    solution_strs=None,
    ground_truths=None,
    extra_infos=None,
    reward_model: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    **_kwargs,
):
    """verl's custom reward function: ``{"score": aggregate, <axis>: ..., "uncertainty": ...}`` for one
    response (the naive reward manager) or a list of them (the batch manager's plural keywords). The
    model comes from ``reward_kwargs`` (``url`` or ``reward_model``) or the environment. verl passes no
    prompt: the dataset's rows carry it in ``extra_info["question"]``."""
    batch = solution_strs is not None
    answers = list(solution_strs) if batch else [solution_str]
    infos = list(extra_infos) if batch else [extra_info]
    if len(infos) != len(answers):
        raise RewardError(f"{len(answers)} responses but {len(infos)} extra_infos")
    prompts = [_question(info, i) for i, info in enumerate(infos)]
    scores = _cached_scorer(reward_model, url, api_key).score(prompts, answers)
    results = []
    for i in range(len(answers)):
        value = scores["aggregate"][i]
        if not math.isfinite(value):
            raise RewardError(f"item {i}: the reward model returned {value}")
        row = {"score": value, **{axis: v[i] for axis, v in scores["axes"].items()}}
        results.append({**row, "uncertainty": scores["uncertainty"][i]})
    return results if batch else results[0]
