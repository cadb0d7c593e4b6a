"""Regular-expression detectors for every Safe Harbor type except names.

Each detector is (type, rule name, compiled pattern, value group). Identifiers that have no shape of
their own (record, plan, account, licence, device numbers) are found by their label ("MRN:",
"member ID", "acct #") and only the value is a span. Python's ``re`` with one pass per pattern keeps
the cost linear in the text's length.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from clinalign.phi import Span

_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
    r"|janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre|d[ée]cembre)"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_NUMBER_LABEL = r"\)?\s*(?i:number|num\.?|no\.?|n[°º]|#|id|identifier|est)?\)?\s*[:#]?\s*"
_VALUE = r"([A-Z0-9][A-Z0-9\-/.]{3,24}[A-Z0-9])"

_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|"
    "PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
# Street suffixes: the usual abbreviations and USPS's list (Publication 28, appendix C1), singular or plural.
_STREET_TYPES = (
    r"(?:(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|Circle|"
    r"Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Crescent|Row|Alley|Loop|Plaza|Ridge|Run|Path|Pike|Crossing|"
    r"Xing|River|Arcade|Bayou|Beach|Bend|Bluff|Bottom|Branch|Bridge|Brook|Burg|Bypass|Camp|Canyon|Cape|Causeway|Center|"
    r"Cliff|Club|Common|Corner|Course|Cove|Creek|Crest|Dale|Dam|Divide|Estate|Expressway|Extension|Fall|Ferry|Field|"
    r"Flat|Ford|Forest|Forge|Fork|Fort|Freeway|Garden|Gateway|Glen|Green|Grove|Harbor|Haven|Height|Hill|Hollow|"
    r"Island|Isle|Junction|Key|Knoll|Lake|Landing|Light|Lodge|Mall|Manor|Meadow|Mews|Mill|Mission|Motorway|Mount|"
    r"Mountain|Neck|Orchard|Oval|Park|Pass|Pine|Plain|Point|Port|Prairie|Radial|Ranch|Rapid|Rest|Route|Shoal|Shore|"
    r"Spring|Spur|Station|Stravenue|Stream|Summit|Throughway|Trace|Track|Trafficway|Tunnel|Turnpike|Underpass|Union|"
    r"Valley|Via|Viaduct|View|Village|Ville|Vista|Walk|Wall|Well)s?)"
)


@dataclass(frozen=True)
class _Label:
    """An identifier found by its label: ``labels`` is the alternation of label words."""

    labels: str


def _labelled(labels: str) -> _Label:
    return _Label(labels)


# (type, rule, pattern, group holding the PHI: 0 = the whole match)
_DETECTORS: list[tuple[str, str, str, int]] = [
    ("EMAIL", "email", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b", 0),
    ("URL", "url", r"\b(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]", 0),
    (
        "URL",
        "domain",
        r"\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|info|biz|io|fr|uk|de|ca|au)\b"
        r"(?:/[^\s]*[^\s.,;:!?])?",
        0,
    ),
    ("IP", "ipv4", r"\d(?<![\d.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\.?\d)", 0),
    ("IP", "ipv6", r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])", 0),
    ("DEVICE", "mac", r"\b(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}\b", 0),
    ("SSN", "ssn", r"\d(?<![\d-]\d)\d{2}-\d{2}-\d{4}(?![\d-])", 0),
    (
        "SSN",
        "ssn_labelled",
        r"(?i:\b(?:SSN|social security(?: number| no\.?)?|s[ée]curit[ée] sociale|NIR))"
        r"\s*[:#]?\s*(\d[\d\s-]{7,20}\d)",
        1,
    ),
    ("FAX", "fax", r"(?i:\bfax)\s*(?:number|no\.?|#)?\s*[:#]?\s*(\+?[\d(][\d\s().-]{7,18}\d)", 1),
    (
        "PHONE",
        "phone_nanp",
        r"(?<![\w/.-])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}"
        r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])",
        0,
    ),
    (
        "PHONE",
        "phone_grouped",
        r"(?:\((?<![\w.,/-]\()\d{2,4}\)|\d(?<![\w.,/-]\d)\d{1,3})(?:[\s.-]\d{2,4}){2,4}(?![\w.,/-])",
        0,
    ),
    ("PHONE", "phone_intl", r"(?<![\w/])\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}\d(?!\w)", 0),
    ("PHONE", "phone_fr", r"0(?<![\w/]0)[1-9](?:[\s.-]?\d{2}){4}(?!\w)", 0),
    (
        "PHONE",
        "phone_labelled",
        r"(?i:\b(?:phone|tel|t[ée]l[ée]phone|mobile|cell|pager|bip)\.?)\s*[:#]?\s*"
        r"(\+?[\d(][\d\s().-]{5,18}\d)",
        1,
    ),
    (
        "MRN",
        "mrn",
        _labelled(
            r"MRN|medical record|record|chart|patient|hospital|IPP|NDA|NIP|unit|encounter|visit|"
            r"admission|episode|case|accession|specimen|dossier|s[ée]jour"
        ),
        1,
    ),
    (
        "HEALTH_PLAN",
        "plan",
        _labelled(
            r"member|subscriber|policy|plan|beneficiary|insurance|insurer|medicare|medicaid|"
            r"group|payer|HICN|MBI|mutuelle"
        ),
        1,
    ),
    ("ACCOUNT", "account", _labelled(r"account|acct|billing|invoice|claim|bank|routing|IBAN"), 1),
    ("ACCOUNT", "iban", r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){3,7}(?:\s?[A-Z0-9]{1,3})?\b", 0),
    ("ACCOUNT", "card", r"\d(?<![\d-]\d)[ -]?(?:\d[ -]?){11,17}\d(?![\d-])", 0),
    (
        "LICENSE",
        "license",
        _labelled(
            r"licen[cs]e|DEA|NPI|certificate|certification|passport|permit|RPPS|ADELI|"
            r"registration"
        ),
        1,
    ),
    ("VEHICLE", "vin", r"\b(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}\b", 0),
    (
        "VEHICLE",
        "plate",
        r"(?i:\b(?:plate|registration|immatriculation))\s*(?i:number|no\.?|#)?\s*[:#]?\s*"
        r"((?=[A-Z0-9 -]*\d)[A-Z0-9]{1,5}[ -]?[A-Z0-9]{1,5}(?:[ -][A-Z0-9]{1,5})?)\b",
        1,
    ),
    ("DEVICE", "device", _labelled(r"serial|S/N|SN|device|UDI|IMEI|pacemaker|implant|lot"), 1),
    (
        "BIOMETRIC",
        "biometric",
        _labelled(
            r"fingerprint|retina|retinal|iris|voiceprint|voice print|biometric|"
            r"face ?print|palm ?print"
        ),
        1,
    ),
    ("DATE", "date_numeric", r"\d(?<![\d/.-]\d)\d?[/.-]\d\d?[/.-](?:\d{4}|\d{2})(?![\d/-])", 0),
    (
        "DATE",
        "date_iso",
        r"\d(?<![\d-]\d)\d{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
        r"(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?(?!\d)",
        0,
    ),
    ("DATE", "date_month_first", rf"\b{_MONTHS}\.?\s+{_DAY}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b", 0),
    ("DATE", "date_day_first", rf"\b{_DAY}(?:st|nd|rd|th|er)?\s+(?:of\s+|de\s+)?{_MONTHS}\.?(?:,?\s+\d{{4}})?\b", 0),
    ("DATE", "date_month_year", rf"\b{_MONTHS}\.?,?\s+\d{{4}}\b", 0),
    (
        "DATE",
        "date_cued",
        r"(?i:\b(?:on|since|from|until|dated|DOB|born|seen|admitted|discharged)\s*:?\s+)"
        r"((?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))(?![\d/])",
        1,
    ),
    ("AGE", "age_years", r"\b(9\d|1[0-4]\d)(?=[\s-]*(?:-?years?|-?yrs?|y/?o\b|yo\b|ans\b))", 1),
    ("AGE", "age_labelled", r"(?i:\b(?:age|aged|âgée?)\s*:?\s*)(9\d|1[0-4]\d)\b", 1),
    (
        "LOCATION",
        "street",
        rf"\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'.-]*\s+){{1,4}}{_STREET_TYPES}\b\.?"
        r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*[\w-]+)?",
        0,
    ),
    (
        "LOCATION",
        "rue",
        r"(?i:\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|all[ée]e|"
        r"impasse|route|quai|cours|square)\s+(?:(?:de|du|des|la|le|l'|d')\s*)*)"
        r"[A-ZÀ-Ý][\w'-]*(?:\s+[A-ZÀ-Ý][\w'-]*){0,4}",
        0,
    ),
    (
        "LOCATION",
        "street_cued",
        r"(?i:\b(?:lives at|living at|resides at|address(?:\s*:)?|home at|visit at|moved to))\s+"
        r"(\d{1,6}\s+[A-Z][\w'.-]*(?:\s+[A-Z][\w'.-]*){0,3}"
        r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*[\w-]+)?)",
        1,
    ),
    ("LOCATION", "unit", r"(?:Apt|Apartment|Suite|Ste|Unit|Flat)\.?\s*#?\s*\d+[A-Z]?\b", 0),
    ("LOCATION", "po_box", r"(?i:\bP\.?\s?O\.?\s+Box\s+\d+)", 0),
    ("LOCATION", "city_state", rf"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+){{0,2}}(?=,\s*(?:{_US_STATES})\b)", 0),
    (
        "LOCATION",
        "place_cued",
        r"\b(?:lives in|living in|resides in|resident of|moved to|born in|travell?ed to|"
        r"près de|habite à|domicilié à|né à|née à)\s([A-ZÀ-Ý][\w'-]+(?:[\s-][A-ZÀ-Ý][\w'-]+){0,2})",
        1,
    ),
    (
        "LOCATION",
        "site_cued",
        r"\bat the\s([A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2})(?=\s+(?:clinic|hospital|practice|surgery)\b)",
        1,
    ),
    (
        "LOCATION",
        "hopital",
        r"(?:\b(?:[HhCc]ôpital|[Hh]opital|CHU|CHR|[Cc]linique|[Gg]roupe [Hh]ospitalier|AP-HP)"
        r"(?:\s+(?:de|du|des|d'|la|le|l')?\s*[A-ZÀ-Ý][\w'-]*){1,4})",
        0,
    ),
    ("ZIP", "zip_state", rf"\b(?:{_US_STATES})\s+(\d{{5}}(?:-\d{{4}})?)\b", 1),
    ("ZIP", "zip_labelled", r"(?i:\b(?:zip|zip code|postal code|code postal|CP)\s*:?\s*)(\d{5}(?:-\d{4})?)\b", 1),
    ("ZIP", "zip_fr", r"\d(?<!\w\d)\d{4}\b(?=\s+[A-ZÀ-Ý][\w'-]+(?:\s+(?:Cedex|CEDEX))?\b)", 0),
]


# Lower-case literals at least one of which must occur for a rule to match: a cheap ``in`` test lets most
# texts skip most patterns, so the scan stays linear with a far smaller constant. Rules absent here always run.
_HINTS: dict[str, tuple[str, ...]] = {
    "email": ("@",),
    "url": ("http", "www."),
    "ipv6": (":",),
    "mac": (":", "-"),
    "ssn_labelled": ("ssn", "social security", "curit", "nir"),
    "fax": ("fax",),
    "phone_intl": ("+",),
    "phone_labelled": ("phone", "tel", "tél", "mobile", "cell", "pager", "bip"),
    "mrn": (
        "mrn",
        "record",
        "chart",
        "patient",
        "hospital",
        "ipp",
        "nda",
        "nip",
        "unit",
        "encounter",
        "visit",
        "admission",
        "episode",
        "case",
        "accession",
        "specimen",
        "dossier",
        "séjour",
        "sejour",
    ),
    "plan": (
        "member",
        "subscriber",
        "policy",
        "plan",
        "beneficiary",
        "insur",
        "medicare",
        "medicaid",
        "group",
        "payer",
        "hicn",
        "mbi",
        "mutuelle",
    ),
    "account": ("account", "acct", "billing", "invoice", "claim", "bank", "routing", "iban"),
    "license": ("licen", "dea", "npi", "certific", "passport", "permit", "rpps", "adeli", "registration"),
    "plate": ("plate", "registration", "immatriculation"),
    "device": ("serial", "s/n", "sn", "device", "udi", "imei", "pacemaker", "implant", "lot"),
    "biometric": ("finger", "retina", "iris", "voice", "biometric", "face", "palm"),
    "age_labelled": ("age", "âg"),
    "rue": ("rue", "av", "boulevard", "bd", "place", "chemin", "all", "impasse", "route", "quai", "cours", "square"),
    "po_box": ("box",),
    "street_cued": ("lives at", "living at", "resides at", "address", "home at", "visit at", "moved to"),
    "place_cued": (
        "lives in",
        "living in",
        "resid",
        "moved to",
        "born in",
        "from",
        "travel",
        "près de",
        "habite",
        "domicili",
        "né à",
        "née à",
    ),
    "site_cued": ("at the",),
    "domain": (".com", ".org", ".net", ".edu", ".gov", ".info", ".biz", ".io", ".fr", ".uk", ".de", ".ca", ".au"),
    "date_cued": ("on", "since", "from", "until", "dated", "dob", "born", "seen", "admitted", "discharged"),
    "hopital": ("pital", "chu", "chr", "clinique", "hospitalier", "ap-hp"),
    "zip_labelled": ("zip", "postal", "cp"),
}

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
    (kind, rule, re.compile(pattern), group, _HINTS.get(rule))
    for kind, rule, pattern, group in _DETECTORS
    if isinstance(pattern, str)
]
# All labels in one pass over the lower-cased text (one scan instead of one per identifier type), then
# the value is matched right where its label ends.
_LABEL_KIND = {rule: kind for kind, rule, pattern, _ in _DETECTORS if isinstance(pattern, _Label)}
_LABEL_SOURCE = "|".join(
    rf"(?P<{rule}>\b(?:{pattern.labels.lower()}))" for _, rule, pattern, _ in _DETECTORS if isinstance(pattern, _Label)
)
_LABELS = re.compile(_LABEL_SOURCE)
_LABELS_ANY_CASE = re.compile(_LABEL_SOURCE, re.IGNORECASE)  # for texts whose lower case changes length
_AFTER_LABEL = re.compile(_NUMBER_LABEL + _VALUE)

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
    from clinalign.phi import claimed

    taken = claimed(text, spans)
    for match in _OTHER_NUMBER.finditer(text):
        start, end = match.span()
        if not any(taken[start:end]) and not re.fullmatch(r"(19|20)\d\d", match.group()):
            spans.append(Span(start, end, "ID", "other_number"))
    return spans
