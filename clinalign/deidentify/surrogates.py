"""What replaces a PHI span: a typed tag, or a realistic surrogate that stays consistent per patient.

Safe Harbor rules hold in both strategies: an age over 89 becomes "90+", a ZIP code keeps only its
first three digits (or 000 where that area has 20,000 people or fewer, per the Census list HHS
publishes), and a year may stay. Surrogates (Faker) are keyed by patient: the same name always maps
to the same surrogate, and every date of a patient moves by one secret shift, so intervals hold.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import datetime, timedelta

# ZIP3 areas of 20,000 people or fewer (2000 Census, as listed in HHS's de-identification guidance).
RESTRICTED_ZIP3 = {
    "036",
    "059",
    "063",
    "102",
    "203",
    "556",
    "692",
    "790",
    "821",
    "823",
    "830",
    "831",
    "878",
    "879",
    "884",
    "890",
    "893",
}

_DATE_FORMATS = [
    "%m/%d/%Y",
    "%m/%d/%y",
    "%Y-%m-%d",
    "%B %d, %Y",
    "%b %d, %Y",
    "%b. %d, %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%d.%m.%Y",
    "%d/%m/%Y",
    "%B %d",
    "%b %d",
    "%b. %d",
    "%B %Y",
    "%m/%d",
    "%Y-%m-%d %H:%M",
]


def zip3(value: str) -> str:
    head = value[:3]
    return ("000" if head in RESTRICTED_ZIP3 else head) + "**"


def tag(kind: str, value: str) -> str:
    """The redaction strategy: ``[NAME]``; ages and ZIP codes keep what Safe Harbor allows."""
    if kind == "AGE":
        return "90+"
    if kind == "ZIP":
        return zip3(value)
    return f"[{kind}]"


def _same_shape(value: str, rng: random.Random) -> str:
    """Random digits for digits and letters for letters, keeping separators: formats stay valid."""
    return "".join(
        str(rng.randint(0, 9))
        if c.isdigit()
        else (rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") if c.isupper() else rng.choice("abcdefghijkmnpqrstuvwxyz"))
        if c.isalpha()
        else c
        for c in value
    )


class Surrogates:
    """Consistent surrogates for one patient. ``secret`` keeps the mapping unguessable from outside."""

    def __init__(self, patient_key: str, secret: str):
        digest = hmac.new(secret.encode(), patient_key.encode(), hashlib.sha256).digest()
        seed = int.from_bytes(digest[:8], "big")
        from faker import Faker

        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.rng = random.Random(seed)
        self.shift = timedelta(days=(seed % 730) - 365 or 1)  # never zero: a shift of 0 would leak the date
        self.memory: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, value: str) -> str:
        key = (kind, value.casefold())
        if key not in self.memory:
            self.memory[key] = self._new(kind, value)
        return self.memory[key]

    def _name_part(self, part: str, first: bool) -> str:
        key = ("NAME_PART", part.casefold())
        if key not in self.memory:
            draw = self.fake.first_name if first else self.fake.last_name
            new = draw()
            # Never the name itself, nor one holding it ("Maria" -> "Mariah"): a reader could not tell
            # a chance draw from a leak.
            while part.casefold().strip(".") in new.casefold() or new.casefold() in part.casefold():
                new = draw()
            self.memory[key] = new.upper() if part.isupper() and len(part) > 1 else new
        return self.memory[key]

    def _new(self, kind: str, value: str) -> str:
        if kind == "NAME":  # word by word, so "Maria Delgado" and a later "Maria" agree
            parts = re.findall(r"[^\s,]+", value)
            new = value
            for i, part in enumerate(parts):
                if len(part.rstrip(".")) <= 1:
                    continue  # initials stay initials
                new = new.replace(part, self._name_part(part, first=i < len(parts) - 1 or len(parts) == 1), 1)
            return new
        if kind == "DATE":
            return self._date(value)
        if kind in ("AGE", "ZIP"):
            return tag(kind, value)
        if kind == "EMAIL":
            return self.fake.email()
        if kind == "URL":
            return self.fake.url()
        if kind == "IP":
            return self.fake.ipv4()
        if kind == "LOCATION":
            return self.fake.street_address() if any(c.isdigit() for c in value) else self.fake.city()
        return _same_shape(value, self.rng)

    def _date(self, value: str) -> str:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
            except ValueError:
                continue
            shifted = parsed + self.shift
            return shifted.strftime(fmt)
        return "[DATE]"  # a form we cannot parse is removed rather than guessed
