"""The guardrail policy: a YAML file (``policy.yaml`` beside this module is the default) read into
typed settings, with its regular expressions compiled once.

Reads: a policy YAML file.  Writes: nothing.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clinalign.schemas import ClinalignError

DEFAULT = Path(__file__).with_name("policy.yaml")

Disposition = Literal["emergency", "urgent", "routine"]
ActionName = Literal["allow", "modify", "review", "escalate", "block"]
Audience = Literal["patient", "caregiver", "clinician", "educator", "payer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedFlag(_Strict):
    label: str
    """What a reviewer reads: the condition the rule looks for."""
    disposition: Disposition
    """How soon care is needed when a pattern matches."""
    source: str
    """The public triage or guideline source the category follows."""
    patterns: list[str]
    """Regular expressions, each matched within one sentence."""
    urgent: list[str] = []
    """Weaker forms of the same complaint, which call for same-day care rather than an emergency."""
    crisis: bool = False
    """Answers must name crisis services (self-harm)."""
    not_lifted_by: list[str] = []
    """ConText categories that do not lift this flag (where that framing is itself a warning sign)."""


class ContextRule(_Strict):
    literal: str
    category: str
    direction: Literal["FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"]
    pattern: list[dict] | None = None
    """A spaCy token pattern, where the literal words are not enough."""
    max_scope: int | None = None
    """This rule's reach in tokens, where it differs from the context's."""


class Context(_Strict):
    max_scope: int = 8
    """How many tokens a modifier reaches (NegEx's window)."""
    lift: list[str]
    """Modifier categories that lift a red flag."""
    keep_medspacy_rules: list[str]
    """Which of medspaCy's English rule categories to keep."""
    rules: list[ContextRule]


class AnswerChecks(_Strict):
    escalation: str
    urgent: str
    dose: str
    shared_medicine: str
    off_label: str
    definitive_diagnosis: str
    dismissive: str
    crisis: str


class Scope(_Strict):
    personalised_prescribing: ActionName
    off_label: ActionName
    definitive_diagnosis: ActionName


class Routing(_Strict):
    reward_spread: float = Field(0.5, gt=0)
    """A reward-model ensemble spread (the standard deviation of the aggregate across its members)
    above this goes to review."""
    review_dispositions: list[Disposition] = []
    review_risks: list[str] = []


class Texts(_Strict):
    emergency: str
    urgent: str
    crisis: str
    poison: str
    prescribing: str
    diagnosis: str
    held: str
    """Sent at once when an answer waits for a clinician (tier 2)."""
    rejected: str
    """Sent when the clinician rejects the answer and writes none."""
    refusal: str
    disclaimers: dict[Audience, str]


class Policy(_Strict):
    name: str
    version: int
    red_flags: dict[str, RedFlag]
    context: Context
    answer: AnswerChecks
    harmful_requests: list[str]
    scope: dict[Audience, Scope]
    phi_leak: ActionName
    routing: Routing
    texts: Texts
    digest: str = ""
    """sha256 of the file's bytes, set on loading: a changed rule changes every verdict's policy id."""

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}:{self.digest[:12]}"


def _regex(pattern: str, where: str) -> re.Pattern:
    """A pattern written over several YAML lines, as one line (indentation is layout, not regex)."""
    try:
        return re.compile("".join(line.strip() for line in pattern.splitlines()), re.IGNORECASE)
    except re.error as err:
        raise ClinalignError(f"{where}: not a valid regular expression ({err.msg})") from None


class Compiled:
    """The policy's regular expressions, compiled once per policy.

    The red-flag patterns are also compiled together into one RE2 set, which says in a single
    linear-time pass which of them match anywhere in a text; Python's ``re`` then finds the spans
    of those few only (their bounded word windows make it slow to run all of them). This is why
    red-flag patterns may not use lookarounds or backreferences.
    """

    def __init__(self, policy: Policy):
        import re2

        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 256 << 20  # the bounded windows ({0,100}) make a large automaton
        self.any_flag = re2.Set.SearchSet(options)
        self.flags: list[tuple[str, str, re.Pattern]] = []  # (category, disposition, pattern), as in the set
        for name, flag in policy.red_flags.items():
            for kind, patterns in (("patterns", flag.patterns), ("urgent", flag.urgent)):
                for i, pattern in enumerate(patterns):
                    where = f"red_flags.{name}.{kind}.{i}"
                    compiled = _regex(pattern, where)
                    try:
                        self.any_flag.Add(compiled.pattern)
                    except re2.error:
                        raise ClinalignError(
                            f"{where}: RE2 cannot compile it (lookarounds and backreferences are not allowed)"
                        ) from None
                    self.flags.append((name, flag.disposition if kind == "patterns" else "urgent", compiled))
        self.any_flag.Compile()
        self.answer = {
            field: _regex(getattr(policy.answer, field), f"answer.{field}") for field in AnswerChecks.model_fields
        }
        self.harmful = [_regex(p, f"harmful_requests.{i}") for i, p in enumerate(policy.harmful_requests)]


@cache
def load(path: Path = DEFAULT) -> Policy:
    """The policy at ``path``; a bad file is refused with the file and the field at fault."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ClinalignError(f"guardrail policy {path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ClinalignError(f"guardrail policy {path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ClinalignError(f"guardrail policy {path}: must be a mapping")
    try:
        policy = Policy.model_validate({**data, "digest": hashlib.sha256(raw).hexdigest()})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ClinalignError(f"guardrail policy {path}: {where}: {first['msg']}") from None
    try:
        compiled(policy)
    except ClinalignError as err:
        raise ClinalignError(f"guardrail policy {path}: {err}") from None
    return policy


_COMPILED: dict[str, Compiled] = {}


def compiled(policy: Policy) -> Compiled:
    if policy.digest not in _COMPILED:
        _COMPILED[policy.digest] = Compiled(policy)
    return _COMPILED[policy.digest]
