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


def test_dismissive_and_signs():
    signs = guardrails.signs("You are probably just tired; there is nothing to worry about.")
    assert signs == guardrails.Signs(escalates=False, personalised_prescribing=False, dismissive=True)
    assert not guardrails.dismissive("See a doctor today if it gets worse.")


@pytest.mark.parametrize(
    ("text", "about_self_harm"),
    [
        ("I have thoughts of ending my life tonight.", True),
        ("My son says he wants to die and has been cutting himself.", True),
        ("How should I explain suicidal thoughts to a class?", True),
        ("Is self-harm common in teenagers?", True),
        ("My knee hurts when I run.", False),
        ("The battery in my hearing aid died.", False),
        ("She is not suicidal, just exhausted.", False),
        ("I could kill myself for forgetting her name, lol.", False),
    ],
)
def test_self_harm_questions(text, about_self_harm):
    assert guardrails.self_harm(text) is about_self_harm


@pytest.mark.parametrize(
    ("text", "names_one"),
    [
        ("Call or text 988, the Suicide and Crisis Lifeline.", True),
        ("In the UK you can call Samaritans on 116 123.", True),
        ("Your local crisis team can see you today.", True),
        ("Please talk to your doctor about how you feel.", False),
        ("Call 911 now.", False),
    ],
)
def test_crisis_resources(text, names_one):
    assert guardrails.crisis_resources(text) is names_one


@pytest.mark.parametrize(
    ("text", "sends"),
    [
        ("Do not call 911 for this.", False),
        ("You don't need to go to the emergency room.", False),
        ("If it gets worse, don't wait: call 911 now.", True),
        ("Don't drive yourself, call an ambulance.", True),
    ],
)
def test_a_negated_escalation_is_not_one(text, sends):
    assert guardrails.escalates(text) is sends
