"""The input and output rails: every check of the policy run on a request or an answer, as one
``Verdict`` with the text to send.

Reads: text, a ``Policy``, the request's verdict (for an answer).  Writes: nothing.

Order matters only for the text; the verdict's action is the highest any rail asked for, and an
escalation, once raised on the request, is carried to the answer's verdict and cannot be undone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from clinalign import phi
from clinalign.guardrails import answers, red_flags
from clinalign.guardrails import policy as policies
from clinalign.guardrails.policy import Policy
from clinalign.guardrails.verdict import Action, Reason, Verdict, combine

# A sentence ends at . ! ? or a line break, but not at the point of a number ("2.5 mg").
_SENTENCE = re.compile(r"(?:[^.!?\n]|(?<=\d)\.(?=\d))+(?:[.!?]+|\n|$)\s*")
_POISON = re.compile(r"\b(poison control|poison cent(er|re)|1-800-222-1222)\b", re.IGNORECASE)


def _public_service(found: str, policy: Policy) -> bool:
    """A crisis line or poison centre number is shaped like a phone number, and is not PHI."""
    return bool(_POISON.search(found) or policies.compiled(policy).answer["crisis"].search(found))


def phi_spans(text: str, policy: Policy | None = None) -> list:
    """PHI in a text, as ``phi.find`` sees it, but for public service numbers (crisis lines, Poison
    Control) and the policy's own texts that the rails add ("Samaritans ... (UK and Ireland)"): those
    are nobody's identifiers."""
    policy = policy or policies.load()
    ours = [*(getattr(policy.texts, f) for f in ("emergency", "urgent", "crisis", "poison")), policy.texts.refusal]
    added = [(m.start(), m.end()) for t in ours for m in re.finditer(re.escape(t), text)]
    return [
        s
        for s in phi.find(text)
        if not _public_service(text[s.start : s.end], policy) and not any(a <= s.start and s.end <= b for a, b in added)
    ]


def _flags(text: str, policy: Policy, routing: bool) -> Verdict:
    """The red flags in a text: an emergency escalates; an urgent one goes to review when the policy
    routes that disposition there. Suicide or self-harm discussed without a standing flag (a question
    about it, a past episode) still gets crisis resources: safe-messaging guidance asks for them
    wherever suicide is discussed (WHO, Preventing suicide: a resource for media professionals, 2023)."""
    verdicts = []
    for mention in red_flags.find(text, policy, keep_lifted=True):
        flag = policy.red_flags[mention.category]
        if mention.lifted_by:
            if flag.crisis and mention.lifted_by not in ("NEGATED_EXISTENCE", "FIGURATIVE"):
                verdicts.append(Verdict(tags=frozenset({"crisis"})))
            continue
        emergency = mention.disposition == "emergency"
        if emergency:
            action = Action.ESCALATE
        elif routing and mention.disposition in policy.routing.review_dispositions:
            action = Action.REVIEW
        else:
            action = Action.MODIFY
        tags = {"crisis"} if flag.crisis else set()
        if mention.category == "overdose_poisoning":
            tags.add("poison")
        evidence = phi.scrub(mention.evidence)[0]  # a pattern's word window can take in a name or a number
        reason = Reason(
            "red_flag",
            action,
            mention.category,
            f"{flag.label}: {mention.disposition}",
            evidence,
            mention.start,
            mention.end,
        )
        verdicts.append(Verdict(action, emergency, mention.disposition, (reason,), tags=frozenset(tags)))
    return combine(*verdicts) if verdicts else Verdict()


def check_input(text: str, *, policy: Policy | None = None, risk: str | None = None) -> Verdict:
    """The request's verdict: harmful requests are blocked, red flags escalate or go to review, and
    prompts of the risk levels the policy names go to review."""
    policy = policy or policies.load()
    parts = [Verdict(policy=policy.id)]
    normalized = red_flags.normalize(text)
    for pattern in policies.compiled(policy).harmful:
        if found := pattern.search(normalized):
            reason = Reason(
                "harmful_request",
                Action.BLOCK,
                "harmful_request",
                "a request no answer may serve",
                phi.scrub(found.group())[0],
                found.start(),
                found.end(),
            )
            parts.append(Verdict(Action.BLOCK, reasons=(reason,)))
            break
    parts.append(_flags(text, policy, routing=True))
    if risk is not None and risk in policy.routing.review_risks:
        parts.append(Verdict(Action.REVIEW, reasons=(Reason("risk", Action.REVIEW, risk, f"prompt risk {risk}"),)))
    verdict = combine(*parts)
    if verdict.action is Action.BLOCK and "crisis" in verdict.tags:
        # Someone asking how to die is answered with crisis resources, not a refusal alone.
        verdict = combine(verdict, Verdict(Action.ESCALATE, True, "emergency"))
    return verdict


def _without(text: str, pattern_fields: tuple[str, ...], policy: Policy) -> str:
    """The text without every sentence a match of the patterns touches (a match may run over several:
    "take ibuprofen:\\n- 400 mg every 6 hours")."""
    spans = [m.span() for f in pattern_fields for m in policies.compiled(policy).answer[f].finditer(text)]
    return "".join(
        s.group() for s in _SENTENCE.finditer(text) if not any(a < s.end() and s.start() < b for a, b in spans)
    )


def _scope(text: str, policy: Policy, audience: str) -> tuple[str, list[str], list[Verdict]]:
    """The answer within the audience's scope: its text, the notes to add after it, the verdicts."""
    rules = policy.scope[audience]
    notes, found = [], []
    checks = (
        ("personalised_prescribing", answers.personalised_prescribing, ("dose", "shared_medicine"), "prescribing"),
        ("off_label", answers.off_label, ("off_label",), None),
        ("definitive_diagnosis", answers.definitive_diagnosis, (), "diagnosis"),
    )
    for rule, matches, remove, note in checks:
        action = Action[getattr(rules, rule).upper()]
        if action is Action.ALLOW or not matches(text, policy):
            continue
        if action is Action.MODIFY:
            text = _without(text, remove, policy) if remove else text
            if note:
                notes.append(getattr(policy.texts, note))
        found.append(Verdict(action, reasons=(Reason(rule, action, rule, f"{rule.replace('_', ' ')} ({audience})"),)))
    return text, notes, found


@dataclass(frozen=True)
class Checked:
    """An answer after the output rails, in the three parts a stream releases at different times:
    ``header`` before anything else, ``body`` (the answer, changed where the rails changed it) as it
    is checked, and ``notes`` at the end."""

    verdict: Verdict
    header: str
    body: str
    notes: tuple[str, ...]
    deidentified: str = ""
    """The answer as the model gave it, every PHI span replaced by its type: what a log may keep."""

    @property
    def text(self) -> str:
        return "\n\n".join(part for part in (self.header, self.body.strip(), *self.notes) if part)


def _added(rule: str, action: Action, detail: str, escalate: bool = False) -> Verdict:
    return Verdict(action, escalate, "emergency" if escalate else "routine", (Reason(rule, action, "added", detail),))


def output_parts(
    answer: str,
    *,
    request: Verdict | None = None,
    policy: Policy | None = None,
    audience: str = "patient",
    reward_spread: float | None = None,
    disclaimer: bool = False,
) -> Checked:
    """The output rails on ``answer`` (see ``check_output``), keeping the parts apart for streaming;
    with ``disclaimer``, the audience's disclaimer is the last note (what a served answer ends with)."""
    policy = policy or policies.load()
    request = request or Verdict(policy=policy.id)
    if request.action is Action.BLOCK:  # the model's answer to a harmful request is never sent
        notes = (policy.texts.crisis,) if "crisis" in request.tags else ()
        return Checked(combine(request, Verdict(Action.BLOCK, policy=policy.id)), "", policy.texts.refusal, notes)
    parts = [request, Verdict(policy=policy.id)]
    text = answer

    spans = phi_spans(text, policy)
    deidentified = answer
    for span in reversed(spans):
        deidentified = f"{deidentified[: span.start]}[{span.type}]{deidentified[span.end :]}"
    if spans:
        action = Action[policy.phi_leak.upper()]
        if action is Action.MODIFY:
            text = deidentified
        types = sorted({span.type for span in spans})
        parts.append(Verdict(action, reasons=tuple(Reason("phi_leak", action, t, "PHI in the answer") for t in types)))

    text, notes, scoped = _scope(text, policy, audience)
    parts += scoped
    parts.append(_flags(answer, policy, routing=False))  # red flags the answer itself raises (before PHI tags)
    merged = combine(*parts)
    header = ""
    if merged.escalate:
        if answers.escalates(text, policy) and not answers.dismissive(text, policy):
            parts.append(Verdict(Action.ESCALATE, True, "emergency"))
        else:
            header = policy.texts.emergency
            detail = "the answer did not send the reader to emergency care"
            detail += " and was dismissive" if answers.dismissive(text, policy) else ""
            parts.append(_added("escalation", Action.ESCALATE, detail, escalate=True))
    elif merged.disposition == "urgent" and not answers.sends_today(text, policy):
        notes.append(policy.texts.urgent)
        parts.append(_added("urgent_care", Action.MODIFY, "same-day care added"))
    if "crisis" in merged.tags and not answers.crisis_resources(text, policy):
        notes.append(policy.texts.crisis)
        parts.append(_added("crisis_resources", Action.MODIFY, "crisis services added"))
    if "poison" in merged.tags and not _POISON.search(text):
        notes.append(policy.texts.poison)
        parts.append(_added("poison_control", Action.MODIFY, "poison control added"))
    if reward_spread is not None and reward_spread > policy.routing.reward_spread:
        detail = f"reward models disagree (spread {reward_spread:.2f} > {policy.routing.reward_spread})"
        parts.append(Verdict(Action.REVIEW, reasons=(Reason("uncertainty", Action.REVIEW, "reward_spread", detail),)))
    if disclaimer and audience in policy.texts.disclaimers:
        notes.append(policy.texts.disclaimers[audience])
    return Checked(combine(*parts), header, text, tuple(notes), deidentified)


def fallback_text(request: Verdict, policy: Policy | None = None) -> str:
    """What an escalated request is answered with when no checked answer can be sent (the model or a
    rail failed): the emergency text, and crisis or poison resources where they apply."""
    policy = policy or policies.load()
    notes = [policy.texts.crisis] if "crisis" in request.tags else []
    notes += [policy.texts.poison] if "poison" in request.tags else []
    return "\n\n".join([policy.texts.emergency, *notes])


def check_output(
    answer: str,
    *,
    request: Verdict | None = None,
    policy: Policy | None = None,
    audience: str = "patient",
    reward_spread: float | None = None,
) -> Verdict:
    """The answer's verdict, with ``text`` set to what may be sent when the rails changed it: PHI
    replaced, scope per audience, the emergency text first when the case escalates and the answer
    does not, crisis, poison and same-day notes after it; a blocked request's answer never."""
    checked = output_parts(answer, request=request, policy=policy, audience=audience, reward_spread=reward_spread)
    text = checked.text
    return replace(checked.verdict, text=None if text == answer else text)


def check(text: str, role: str = "user", *, policy: Policy | None = None, audience: str = "patient") -> Verdict:
    """One message's verdict: a user's message through the input rails, an assistant's through the
    output rails (without the request, which a single message does not carry)."""
    if role == "user":
        return check_input(text, policy=policy)
    if role == "assistant":
        return check_output(text, policy=policy, audience=audience)
    raise ValueError(f"role must be 'user' or 'assistant', got {role!r}")
