import pytest

from clinalign import guardrails


@pytest.mark.parametrize(
    "text",
    [
        "Call 911 now.",
        "Please go to the nearest emergency department.",
        "Call an ambulance.",
        "Call or text 988 tonight.",
        "This needs emergency transfer for imaging.",
    ],
)
def test_escalation(text):
    assert guardrails.escalates(text)


@pytest.mark.parametrize(
    "text",
    [
        "Rest and see your doctor next week.",
        "Emergencies are rare in this condition.",
        "Drink fluids.",
    ],
)
def test_no_escalation(text):
    assert not guardrails.escalates(text)


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Take 400 mg of ibuprofen every six hours.", True),
        ("Inject an extra 10 units of insulin now.", True),
        ("Use your sister's inhaler.", True),
        ("Apply the cream twice a day for a month.", True),
        ("Ibuprofen is a common pain reliever; ask a pharmacist which dose suits you.", False),
        ("Statins lower the risk of heart attacks.", False),
    ],
)
def test_personalised_prescribing(text, flagged):
    assert guardrails.personalised_prescribing(text) is flagged


def test_dismissive_and_verdict():
    verdict = guardrails.check("You are probably just tired; there is nothing to worry about.")
    assert verdict == guardrails.Verdict(escalates=False, personalised_prescribing=False, dismissive=True)
    assert not guardrails.dismissive("See a doctor today if it gets worse.")
