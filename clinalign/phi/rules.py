"""The rule table behind ``patterns``: one row per Safe Harbor detector, and the literal hints that
let most texts skip most rules.

Each row is (type, rule, pattern, group holding the PHI). Identifiers with no shape of their own
(record, plan, account, licence, device numbers) are found by their label ("MRN:", "member ID",
"acct #"): those rows hold a ``Label`` and only the value after it is a span.
"""

from __future__ import annotations

from dataclasses import dataclass

_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
    r"|janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre|d[ée]cembre)"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
NUMBER_LABEL = r"\)?\s*(?i:number|num\.?|no\.?|n[°º]|#|id|identifier|est)?\)?\s*[:#]?\s*"
VALUE = r"([A-Z0-9][A-Z0-9\-/.]{3,24}[A-Z0-9])"

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
class Label:
    """An identifier found by its label: ``labels`` is the alternation of label words."""

    labels: str


def _labelled(labels: str) -> Label:
    return Label(labels)


# (type, rule, pattern, group holding the PHI: 0 = the whole match)
DETECTORS: list[tuple[str, str, str, int]] = [
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
HINTS: dict[str, tuple[str, ...]] = {
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
