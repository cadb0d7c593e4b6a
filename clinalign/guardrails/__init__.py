"""Clinical guardrails: a versioned YAML policy applied as pure functions that return one ``Verdict``
(allow, modify, review, escalate or block; the reasons; the matched evidence; the text to send).

Reads: text (a request or an answer) and a policy.  Writes: nothing.

* ``red_flags``: emergencies and same-day problems in lay words, typos, third person and clinician
  shorthand, lifted by medspaCy's ConText when negated, past, hypothetical, family history or figurative;
* ``rails``: the input rails (harmful requests, red flags, risk routing) and the output rails (PHI leak,
  scope per audience, escalation that can never be removed, crisis and poison resources, uncertainty);
* ``answers``: what an answer does (escalates, names crisis services, gives a personal dose...);
* ``rewards``: the checks as TRL reward functions and as evaluation metrics.

Used by ``serve`` (every request and answer), ``evaluate``, the simulated panel and the RL rewards.
"""

from clinalign.guardrails.answers import (
    Signs,
    crisis_resources,
    dismissive,
    escalates,
    personalised_prescribing,
    signs,
)
from clinalign.guardrails.policy import DEFAULT, Policy, load
from clinalign.guardrails.rails import check, check_input, check_output
from clinalign.guardrails.rewards import REWARDS, emergency, metrics, self_harm
from clinalign.guardrails.verdict import Action, Reason, Verdict, combine

__all__ = [
    "DEFAULT",
    "REWARDS",
    "Action",
    "Policy",
    "Reason",
    "Signs",
    "Verdict",
    "check",
    "check_input",
    "check_output",
    "combine",
    "crisis_resources",
    "dismissive",
    "emergency",
    "escalates",
    "load",
    "metrics",
    "personalised_prescribing",
    "self_harm",
    "signs",
]
