"""Red flags: the policy's patterns find candidate mentions, and medspaCy's ConText algorithm (Harkema
et al. 2009, NegEx's successor) lifts the ones that are negated, past, hypothetical or educational,
family history or figurative.

Reads: text and a ``Policy``.  Writes: nothing.

Speed: the patterns run over the whole text; spaCy and ConText run only on the sentences where a
pattern matched, so a text without a candidate costs one regex pass.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass

from clinalign.guardrails.policy import Policy, compiled

# medspaCy's sentence splitter (PyRuSH) logs every token at DEBUG through loguru: text, so PHI.
os.environ.setdefault("LOGURU_LEVEL", "WARNING")

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
_CHARS_PER_TOKEN = 12  # generous: English words and their spaces average about 5-6 characters


@dataclass(frozen=True)
class Mention:
    category: str
    disposition: str
    start: int
    end: int
    evidence: str
    lifted_by: str = ""
    """The ConText category that lifted the mention (``NEGATED_EXISTENCE``...), empty when it stands."""


def _candidates(text: str, policy: Policy) -> list[Mention]:
    """Every pattern match, from the patterns the RE2 set says match; an urgent match inside an
    emergency match of the same category is the same words, so it is dropped."""
    rules = compiled(policy)
    matched = rules.any_flag.Match(text) or ()
    hits = [
        (category, disposition, m.start(), m.end())
        for category, disposition, pattern in (rules.flags[i] for i in sorted(matched))
        for m in pattern.finditer(text)
        if m.end() > m.start()
    ]
    emergency = [(c, s, e) for c, d, s, e in hits if d != "urgent"]
    found = [
        Mention(c, d, s, e, text[s:e])
        for c, d, s, e in hits
        if d != "urgent" or not any(c == c2 and s < e2 and s2 < e for c2, s2, e2 in emergency)
    ]
    return sorted(found, key=lambda m: (m.start, -m.end))


_PIPELINES: dict[str, tuple] = {}


def _pipeline(policy: Policy):
    """A tokenizer and medspaCy's ConText, with the policy's rules (built once per policy)."""
    if policy.digest not in _PIPELINES:
        _PIPELINES[policy.digest] = _build(policy)
    return _PIPELINES[policy.digest]


def _build(policy: Policy):
    import medspacy  # noqa: F401  (registers the span extensions ConText reads and writes)
    import spacy
    from medspacy.context import ConText, ConTextRule

    nlp = spacy.blank("en")
    context = ConText(
        nlp, rules=None, max_scope=policy.context.max_scope, prune_on_target_overlap=True, span_attrs=None
    )
    with open(context.DEFAULT_RULES_FILEPATH, encoding="utf-8") as handle:
        shipped = json.load(handle)["context_rules"]
    keep = set(policy.context.keep_medspacy_rules)
    chosen = [rule for rule in shipped if rule["category"] in keep]
    chosen += [rule.model_dump(exclude_none=True) for rule in policy.context.rules]
    context.add([ConTextRule.from_dict(variant) for rule in chosen for variant in _as_phrases(rule)])
    return nlp, context


def _as_phrases(rule: dict) -> list[dict]:
    """A token-pattern rule made only of word choices (``LOWER`` values, optional tokens) as the
    equivalent list of literal rules: spaCy's PhraseMatcher finds those about four times faster than
    its Matcher runs the patterns. Other patterns (numbers, shapes) stay patterns."""
    pattern = rule.get("pattern")
    if not pattern or any(set(token) - {"LOWER", "OP"} or token.get("OP", "?") != "?" for token in pattern):
        return [rule]
    phrases = [[]]
    for token in pattern:
        words = token["LOWER"]["IN"] if isinstance(token["LOWER"], dict) else [token["LOWER"]]
        grown = [p + [w] for p in phrases for w in words]
        phrases = grown + (phrases if token.get("OP") == "?" else [])
    literal = {k: v for k, v in rule.items() if k != "pattern"}
    return [{**literal, "literal": " ".join(words)} for words in phrases if words]


_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
_SPACES = re.compile(r"[^\S\n]+")


def normalize(text: str) -> str:
    """The text as the checks read it: Unicode NFKC (full-width letters become plain ones), invisible
    characters removed (soft hyphens, zero-width spaces and joiners), runs of spaces as one space.
    Spans and evidence refer to this form: a zero-width space inside "k\u200bill" must not hide it."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).translate(_INVISIBLE))


def find(text: str, policy: Policy, *, keep_lifted: bool = False) -> list[Mention]:
    """Red-flag mentions in ``text`` (normalized first: see ``normalize``) that stand after ConText
    (with ``keep_lifted``, the lifted ones too, each saying what lifted it)."""
    text = normalize(text)
    candidates = _candidates(text, policy)
    if not candidates:
        return []
    from spacy.tokens import Span

    nlp, context = _pipeline(policy)
    lift = set(policy.context.lift)
    found = []
    reach = _CHARS_PER_TOKEN * max([policy.context.max_scope] + [r.max_scope or 0 for r in policy.context.rules])
    following = 0  # candidates are sorted by start: one pass over both lists, linear in the text
    for sentence in _SENTENCE.finditer(text):
        while following < len(candidates) and candidates[following].start < sentence.start():
            following += 1
        inside = []
        while following < len(candidates) and candidates[following].start < sentence.end():
            inside.append(candidates[following])
            following += 1
        if not inside:
            continue
        # ConText only looks max_scope tokens from a modifier, so the words further away than that
        # from every candidate cannot change a verdict: they are left out of the (costly) matching.
        first = (
            text.rfind(" ", sentence.start(), max(sentence.start(), inside[0].start - reach)) + 1 or sentence.start()
        )
        last = text.find(" ", min(sentence.end(), max(c.end for c in inside) + reach), sentence.end())
        first, last = max(first, sentence.start()), (sentence.end() if last < 0 else last)
        doc = nlp.make_doc(text[first:last])
        groups: list[tuple[int, int, list[Mention]]] = []  # overlapping mentions share one span
        for mention in inside:
            span = doc.char_span(mention.start - first, min(mention.end, last) - first, alignment_mode="expand")
            if span is None:
                continue
            if groups and span.start < groups[-1][1]:
                start, end, owners = groups[-1]
                groups[-1] = (start, max(end, span.end), owners + [mention])
            else:
                groups.append((span.start, span.end, [mention]))
        doc.ents = [Span(doc, start, end, label="RED_FLAG") for start, end, _ in groups]
        context(doc)
        for ent, (_, _, owners) in zip(doc.ents, groups, strict=True):
            categories = [m.category for m in ent._.modifiers if m.category in lift]
            for mention in owners:
                kept = set(policy.red_flags[mention.category].not_lifted_by)
                lifted = next((c for c in categories if c not in kept), "")
                if keep_lifted or not lifted:
                    found.append(
                        Mention(
                            mention.category, mention.disposition, mention.start, mention.end, mention.evidence, lifted
                        )
                    )
    return found
