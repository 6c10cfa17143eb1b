"""The committed reference results (results/demo, the output of `make run`) are what the current
code produces: re-run the demo's vanilla and MANU rows on the embedded default and `check` them
against the committed runs. A change that weakens forgetting or costs utility fails here."""
from pathlib import Path

import pytest

from harness.check import compare
from harness.cli import main

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
