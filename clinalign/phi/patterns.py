"""Regular-expression detection of every Safe Harbor type except names, over the table in ``rules``.

The text is split into tokens once; each rule is then tried (``re.match``) only at tokens that can
open it — a digit run of the right length and follower, a cue word's initial, a capital, a token
holding "@" — and all labelled identifiers are found in one pass. Cost stays linear in the text's
length with a small constant (see ``bench/deidentify.py``).
"""

from __future__ import annotations

import ipaddress
import re

from clinalign.phi import Span, claimed
from clinalign.phi.rules import DETECTORS, HINTS, NUMBER_LABEL, VALUE, Label

# Digits typed one by one with spaces ("3 1 0 5 2 0 6 8"), as forms and OCR leave them: typed by what
# they spell (a valid date, a French social security number, a phone number), else any identifier.
_SPACED_DIGITS = re.compile(r"\d(?<![\w.,/-]\d)(?:[ -]{1,3}\d){5,16}(?![\w/-]|[.,]\d)")


def _spaced_kind(digits: str) -> str:
    if len(digits) == 8:
        day, month = int(digits[:2]), int(digits[2:4])
        if 1 <= day <= 31 and 1 <= month <= 12 and digits[4:6] in ("19", "20"):
            return "DATE"
    if len(digits) in (13, 15) and digits[0] in "12":
        return "SSN"
    if len(digits) == 10 and digits[0] == "0":
        return "PHONE"
    return "ID"


# Every rule's match starts at the beginning of a token (a digit, "(" or "+"; or a letter, often a cue
# word): instead of one scan of the whole text per rule, each is tried only where such a token starts
# (``_starts``), which makes the detector several times faster.
_AT_DIGIT = {
    "ipv4",
    "ssn",
    "phone_fr",
    "card",
    "date_numeric",
    "date_iso",
    "date_day_first",
    "age_years",
    "street",
    "rue",
    "zip_fr",
    "phone_grouped",
    "phone_nanp",
}
_AT_LETTER = {
    "date_month_first",
    "date_month_year",
    "city_state",
    "iban",
    "url",
    "ssn_labelled",
    "fax",
    "phone_labelled",
    "plate",
    "date_cued",
    "age_labelled",
    "street_cued",
    "po_box",
    "place_cued",
    "site_cued",
    "hopital",
    "zip_state",
    "zip_labelled",
}
# The rest (e-mails, domains, VINs, MAC and IPv6 addresses) may open with a digit or a letter.
# Letter-led rules are tried only at tokens whose first letter can open them: a cue word's initial (from
# its hints), a month's, or any capital.
_MONTH_INITIALS = frozenset("jfmasond")

# Care sites are found from their last word back ("... Memorial Hospital"): a literal search is far
# cheaper than trying a capitalised-words pattern at every capital.
_CARE_SITE = re.compile(
    r"\b(?:Hospital|Clinic|Medical Cent(?:er|re)|Health Cent(?:er|re)|Infirmary|Nursing Home|Hospice|"
    r"Care Home)\b"
)
_SITE_NAME_BEFORE = re.compile(r"(?:(?:St\.?|Saint|Sainte|Mount|Mt\.?)\s+)?[A-Z][\w'.-]+(?:\s+[A-Z][\w'.-]+){0,3}\s+$")
# What a digit-led rule needs at its start: (fewest, most leading digits, the characters that may follow
# them, or None for any). A cheap test on the token that spares most regular-expression calls.
_DIGITS = re.compile(r"\d+")
_DIGIT_SHAPES = {
    "ssn": (3, 3, "-"),
    "date_numeric": (1, 2, "/.-"),
    "date_iso": (4, 4, "-"),
    "ipv4": (1, 3, "."),
    "date_day_first": (1, 2, " snrtde"),
    "age_years": (2, 3, " -y"),
    "street": (1, 6, " "),
    "rue": (1, 4, " ,b"),
    "zip_fr": (5, 5, " "),
    "phone_fr": (2, 10, None),
}
# Characters a token must hold for these rules to match there.
_INSIDE = {"email": "@", "domain": "."}
_CAPITALISED = {"city_state", "iban", "zip_state", "unit"}
_INITIALS = {"hopital": "hcga", "po_box": "p", "plate": "pri", "ssn_labelled": "sn"}  # where hints are not prefixes
_OPENERS = "([{<\"'"
_TOKEN = re.compile(r"[^\s:;,=/|\\'’)-]+")


def _starts(text: str) -> tuple[list[int], list[int], dict[int, int]]:
    """Where tokens start, split into those opening with a digit, "(" or "+", and those with a letter;
    and where each token ends."""
    digits, letters, ends = [], [], {}
    for token in _TOKEN.finditer(text):
        position = token.start()
        ends[position] = ends[position + 1] = token.end()
        first = text[position]
        if first in _OPENERS:
            if first in "(+":
                digits.append(position)
            position += 1
            first = text[position] if position < token.end() else ""
        if first.isdigit() or first in "(+":
            digits.append(position)
        elif first.isalpha():
            letters.append(position)
    return digits, letters, ends


_COMPILED = [
    (kind, rule, re.compile(pattern), group, HINTS.get(rule))
    for kind, rule, pattern, group in DETECTORS
    if isinstance(pattern, str)
]
# All labels in one pass over the lower-cased text (one scan instead of one per identifier type), then
# the value is matched right where its label ends.
_LABEL_KIND = {rule: kind for kind, rule, pattern, _ in DETECTORS if isinstance(pattern, Label)}
_LABEL_SOURCE = "|".join(
    rf"(?P<{rule}>\b(?:{pattern.labels.lower()}))" for _, rule, pattern, _ in DETECTORS if isinstance(pattern, Label)
)
_LABELS = re.compile(_LABEL_SOURCE)
_LABELS_ANY_CASE = re.compile(_LABEL_SOURCE, re.IGNORECASE)  # for texts whose lower case changes length
_AFTER_LABEL = re.compile(NUMBER_LABEL + VALUE)

# Long digit runs that no rule above named: still unique identifying numbers (Safe Harbor R), unless
# a unit follows (a measurement) or they are a plain year.
_OTHER_NUMBER = re.compile(
    r"(?<![\w.,/-])(?=[A-Z0-9-]*\d{5})[A-Z0-9][A-Z0-9-]{4,}[A-Z0-9](?![\w.,/-]*\s*(?:mg|mcg|g|kg|ml|mL|"
    r"l|L|units?|IU|mmol|mmHg|%|cells|copies|/))"
)


_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def _valid(kind: str, rule: str, value: str) -> bool:
    if rule == "ipv4":
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return False
        return True
    if rule == "iban":  # ISO 13616 check digits: a VIN or a code of the same shape fails them
        compact = value.replace(" ", "")
        digits = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
        return int(digits) % 97 == 1
    if rule == "date_numeric":  # day and month in range, either order (US and European)
        first, second = (int(part) for part in re.split(r"[/.-]", value)[:2])
        return 1 <= first <= 31 and 1 <= second <= 31 and min(first, second) <= 12
    if rule == "phone_grouped":  # 9 to 13 digits in groups: a number too long to be a measurement
        return 9 <= sum(c.isdigit() for c in value) <= 13
    if rule == "card":
        digits = [int(c) for c in value if c.isdigit()]
        if not 13 <= len(digits) <= 19:
            return False
        total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
        return total % 10 == 0  # Luhn: otherwise it is another kind of number, caught below if long
    if kind in ("MRN", "HEALTH_PLAN", "ACCOUNT", "LICENSE", "VEHICLE", "DEVICE", "BIOMETRIC") and rule != "iban":
        # "record shows", "plan to": a label followed by a word; "visit 2024-01-02": a date, found as one
        return any(c.isdigit() for c in value) and not _DATE_LIKE.fullmatch(value)
    return True


def find(text: str) -> list[Span]:
    spans = []
    lowered = text.lower()
    same_length = len(lowered) == len(text)
    at_digit, at_letter, ends = _starts(text)
    labels, source = (_LABELS, lowered) if same_length else (_LABELS_ANY_CASE, text)
    for label in filter(None, (labels.match(source, position) for position in at_letter)):
        value = _AFTER_LABEL.match(text, label.end())
        if value and value.end(1) > value.start(1):
            kind, rule = _LABEL_KIND[label.lastgroup], label.lastgroup
            if _valid(kind, rule, value.group(1)):
                spans.append(Span(value.start(1), value.end(1), kind, rule))
    if not same_length:
        lowered = text  # hints below are then only a cheaper, case-sensitive test; run every pattern
    at_either = sorted(at_digit + at_letter)
    digit_runs = []  # (start, length of the leading run of digits, the character after it)
    for position in at_digit:
        run = _DIGITS.match(text, position)
        if run:
            digit_runs.append((position, run.end() - position, text[run.end() : run.end() + 1]))
    by_initial: dict[str, list[int]] = {}
    for position in at_letter:
        by_initial.setdefault(text[position].lower(), []).append(position)
    capitalised = [p for p in at_letter if text[p].isupper()]
    for kind, rule, pattern, group, hints in _COMPILED:
        if hints is not None and same_length and not any(map(lowered.__contains__, hints)):
            continue
        if rule in _DIGIT_SHAPES:
            low, high, following = _DIGIT_SHAPES[rule]
            starts = [
                p for p, run, after in digit_runs if low <= run <= high and (following is None or after in following)
            ]
        elif rule in _AT_DIGIT:
            starts = at_digit
        elif rule in _CAPITALISED:
            starts = capitalised
        elif rule in _AT_LETTER:
            if rule.startswith("date_month"):
                initials = _MONTH_INITIALS
            else:
                initials = _INITIALS.get(rule) or {h[0] for h in hints or ()}
            starts = sorted(p for initial in initials for p in by_initial.get(initial, ())) if initials else at_letter
        elif rule == "vin":
            starts = [p for p in at_either if ends[p] - p == 17]
        elif rule in ("mac", "ipv6"):  # the token ends at the first ':' or '-' of the address
            starts = [p for p in at_either if text[ends[p] : ends[p] + 1] in (":", "-")]
        elif rule in _INSIDE:
            starts = [p for p in at_either if _INSIDE[rule] in text[p : ends[p]]]
        else:
            starts = at_either
        end_of_last = 0  # like finditer: a match may not begin inside the previous one of the same rule
        for position in starts:
            if position < end_of_last:
                continue
            match = pattern.match(text, position)
            if match is None:
                continue
            end_of_last = match.end()
            start, end = match.span(group)
            if start < end and _valid(kind, rule, match.group(group)):
                spans.append(Span(start, end, kind, rule))
    for suffix in _CARE_SITE.finditer(text):
        window = max(0, suffix.start() - 80)
        name = _SITE_NAME_BEFORE.search(text, window, suffix.start())
        if name:
            spans.append(Span(name.start(), suffix.end(), "LOCATION", "care_site"))
    for match in _SPACED_DIGITS.finditer(text):
        digits = "".join(c for c in match.group() if c.isdigit())
        spans.append(Span(match.start(), match.end(), _spaced_kind(digits), "spaced_digits"))
    taken = claimed(text, spans)
    for match in _OTHER_NUMBER.finditer(text):
        start, end = match.span()
        if not any(taken[start:end]) and not re.fullmatch(r"(19|20)\d\d", match.group()):
            spans.append(Span(start, end, "ID", "other_number"))
    return spans
