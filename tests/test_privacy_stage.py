"""The privacy stage end to end on a tiny random LLaVA and the small mini-bench: what lands in
results.json, samples.jsonl, the leaderboard and `check`, recomputed from the samples."""

from __future__ import annotations

import json
import shutil

import pytest

from mmunlearn.harness.app.check import Gate, gate_only
from mmunlearn.harness.app.leaderboard import build_leaderboard
from mmunlearn.harness.app.runner import RunConfig, run_benchmark
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.privacy import MIA_SCORES, auc
from mmunlearn.harness.core.records import MODES
from mmunlearn.stages.privacy import NO_HOLDOUT, NO_REFERENCE


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_bench):
    from tests.tiny_vlms import make_tiny_vlm

    root = tmp_path_factory.mktemp("privacy")
    return {"model": str(make_tiny_vlm("llava", root / "tiny")), "bench": str(small_bench)}


def config(world, **kw):
    base = dict(
        model=world["model"],
        bench=world["bench"],
        forget=15,
        sets=("forget",),
        tasks=("cloze",),
        limit=4,
        shots=0,
        max_new_tokens=4,
        judge=None,
        batch_size=4,
        reference_model=world["model"],  # the model itself: privleak 0, forget quality 1, by definition
    )
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("privacy-run") / "run"
    return out, run_benchmark(config(world), out, progress=False)


def _samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_auc_per_score_and_mode_equals_a_recomputation_from_samples(run):
    out, results = run
    samples = _samples(out / "samples.jsonl")
    for mode in MODES:
        members = [s for s in samples if s["task"] == "membership" and s["set"] == "forget" and s["mode"] == mode]
        nonmembers = [s for s in samples if s["task"] == "membership" and s["set"] == "holdout" and s["mode"] == mode]
        assert len(members) == len(nonmembers) == 4  # --limit applies to both
        for score in MIA_SCORES:
            cell = results["metrics"]["forget"][score][mode]
            expected = auc([s["scores"][score] for s in members], [s["scores"][score] for s in nonmembers])
            assert cell["auc"] == pytest.approx(expected)
            assert cell["members_scored"] == cell["nonmembers_scored"] == 4


def test_against_itself_as_reference_privleak_is_zero_and_forget_quality_one(run):
    out, results = run
    forget = results["metrics"]["forget"]
    for mode in MODES:
        for score in MIA_SCORES:
            assert forget[score][mode]["privleak_against"] == "reference"
            assert forget[score][mode]["reference_auc"] == pytest.approx(forget[score][mode]["auc"])
            assert forget[score][mode]["privleak"] == pytest.approx(0.0, abs=1e-9)
        assert forget["forget_quality"][mode]["ks_p"] == pytest.approx(1.0)
        assert forget["forget_quality"][mode]["ks_stat"] == pytest.approx(0.0)
    assert (out / "reference" / "samples.jsonl").exists()
    record = results["manifest"]["stages"]["privacy"]
    assert record["holdout"]["fingerprint"] and record["reference_model"]["weights_hash"]


def test_a_finished_run_rerun_is_up_to_date(world, run):
    out, results = run
    again = run_benchmark(config(world), out, progress=False)
    assert again["metrics"] == results["metrics"]


def test_without_holdout_or_reference_the_figures_say_not_available(world, tmp_path):
    results = run_benchmark(config(world, holdout=None, reference_model=None), tmp_path / "run", progress=False)
    forget = results["metrics"]["forget"]
    for mode in MODES:
        assert forget["mia_loss"][mode] == {"auc": None, "privleak": None, "note": NO_HOLDOUT}
        assert forget["forget_quality"][mode] == {"ks_p": None, "ks_stat": None, "note": NO_REFERENCE}
    report = gate_only(tmp_path / "run", [Gate.parse("max", "forget.mia_loss.image_text.auc=0.6")])
    assert report.failed and NO_HOLDOUT in report.render()  # "not available" never passes a gate


def test_without_reference_privleak_is_against_one_half(world, tmp_path):
    results = run_benchmark(config(world, reference_model=None), tmp_path / "run", progress=False)
    cell = results["metrics"]["forget"]["mia_mink"]["text_only"]
    assert cell["privleak_against"] == "0.5"
    assert cell["privleak"] == pytest.approx(((1 - cell["auc"]) - 0.5) / 0.5 * 100)


def test_a_holdout_profile_that_is_a_benchmark_profile_is_refused(world, tmp_path):
    holdout = tmp_path / "holdout"
    shutil.copytree(f"{world['bench']}/forget_15", holdout)  # members passed off as non-members
    with pytest.raises(BenchmarkError, match="is benchmark profile"):
        run_benchmark(config(world, holdout=str(holdout)), tmp_path / "run", progress=False)


def test_gates_and_the_leaderboard_read_the_privacy_figures(run, tmp_path):
    out, results = run
    a = results["metrics"]["forget"]["mia_mink"]["image_text"]["auc"]
    assert not gate_only(out, [Gate.parse("max", f"forget.mia_mink.image_text.auc={a + 0.01}")]).failed
    failed = gate_only(out, [Gate.parse("max", f"forget.mia_mink.image_text.auc={a - 0.01}")])
    assert failed.failed and "above the gate" in failed.render()
    files = build_leaderboard([out], tmp_path / "board")
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## Privacy" in md and "mia_mink auc (img+txt)" in md and "forget_quality ks_p (txt)" in md
    assert "privacy.png" in files
    csv = (tmp_path / "board" / "leaderboard.csv").read_text().splitlines()[0]
    assert "forget/mia_loss/auc/image_text" in csv


@pytest.mark.parametrize("bad", ["forget.mia_mink.auc=0.6", "forget.mia_mink.image_text.auc", "a.b.c.d=x"])
def test_a_malformed_gate_says_what_is_expected(bad):
    from mmunlearn.harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--max"):
        Gate.parse("max", bad)
