import re
import shutil

import pytest
import yaml

from clinalign import guardrails
from clinalign.schemas import ClinalignError


def copy(tmp_path, change=None):
    path = tmp_path / "policy.yaml"
    shutil.copy(guardrails.DEFAULT, path)
    if change is not None:
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_policy_id_names_version_and_content(tmp_path):
    shipped = guardrails.load()
    assert shipped.id.startswith("clinalign-default@1:")
    edited = guardrails.load(copy(tmp_path, lambda d: d["texts"].update(refusal="No.")))
    assert edited.id != shipped.id and edited.version == shipped.version


def test_a_policy_of_ones_own_adds_a_red_flag(tmp_path):
    def add(data):
        data["red_flags"]["heat_stroke"] = {
            "label": "heat stroke",
            "disposition": "emergency",
            "source": "CDC heat-related illness",
            "patterns": [r"\bstopped sweating\b[^.?!\n]{0,60}\bconfus\w*"],
        }

    policy = guardrails.load(copy(tmp_path, add))
    verdict = guardrails.check_input("After the marathon he stopped sweating and is confused", policy=policy)
    assert verdict.escalate and verdict.policy == policy.id
    assert not guardrails.check_input("After the marathon he stopped sweating and is confused").escalate


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda d: d["red_flags"]["acs"].update(disposition="soon"), "red_flags.acs.disposition"),
        (
            lambda d: d["red_flags"]["acs"]["patterns"].append("(unclosed"),
            r"red_flags\.acs\.patterns\.\d+: not a valid",
        ),
        (lambda d: d["scope"]["patient"].update(off_label="shrug"), "scope.patient.off_label"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_file_and_field(tmp_path, change, message):
    path = copy(tmp_path, change)
    with pytest.raises(ClinalignError, match=str(path)) as err:
        guardrails.load(path)
    assert re.search(message, str(err.value))


def test_unreadable_and_non_yaml_policies_are_refused(tmp_path):
    with pytest.raises(ClinalignError, match="cannot read"):
        guardrails.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("red_flags: [unclosed\n")
    with pytest.raises(ClinalignError, match="not valid YAML"):
        guardrails.load(bad)
