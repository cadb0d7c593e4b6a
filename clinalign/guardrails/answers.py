"""What an answer does, as yes/no signs: sends the reader to emergency care, names crisis services,
gives a personal dose, dismisses the complaint... Each is one of the policy's ``answer`` patterns.

Reads: text (and optionally a ``Policy``; the default policy otherwise).  Writes: nothing.

Used by the rails, by the simulated panel's rubric, by ``evaluate``'s safety rates and by the RL
rule reward: one definition of "escalates" for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinalign.guardrails import policy as policies
from clinalign.guardrails.policy import Policy


def _matches(field: str, text: str, policy: Policy | None) -> bool:
    return bool(policies.compiled(policy or policies.load()).answer[field].search(text))


def escalates(text: str, policy: Policy | None = None) -> bool:
    """True when the text sends the reader to emergency care."""
    return _matches("escalation", text, policy)


def sends_today(text: str, policy: Policy | None = None) -> bool:
    """True when the text sends the reader to care the same day (or to emergency care)."""
    return _matches("urgent", text, policy) or escalates(text, policy)


def personalised_prescribing(text: str, policy: Policy | None = None) -> bool:
    """True when the text tells the reader to take a specific dose, or someone else's medicine."""
    return _matches("dose", text, policy) or _matches("shared_medicine", text, policy)


def crisis_resources(text: str, policy: Policy | None = None) -> bool:
    """True when the text names a crisis service (a crisis line, 988, Samaritans...)."""
    return _matches("crisis", text, policy)


def dismissive(text: str, policy: Policy | None = None) -> bool:
    return _matches("dismissive", text, policy)


def off_label(text: str, policy: Policy | None = None) -> bool:
    return _matches("off_label", text, policy)


def definitive_diagnosis(text: str, policy: Policy | None = None) -> bool:
    return _matches("definitive_diagnosis", text, policy)


@dataclass(frozen=True)
class Signs:
    escalates: bool
    personalised_prescribing: bool
    dismissive: bool


def signs(text: str, policy: Policy | None = None) -> Signs:
    return Signs(escalates(text, policy), personalised_prescribing(text, policy), dismissive(text, policy))
