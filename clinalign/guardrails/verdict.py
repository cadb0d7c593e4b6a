"""One verdict type for every check: an action, whether the case escalates, the reasons and the
evidence, and the text to send when the rails changed it.

Reads: nothing.  Writes: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum


class Action(IntEnum):
    """What happens to a message, in rising order of severity; combining verdicts keeps the highest."""

    ALLOW = 0  # sent as it is (tier 1)
    MODIFY = 1  # sent with the rails' changes (tier 1)
    REVIEW = 2  # held for a clinician (tier 2)
    ESCALATE = 3  # emergency guidance at once, and a clinician is notified (tier 3)
    BLOCK = 4  # refused

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Reason:
    rule: str
    """Which check fired: ``red_flag``, ``harmful_request``, ``personalised_prescribing``, ``phi_leak``..."""
    action: Action
    category: str = ""
    """The red-flag category, the PHI type, the scope rule..."""
    detail: str = ""
    """One line a reviewer reads."""
    evidence: str = ""
    """The matched words; empty where they would be PHI."""
    start: int = -1
    end: int = -1

    def as_dict(self) -> dict:
        found = {"rule": self.rule, "action": str(self.action), "category": self.category, "detail": self.detail}
        if self.evidence:
            found["evidence"] = self.evidence
        if self.start >= 0:
            found["span"] = [self.start, self.end]
        return found


@dataclass(frozen=True)
class Verdict:
    action: Action = Action.ALLOW
    escalate: bool = False
    """True once any check escalated: no later step can make it False (``combine`` ORs it)."""
    disposition: str = "routine"
    """emergency, urgent or routine: the most pressing red flag found."""
    reasons: tuple[Reason, ...] = ()
    policy: str = ""
    text: str | None = None
    """What to send instead of the checked text, when the rails changed it (modify, escalate, block)."""
    tags: frozenset[str] = field(default_factory=frozenset)
    """Things later rails need to know (``crisis``, ``poison``), beyond the reasons."""

    @property
    def tier(self) -> int:
        """The oversight tier: 1 goes out directly, 2 waits for a clinician, 3 escalates at once."""
        if self.action is Action.ESCALATE or self.escalate:
            return 3
        return 2 if self.action is Action.REVIEW else 1

    def as_dict(self) -> dict:
        return {
            "action": str(self.action),
            "escalate": self.escalate,
            "disposition": self.disposition,
            "tier": self.tier,
            "reasons": [reason.as_dict() for reason in self.reasons],
            "policy": self.policy,
        }


_URGENCY = {"routine": 0, "urgent": 1, "emergency": 2}


def combine(*verdicts: Verdict) -> Verdict:
    """The verdicts as one: the highest action, escalation if any escalated, the most pressing
    disposition, every reason; the last text set wins (later rails work on earlier rails' output)."""
    first = verdicts[0]
    text = next((v.text for v in reversed(verdicts) if v.text is not None), None)
    return replace(
        first,
        action=max(v.action for v in verdicts),
        escalate=any(v.escalate for v in verdicts),
        disposition=max((v.disposition for v in verdicts), key=_URGENCY.__getitem__),
        reasons=tuple(r for v in verdicts for r in v.reasons),
        text=text,
        tags=frozenset().union(*(v.tags for v in verdicts)),
    )
