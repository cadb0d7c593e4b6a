"""PHI detection: every Safe Harbor type, the hard cases, and clinical words left alone."""

import pytest

from clinalign import phi


def found(text: str) -> dict[str, str]:
    return {text[s.start : s.end]: s.type for s in phi.find(text)}


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("Hi, this is Maria Delgado, date of birth 03/14/1962.", "Maria Delgado", "NAME"),
        ("Re: Tom O'Neil, MRN 48213377, seen today.", "Tom O'Neil", "NAME"),
        ("Referred by Dr. Okafor for follow-up.", "Okafor", "NAME"),
        ("Seen with her husband Kwame Mensah today.", "Kwame Mensah", "NAME"),
        ("JALONNET Christine (Interne) was on call.", "JALONNET Christine", "NAME"),
        ("Seen by J. R. Tolkien on the ward.", "J. R. Tolkien", "NAME"),
        ("RE: JOHN SMITH, MRN 12345678.", "JOHN SMITH", "NAME"),
        ("Discharged with her daughter Grace.", "Grace", "NAME"),  # a name that is also a word
        ("Then Hope Brown signed the consent.", "Hope Brown", "NAME"),
        ("Lives at 12 Oak Street, Apt 4, Boston, MA 02118.", "12 Oak Street, Apt 4", "LOCATION"),
        ("Lives at 12 Oak Street, Apt 4, Boston, MA 02118.", "Boston", "LOCATION"),
        ("Lives at 12 Oak Street, Apt 4, Boston, MA 02118.", "02118", "ZIP"),
        ("Transferred from Mercy General Hospital overnight.", "Mercy General Hospital", "LOCATION"),
        ("Deliver to Apt. 342 by noon.", "Apt. 342", "LOCATION"),
        ("Seen on June 23, 2026 at the clinic.", "June 23, 2026", "DATE"),
        ("Admitted 2024-03-05 14:20 via the ED.", "2024-03-05 14:20", "DATE"),
        ("Next visit 23 June 2026.", "23 June 2026", "DATE"),
        ("DOB: 03/14/1962.", "03/14/1962", "DATE"),
        ("Seen on 3/14 for review.", "3/14", "DATE"),
        ("Started in March 2019.", "March 2019", "DATE"),
        ("A 93-year-old woman fell.", "93", "AGE"),
        ("Aged 101, lives alone.", "101", "AGE"),
        ("Call (818) 662-0116 tonight.", "(818) 662-0116", "PHONE"),
        ("Call me on (007) 782-7584.", "(007) 782-7584", "PHONE"),
        ("Fax: 617-555-0199.", "617-555-0199", "FAX"),
        ("Write to jane.roe@example.org today.", "jane.roe@example.org", "EMAIL"),
        ("SSN 219-09-9999 on file.", "219-09-9999", "SSN"),
        ("MRN:\n48213377\nName withheld.", "48213377", "MRN"),  # the value after a line break
        ("Member ID ZX123456789 is active.", "ZX123456789", "HEALTH_PLAN"),
        ("Billing account 0620856156 settled.", "0620856156", "ACCOUNT"),
        ("Card 4111 1111 1111 1111 declined.", "4111 1111 1111 1111", "ACCOUNT"),
        ("DEA number AB1234563 on the script.", "AB1234563", "LICENSE"),
        ("VIN 1HGCM82633A004352 was involved.", "1HGCM82633A004352", "VEHICLE"),
        ("Licence plate 7ABC 123 recorded.", "7ABC 123", "VEHICLE"),
        ("Pacemaker serial no. SN-88123-X checked.", "SN-88123-X", "DEVICE"),
        ("See https://portal.example.org/p/123 for results.", "https://portal.example.org/p/123", "URL"),
        ("Logged in from 192.168.10.24 yesterday.", "192.168.10.24", "IP"),
        ("Fingerprint ID FP-00918273 enrolled.", "FP-00918273", "BIOMETRIC"),
        ("Reference 7730918264 attached.", "7730918264", "ID"),  # any other unique number
    ],
)
def test_each_safe_harbor_type_is_found(text, value, kind):
    assert found(text).get(value) == kind, found(text)


@pytest.mark.parametrize(
    "text",
    [
        "Call 911 now: chest pain with sweating can be a heart attack.",
        "Patient has Parkinson's disease and Bell palsy; Graves disease is in remission.",
        "Blood pressure 182/112, heart rate 72, glucose 25 mmol/L, aspirin 325 mg.",
        "Hay fever can usually be managed with a steroid nasal spray.",
        "Kidney infections usually respond well to antibiotics.",
        "Born in 1950; the year alone is allowed under Safe Harbor.",
        "A 67-year-old asks about the flu vaccine.",  # ages up to 89 are not identifiers
        "ECG and CT head normal. Plan: review in the clinic in three months.",
    ],
)
def test_clinical_text_is_left_alone(text):
    assert phi.find(text) == [], found(text)


def test_all_capitals_text_still_finds_names_but_not_words():
    text = "RE: JOHN SMITH, MRN 12345678, SEEN AT THE JOANPORT CLINIC. I RUN A PATIENT EDUCATION CLASS."
    spans = found(text)
    assert spans.get("JOHN SMITH") == "NAME" and "EDUCATION" not in spans and "PATIENT" not in spans


def test_spans_are_sorted_and_disjoint_and_the_limit_is_enforced():
    spans = phi.find("Re: Maria Delgado, MRN 48213377, seen June 23, 2026, phone (818) 662-0116.")
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:], strict=False))
    with pytest.raises(ValueError, match="limit"):
        phi.find("x" * (phi.MAX_CHARS + 1))


def test_scrub_tags_residual_phi_and_leaves_clean_text_unchanged():
    assert phi.scrub("Call 911 now.") == ("Call 911 now.", 0)
    text, hits = phi.scrub("Ask Dr. Okafor on (818) 662-0116.")
    assert text == "Ask Dr. [NAME] on [PHONE]." and hits == 2
