"""Person names without a downloadable NER model, recall first (in the spirit of Philter).

A capitalised word is a name when
* it follows a title or a cue ("Dr.", "Mrs", "seen by", "patient", "Re:", "Docteur"), or
* it is in the name gazetteer (first and last names of Faker's Latin-script locales) and is not an
  ambiguous common word at the start of a sentence ("Will", "Grace", "Brown" open sentences too), or
* it stands next to a name (a surname not in the gazetteer, an initial).
It is not a name when an eponym pattern follows ("Parkinson's disease", "Bell palsy").

Common words come from ``wordfreq`` (its English list is a frozen frequency snapshot; the package is
no longer updated, which suits a fixed allowlist); the gazetteer is built once per process.
"""

from __future__ import annotations

import importlib
import re
from functools import cache

from clinalign.phi import Span

# Latin-script locales: enough coverage for US, UK, European and Latin American names.
GAZETTEER_LOCALES = (
    "en_US",
    "en_GB",
    "en_IE",
    "en_CA",
    "en_AU",
    "en_NZ",
    "en_IN",
    "en_NG",
    "en_KE",
    "en_PK",
    "en_TH",
    "es_ES",
    "es_MX",
    "es_CO",
    "es_AR",
    "es_CL",
    "es_CA",
    "fr_FR",
    "fr_CA",
    "fr_CH",
    "fr_BE",
    "fr_DZ",
    "fr_QC",
    "de_DE",
    "de_AT",
    "de_CH",
    "it_IT",
    "pt_BR",
    "pt_PT",
    "nl_NL",
    "nl_BE",
    "pl_PL",
    "sv_SE",
    "da_DK",
    "no_NO",
    "fi_FI",
    "is_IS",
    "et_EE",
    "lv_LV",
    "lt_LT",
    "cs_CZ",
    "sk_SK",
    "sl_SI",
    "hr_HR",
    "hu_HU",
    "ro_RO",
    "tr_TR",
    "az_AZ",
    "id_ID",
    "ga_IE",
    "sw",
    "yo_NG",
    "zu_ZA",
    "tw_GH",
    "ha_NG",
    "ig_NG",
    "fil_PH",
    "vi_VN",
)
# How many of the most frequent English words count as common (ambiguous when also a name).
COMMON_WORDS = 30000
# Next to a name, a capitalised word is part of it unless it is among the commonest English words
# (O'Neil and Tolkien are in the 30,000 most frequent words; "Then" and "Ward" are far higher).
NEIGHBOUR_RANK = 5000
# A first name opening a sentence is a name unless it is among the commonest words ("Mark", "Will", "May").
SENTENCE_START_RANK = 3000

_TOKEN = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ'’-]*\.?")
_TITLES = {
    "dr",
    "dr.",
    "doctor",
    "mr",
    "mr.",
    "mrs",
    "mrs.",
    "ms",
    "ms.",
    "miss",
    "mx",
    "mx.",
    "prof",
    "prof.",
    "professor",
    "sister",
    "nurse",
    "docteur",
    "pr",
    "pr.",
    "monsieur",
    "madame",
    "mme",
    "mlle",
    "m.",
    "mademoiselle",
    "sr",
    "sr.",
}
_CUES = {
    "patient",
    "pt",
    "name",
    "named",
    "by",
    "attending",
    "resident",
    "intern",
    "interne",
    "nurse",
    "son",
    "daughter",
    "wife",
    "husband",
    "mother",
    "father",
    "brother",
    "sister",
    "partner",
    "contact",
    "re:",
    "member",
    "signed",
    "dictated",
    "cc",
    "to:",
    "from:",
    "dear",
    "is",
    "am",
    "called",
    "spouse",
    "guardian",
    "caregiver",
    "friend",
    "neighbour",
    "neighbor",
    "patiente",
    "épouse",
    "époux",
    "fils",
    "fille",
    "mère",
    "père",
    "frère",
    "sœur",
}
# Words that follow cues in forms and are never names ("Member ID", "Patient MRN", "Dr. Smith MD").
_LABEL_WORDS = {
    "id",
    "mrn",
    "dob",
    "ssn",
    "no",
    "number",
    "md",
    "phd",
    "rn",
    "np",
    "pa",
    "do",
    "dds",
    "ipp",
    "nda",
    "age",
    "sex",
    "tel",
    "fax",
    "email",
    "name",
    "date",
    "room",
    "bed",
}
_EPONYM_NEXT = {
    "disease",
    "syndrome",
    "sign",
    "signs",
    "palsy",
    "law",
    "test",
    "criteria",
    "score",
    "rule",
    "rules",
    "phenomenon",
    "reflex",
    "triad",
    "ulcer",
    "fracture",
    "classification",
    "scale",
    "maneuver",
    "manoeuvre",
    "procedure",
    "operation",
    "tube",
    "catheter",
    "node",
    "nodes",
    "lymphoma",
    "sarcoma",
    "tumor",
    "tumour",
    "anomaly",
    "disorder",
    "dystrophy",
    "ataxia",
    "encephalopathy",
    "thyroiditis",
    "contracture",
    "cell",
    "cells",
    "maladie",
    "signe",
}


# Lower-case words inside a name ("Willemine ten Pas", "Ludwig van Beethoven", "María de la Cruz").
_PARTICLES = {
    "van",
    "von",
    "de",
    "der",
    "den",
    "ten",
    "ter",
    "la",
    "le",
    "di",
    "da",
    "del",
    "du",
    "dos",
    "das",
    "bin",
    "ibn",
    "al",
    "el",
    "y",
    "zu",
    "van der",
    "van den",
    "de la",
    "de los",
    "von der",
}


@cache
def _gazetteer() -> frozenset[str]:
    return _first_names() | _last_names()


@cache
def _first_names() -> frozenset[str]:
    return _names(("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"))


@cache
def _last_names() -> frozenset[str]:
    return _names(("last_names",))


def _names(attributes: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for locale in GAZETTEER_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ModuleNotFoundError:
            continue
        for attr in attributes:
            values = getattr(provider, attr, ())
            if isinstance(values, dict):
                values = values.keys()
            if isinstance(values, (list, tuple, type({}.keys()))):  # some locales compute names in properties
                names.update(v.lower() for v in values if isinstance(v, str) and len(v) > 1)
    return frozenset(names)


@cache
def _rank() -> dict[str, int]:
    return {word: i for i, word in enumerate(_common_list())}


@cache
def _common_list() -> tuple[str, ...]:
    import wordfreq

    return tuple(wordfreq.top_n_list("en", COMMON_WORDS))


def _shape(word: str) -> str | None:
    """How a token is written: ``title`` (Maria, O'Neil, McDonald), ``caps`` (SMITH), ``initial`` (J.)."""
    if not word[:1].isupper():
        return None
    if len(word) == 1:
        return "initial"
    if word.isupper():
        return "caps"
    return "title" if any(c.islower() for c in word) else None


def find(text: str, taken: bytearray | None = None) -> list[Span]:
    """Name spans in ``text``, skipping characters already claimed by another detector (``taken`` mask)."""
    gazetteer, rank = _gazetteer(), _rank()
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    words = [t[2].rstrip(".") for t in tokens]
    keys = [w.lower().replace("’", "'") for w in words]
    shapes = [
        _shape(w) if w[:1].isupper() and (len(t[2]) > len(w) or len(w) > 1) else None
        for t, w in zip(tokens, words, strict=True)
    ]
    # An all-capitals text (long enough to tell): there, case says nothing about names. Counted over
    # the word tokens, which is all the letters that matter here.
    letters = sum(map(len, words))
    shouting = letters >= 30 and sum(len(w) for w in words if w.isupper()) > 0.6 * letters
    n = len(tokens)
    capitalised = [i for i in range(n) if shapes[i] is not None]  # only these can be names: loop over them
    marks = [False] * n
    strong = [False] * n  # evidence beyond the gazetteer: a title, a cue, a neighbour

    def gap(i: int) -> str:
        return text[tokens[i - 1][1] : tokens[i][0]] if i else ""

    def joined(i: int) -> bool:
        """Token i follows token i-1 within a name: a space, a comma or nothing; no sentence ends between."""
        if i == 0 or len(gap(i)) > 2 or "\n" in gap(i):
            return False
        return not tokens[i - 1][2].endswith(".") or shapes[i - 1] == "initial"

    def sentence_start(i: int) -> bool:
        return i == 0 or tokens[i - 1][2].endswith(".") or any(c in gap(i) for c in ".!?:\n;•")

    def known(i: int) -> bool:
        return keys[i] in gazetteer or keys[i].split("'")[0] in gazetteer

    for i in capitalised:
        if keys[i] in _TITLES or keys[i] in _CUES or keys[i] in _LABEL_WORDS:
            continue
        previous = keys[i - 1] if i else ""
        cued = (
            previous in _TITLES
            or (previous in _CUES and ":" not in gap(i))
            or (previous in ("re", "to", "from") and ":" in gap(i))
        )
        if cued and (shapes[i] != "initial" or tokens[i][2].endswith(".")):
            marks[i] = strong[i] = not (shouting and keys[i] in rank and not known(i))
        elif shapes[i] != "initial" and known(i):
            if shapes[i] == "caps" and len(words[i]) < 3:
                continue  # US, OK, MD: two capitals are an abbreviation far more often than a name
            if keys[i] not in rank:
                marks[i] = not shouting
            elif not shouting and not sentence_start(i):
                marks[i] = True  # a common word that is also a name, capitalised mid-sentence
            elif not shouting and keys[i] in _first_names() and rank[keys[i]] >= SENTENCE_START_RANK:
                marks[i] = True  # "Maria called back": a first name, and no everyday word, opens the sentence
    # Neighbours: a capitalised word, a surname in capitals or an initial next to a name is part of it.
    changed = True
    while changed:
        changed = False
        for i in capitalised:
            if marks[i] or keys[i] in _TITLES or keys[i] in _CUES or keys[i] in _LABEL_WORDS:
                continue
            left = joined(i) and marks[i - 1]
            right = i + 1 < n and joined(i + 1) and marks[i + 1]
            if not (left or right):
                continue
            if shapes[i] == "initial":
                ok = tokens[i][2].endswith(".") or right
            elif shapes[i] == "caps":  # a surname in capitals (French style), not an acronym after a comma
                ok = (
                    known(i)
                    or not shouting
                    and keys[i] not in rank
                    and len(words[i]) > 2
                    and gap(i if left else i + 1) == " "
                )
            else:
                ok = known(i) or rank.get(keys[i], COMMON_WORDS) >= NEIGHBOUR_RANK
            if ok:
                marks[i] = strong[i] = changed = True
    # A name confirmed once is a name wherever it appears capitalised in the same text.
    confirmed = {keys[i] for i in capitalised if marks[i] and shapes[i] != "initial"}
    for i in capitalised:
        if not marks[i] and shapes[i] in ("title", "caps") and keys[i] in confirmed:
            marks[i] = True
    spans = []
    for i in (i for i in capitalised if marks[i]):
        start, _end, token = tokens[i]
        following = keys[i + 1] if i + 1 < n else ""
        possessive = keys[i].endswith("'s")
        if following in _EPONYM_NEXT and (possessive or not strong[i]):
            continue  # Parkinson's disease, Bell palsy
        end = start + len(words[i] if shapes[i] != "initial" else token) - (2 if possessive else 0)
        if taken is not None and any(taken[start:end]):
            continue
        between = text[spans[-1].end : start] if spans else ""
        if spans and "\n" not in between and (between.strip(" ") == "" or between.strip().lower() in _PARTICLES):
            spans[-1] = Span(spans[-1].start, end, "NAME", "name")  # one span per person: "Willemine ten Pas"
        else:
            spans.append(Span(start, end, "NAME", "name"))
    return spans
