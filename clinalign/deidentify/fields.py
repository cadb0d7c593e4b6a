"""File mode's fields: what happens to each field of a line besides ``text``, decided by its name.

``text`` is always de-identified. Any other field is, the first rule that applies: kept as it is (the
``keep`` list: the user vouches it holds no PHI); replaced whole by its type's tag or surrogate when its
name says which identifier it holds (``IDENTIFIER_FIELDS``: a name, a date, a phone number...);
pseudonymised when it is an identifier that links records (``ID_FIELDS``: ids, MRNs); de-identified like
``text`` when it holds any other string; dropped otherwise (numbers, lists, objects: nothing scans them).

Names match case-insensitively and whatever their style (``PatientName``, ``patient-name`` and
``patient_name`` are one name); a pattern may hold ``*`` (``*_id``). The built-in lists are always
applied: a site adds to them (``id_fields``, ``identifier_fields``) and exempts a field with ``keep``,
so that replacing a list in a config can never silently switch a protection off.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

# Identifiers that link a patient's records: replaced by keyed pseudonyms, so links survive.
ID_FIELDS: tuple[str, ...] = ("id", "*_id", "mrn", "*_mrn", "*_number", "*_no")

# Fields whose name says which Safe Harbor identifier they hold (45 CFR 164.514(b)(2)): the first
# matching pattern gives the type. Dates are every date of an individual, not only the birth date.
IDENTIFIER_FIELDS: dict[str, str] = {
    "ssn": "SSN",
    "*_ssn": "SSN",
    "social_security_number": "SSN",
    "email": "EMAIL",
    "*_email": "EMAIL",
    "email_address": "EMAIL",
    "ip": "IP",
    "ip_address": "IP",
    "url": "URL",
    "website": "URL",
    "fax": "FAX",
    "fax_number": "FAX",
    "phone": "PHONE",
    "*_phone": "PHONE",
    "phone_number": "PHONE",
    "*_phone_number": "PHONE",
    "telephone": "PHONE",
    "mobile": "PHONE",
    "name": "NAME",
    "*_name": "NAME",
    "surname": "NAME",
    "dob": "DATE",
    "birthdate": "DATE",
    "date_of_birth": "DATE",
    "date": "DATE",
    "*_date": "DATE",
    "*_datetime": "DATE",
    "zip": "ZIP",
    "zip_code": "ZIP",
    "zipcode": "ZIP",
    "postcode": "ZIP",
    "postal_code": "ZIP",
    "address": "LOCATION",
    "*_address": "LOCATION",
    "street": "LOCATION",
    "city": "LOCATION",
    "county": "LOCATION",
    "town": "LOCATION",
}

KEPT, TEXT, REPLACED, PSEUDONYMISED, DEIDENTIFIED, DROPPED = (
    "kept",
    "text",
    "replaced",
    "pseudonymised",
    "deidentified",
    "dropped",
)


def field_key(name: str) -> str:
    """One spelling of a field name: ``PatientName``, ``patient-name`` -> ``patient_name``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9*]+", "_", name.casefold()).strip("_")


def _matches(key: str, patterns) -> str | None:
    return next((p for p in patterns if fnmatchcase(key, field_key(p))), None)


def classify(name: str, keep: list[str], id_fields: list[str], identifiers: dict[str, str]) -> tuple[str, str | None]:
    """What happens to field ``name`` (``KEPT``, ``TEXT``, ``REPLACED``, ``PSEUDONYMISED``, ``DROPPED``,
    or a string's ``DEIDENTIFIED``) and, when replaced, its PHI type; a value of a type the action cannot
    handle (a list to pseudonymise, a number to scan) is dropped by the caller."""
    if name == "text":
        return TEXT, None
    if name == "phi_spans":
        return DROPPED, None  # the output's own field: the spans found in this run replace any given
    key = field_key(name)
    if _matches(key, keep):
        return KEPT, None
    for table in (identifiers, IDENTIFIER_FIELDS):  # a site's own patterns first
        found = _matches(key, table)
        if found:
            return REPLACED, table[found]
    if _matches(key, (*id_fields, *ID_FIELDS)):
        return PSEUDONYMISED, None
    return DEIDENTIFIED, None
