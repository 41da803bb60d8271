"""Rule selection, suppressions and the exit status of a run."""

import pytest

from nandoctor.config import Suppression
from nandoctor.diagnosis.findings import Evidence, Finding
from nandoctor.errors import DataLoadError
from nandoctor.gate import ModelResult, code_selected, exit_status, filter_findings


def finding(code, severity="error", layer="dense"):
    return Finding(code=code, rule="rule", kind="overflow", severity=severity, phase="forward", layer=layer,
                   layer_class="Dense", op="Exp", location=None, evidence=Evidence("sentence"),
                   message="message", fix="fix")


class Report:
    def __init__(self, findings):
        self.findings = findings


@pytest.mark.parametrize(
    "code, select, ignore, expected",
    [
        ("ND101", (), (), True),
        ("ND101", ("ND1",), (), True),
        ("ND201", ("ND1",), (), False),
        ("ND101", (), ("ND101",), False),
        ("ND102", ("ND1",), ("ND101",), True),
        ("ND101", ("ND101",), ("ND1",), True),
        ("ND101", ("nd1",), (), True),
        ("ND502", (), ("ND5",), False),
    ],
)
def test_code_selection(code, select, ignore, expected):
    assert code_selected(code, select, ignore) is expected


def test_suppression_needs_matching_layer():
    rules = [Suppression("ND101", "accepted", layer="scales")]
    kept, suppressed = filter_findings([finding("ND101", layer="scales"), finding("ND101", layer="other")],
                                       suppressions=rules)
    assert [f.layer for f in kept] == ["other"]
    assert suppressed[0][1].reason == "accepted"


def test_exit_status_levels():
    clean = ModelResult("a", Report([]))
    warning = ModelResult("b", Report([finding("ND502", "warning")]))
    error = ModelResult("c", Report([finding("ND101")]))
    broken = ModelResult("d", error=DataLoadError("bad file"))
    assert exit_status([clean]) == 0
    assert exit_status([clean, warning]) == 0
    assert exit_status([clean, warning], fail_on="warning") == 1
    assert exit_status([clean, error]) == 1
    assert exit_status([error], fail_on="never") == 0
    assert exit_status([error, broken]) == 3
