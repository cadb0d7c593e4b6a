"""Synthetic clinical notes with every PHI span annotated: gold for tests and for the benchmark.

Templates written for clinalign are filled with Faker surrogates; each filled slot's offsets are
recorded, so the gold is exact by construction. Hard cases are deliberate: names that are also
words (Grace, Will, Hope), dates in a dozen formats, identifiers after a line break, ages over 89.

    clinalign deidentify synth --n 500 --out gold.jsonl
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

# Slot -> the PHI type it carries (as the detector names it).
SLOT_TYPES = {
    "NAME": "NAME",
    "FIRST": "NAME",
    "LAST": "NAME",
    "WORDNAME": "NAME",
    "DATE": "DATE",
    "AGE": "AGE",
    "PHONE": "PHONE",
    "FAX": "FAX",
    "EMAIL": "EMAIL",
    "SSN": "SSN",
    "MRN": "MRN",
    "PLAN": "HEALTH_PLAN",
    "ACCOUNT": "ACCOUNT",
    "LICENSE": "LICENSE",
    "VIN": "VEHICLE",
    "PLATE": "VEHICLE",
    "DEVICE": "DEVICE",
    "URL": "URL",
    "IP": "IP",
    "STREET": "LOCATION",
    "CITY": "LOCATION",
    "ZIP": "ZIP",
    "HOSPITAL": "LOCATION",
    "BIOMETRIC": "BIOMETRIC",
}

TEMPLATES = [
    "Patient {NAME} (MRN {MRN}) was seen on {DATE} for chest pain radiating to the left arm. ECG showed ST "
    "elevation; aspirin 325 mg given and cardiology consulted.",
    "Re: {NAME}, DOB {DATE}. Referred by Dr. {LAST} for evaluation of type 2 diabetes. HbA1c 8.2%. Plan: start "
    "metformin 500 mg twice daily and recheck in three months.",
    "{FIRST} {LAST} is a {AGE}-year-old woman admitted on {DATE} with community-acquired pneumonia. Lives alone at "
    "{STREET}, {CITY}, MA {ZIP}. Daughter {FIRST} can be reached at {PHONE}.",
    "Discharge summary for {NAME}. Admitted {DATE}, discharged {DATE}. Follow up with Dr. {LAST} at the {CITY} clinic. "
    "Questions: call {PHONE} or fax {FAX}.",
    "Mr. {LAST} reports worsening shortness of breath. Pacemaker serial number {DEVICE} interrogated today, "
    "normal function. Next check {DATE}.",
    "Insurance: member ID {PLAN}. Billing account {ACCOUNT}. Patient {NAME}, SSN {SSN}.",
    "Nursing note: {WORDNAME} {LAST} ambulated twice with assistance. Son called from {PHONE} asking about "
    "discharge on {DATE}.",
    "Telehealth visit with {NAME} from IP {IP}. Patient portal: {URL}. Email follow-up to {EMAIL}.",
    "Accident report: patient {NAME} was the driver of vehicle VIN {VIN}, plate {PLATE}. Seen at {HOSPITAL} on {DATE}.",
    "MRN:\n{MRN}\nName: {NAME}\nDate of service: {DATE}\nChief complaint: headache for three days, no fever.",
    "Ms. {LAST}, aged {AGE}, presents with confusion. Lives at {STREET} with her husband {FIRST}. Contact {EMAIL}.",
    "Prescriber licence number {LICENSE}. Prescription for amoxicillin 500 mg three times daily for seven days, "
    "patient {NAME}.",
    "Biometric enrolment: fingerprint ID {BIOMETRIC} recorded for {NAME} at {HOSPITAL}.",
    "{WORDNAME} {LAST} was seen by Dr. {LAST} on {DATE}. Parkinson's disease, stable on levodopa. Bell palsy "
    "resolved. Next visit {DATE}.",
    "Call from {NAME} ({PHONE}) on {DATE}: new rash after starting lamotrigine. Advised to stop and attend the "
    "emergency department today.",
    "Patient is a {AGE} yo man from {CITY}, {CITY_STATE} transferred from {HOSPITAL}. Wife {FIRST} at bedside.",
    "Lab results for {NAME} (chart number {MRN}) collected {DATE}: potassium 5.9 mmol/L, creatinine 2.1 mg/dL. "
    "Nephrology notified.",
    "Home visit at {STREET}, {CITY}, TX {ZIP}. {NAME} reports falls. Medicare beneficiary number {PLAN}.",
]

_DATE_FORMATS = [
    "%m/%d/%Y",
    "%Y-%m-%d",
    "%B %d, %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%m/%d/%y",
    "%d.%m.%Y",
    "%B %d",
    "%b. %d",
    "%d %b %Y",
    "%-m/%-d/%Y",
    "%B %Y",
]
_WORD_NAMES = ["Grace", "Hope", "Will", "Faith", "Joy", "Rose", "Bill", "Mark", "April", "June", "Dawn", "Summer"]
_STATES = ["MA", "NY", "CA", "TX", "OH", "WA", "FL"]
_SLOT = re.compile(r"\{([A-Z_]+)\}")


def _value(slot: str, fake, rng: random.Random) -> str:
    if slot == "NAME":
        return fake.name_female() if rng.random() < 0.5 else fake.name_male()
    if slot == "FIRST":
        return fake.first_name()
    if slot == "LAST":
        return fake.last_name()
    if slot == "WORDNAME":
        return rng.choice(_WORD_NAMES)
    if slot == "DATE":
        return fake.date_between("-80y", "+1y").strftime(rng.choice(_DATE_FORMATS))
    if slot == "AGE":
        return str(rng.randint(90, 104))
    if slot in ("PHONE", "FAX"):
        return fake.numerify(rng.choice(["(###) ###-####", "###-###-####", "###.###.####", "+1 ### ### ####"]))
    if slot == "CITY_STATE":
        return rng.choice(_STATES)
    values = {
        "EMAIL": fake.email,
        "SSN": fake.ssn,
        "MRN": lambda: fake.numerify("########"),
        "PLAN": lambda: fake.bothify("???#########").upper(),
        "ACCOUNT": lambda: fake.numerify("##########"),
        "LICENSE": lambda: fake.bothify("??#######").upper(),
        "VIN": fake.vin,
        "PLATE": fake.license_plate,
        "DEVICE": lambda: fake.bothify("SN-#####-??").upper(),
        "URL": lambda: fake.url() + fake.uri_path(),
        "IP": fake.ipv4,
        "STREET": fake.street_address,
        "CITY": fake.city,
        "ZIP": fake.zipcode,
        "HOSPITAL": lambda: f"{fake.last_name()} Memorial Hospital",
        "BIOMETRIC": lambda: fake.bothify("FP-########"),
    }
    return values[slot]()


def note(template: str, fake, rng: random.Random) -> dict:
    """Fill one template; return ``{"text", "spans"}`` with exact offsets."""
    parts, spans, position = [], [], 0
    cursor = 0
    for match in _SLOT.finditer(template):
        literal = template[cursor : match.start()]
        parts.append(literal)
        position += len(literal)
        slot = match.group(1)
        value = _value(slot, fake, rng)
        parts.append(value)
        if slot in SLOT_TYPES:  # CITY_STATE is a state: not PHI
            spans.append({"start": position, "end": position + len(value), "type": SLOT_TYPES[slot]})
        position += len(value)
        cursor = match.end()
    parts.append(template[cursor:])
    text = "".join(parts)
    merged: list[dict] = []
    for span in spans:  # "{FIRST} {LAST}" is one person: one span, as an annotator would mark it
        if merged and span["type"] == merged[-1]["type"] == "NAME" and text[merged[-1]["end"] : span["start"]] == " ":
            merged[-1]["end"] = span["end"]
        else:
            merged.append(span)
    return {"text": text, "spans": merged}


def generate(n: int, seed: int = 0, locale: str = "en_US") -> list[dict]:
    from faker import Faker

    fake = Faker(locale)
    fake.seed_instance(seed)
    rng = random.Random(seed)
    return [note(TEMPLATES[i % len(TEMPLATES)], fake, rng) for i in range(n)]


def write(path: Path, n: int, seed: int = 0) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for doc in generate(n, seed):
            handle.write(json.dumps(doc) + "\n")
    return n
