"""The committed reference results (results/demo, the output of `make run`) are what the current
code produces: re-run the demo's vanilla and MANU rows on the embedded default and `check` them
against the committed runs. A change that weakens forgetting or costs utility fails here."""

from pathlib import Path

import pytest

from mmunlearn.harness.app.check import compare
from mmunlearn.harness.app.cli import main

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "demo" / "runs"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vanilla", "manu"])
def test_demo_row_matches_committed_reference(method, tmp_path):
    baseline = REFERENCE / method
    assert (baseline / "results.json").exists(), f"no committed reference at {baseline}: run `make run`"
    assert main(["demo", "--methods", method, "--out", str(tmp_path), "--quiet"]) == 0
    report = compare(tmp_path / "runs" / method, baseline, tolerance=0.02)
    assert report.compared > 0
    assert not report.failed, report.render()


def test_committed_demo_shows_the_three_claims_of_the_paper_on_cloze():
    """README "Reference results": the committed demo shows the MANU paper's three claims,
    measured on cloze accuracy (`python scripts/demo_claims.py results/demo --task cloze`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_claims", REFERENCE.parents[2] / "scripts" / "demo_claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    results = claims.claims(claims.load(REFERENCE.parent), "cloze", "accuracy")
    assert [ok for _, ok, _ in results] == [True, True, True], results
