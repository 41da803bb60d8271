"""Each bundled sample gives the right top finding; the healthy one gives none."""

import inspect

import pytest

from nandoctor.scanner import scan
from tests.conftest import sample


@pytest.mark.parametrize(
    "name, kind, phase, layer, op, function",
    [
        ("exp_overflow", "overflow", "forward", "sharp_exp", "Exp", "sharp_exp"),
        ("division_by_zero", "division_by_zero", "forward", "ratio", "RealDiv", "<lambda>"),
        ("sqrt_gradient", "infinite_gradient", "backward", "root", "Sqrt", "root_magnitude"),
        ("deepiv_mixture", "overflow", "forward", "scales", "Exp", "mixture_scales"),
    ],
)
def test_sample_top_finding(tf, name, kind, phase, layer, op, function):
    report = scan(sample(name), sample(name, ".npz"), trust_code=True)
    top = report.findings[0]
    assert top.kind == kind
    assert top.phase == phase
    assert top.layer == layer
    assert top.op == op
    assert top.location is not None
    assert top.location.function == function
    assert top.fix


def test_sample_findings_are_origins_only(tf):
    report = scan(sample("division_by_zero"), sample("division_by_zero", ".npz"), trust_code=True)
    assert [f.layer for f in report.findings] == ["ratio"]
    assert report.findings[0].propagated_to == ("merge", "head")


def test_division_evidence_names_samples(tf):
    report = scan(sample("division_by_zero"), sample("division_by_zero", ".npz"), trust_code=True)
    evidence = report.findings[0].evidence
    assert evidence.samples_affected == 4
    assert evidence.first_sample_indices[:4] == (17, 40, 41, 99)


def test_exp_evidence_states_threshold(tf):
    report = scan(sample("exp_overflow"), sample("exp_overflow", ".npz"))
    evidence = report.findings[0].evidence
    assert evidence.details["threshold"] == pytest.approx(88.72, abs=0.01)
    assert evidence.input_max > 88.72
    assert "88.72" in evidence.sentence


def test_sqrt_location_line(tf):
    import nandoctor.sample_functions as functions

    report = scan(sample("sqrt_gradient"), sample("sqrt_gradient", ".npz"))
    location = report.findings[0].location
    source, first_line = inspect.getsourcelines(functions.root_magnitude)
    sqrt_line = first_line + next(i for i, text in enumerate(source) if "ops.sqrt" in text)
    assert location.file == functions.__file__
    assert location.line == sqrt_line


def test_healthy_sample_is_clean(tf):
    report = scan(sample("healthy"), sample("healthy", ".npz"))
    assert report.findings == []
    assert all(row.output_nonfinite == 0 for row in report.layers)


def test_healthy_sample_clean_without_data(tf):
    report = scan(sample("healthy"))
    assert report.findings == []
    assert report.data["format"] == "random"
    assert any("standard normal" in note for note in report.notes)
