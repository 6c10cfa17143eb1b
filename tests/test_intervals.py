"""results.json "intervals": a profile-bootstrap interval beside every figure, from the per-question
records (harness.core.uncertainty, the stages' `intervals` hooks). Fast tests on the runner's fakes
and synthetic records; one tiny-model run with every stage for the stage figures."""

from __future__ import annotations

import json
import statistics as pystats

import pytest

from mmunlearn.harness.core.contracts import SampleResult
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import is_count_metric, iter_metrics, load_results, interval_of, write_results
from mmunlearn.harness.core.stages import StageOutput
from mmunlearn.harness.core.statistics import (
    privleak_interval,
    profile_bootstrap_mean,
    recovery_bootstrap,
    stratified_auc_bootstrap,
)
from mmunlearn.harness.core.uncertainty import (
    Bootstrap,
    cell_intervals,
    max_of_means_interval,
    mean_intervals,
    no_interval,
    verify,
)
from tests.test_runner import FakeTask, cfg, fakes  # noqa: F401 - fakes is a fixture

# Numeric figures that have an entry without an interval (se/lo/hi None), by design.
NO_INTERVAL = {"ks_p", "ks_stat", "first_collapse_step", "collapsed"}


def _numbers(results):
    for s, k, m, metric, v in iter_metrics(results["metrics"]):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield s, k, m, metric, v


def _check_every_figure(results, without=()):
    """Every numeric, non-count figure has an entry whose value is the figure; a bootstrapped one
    has lo <= value <= hi, one without says why; nothing else is in "intervals"."""
    seen = 0
    for s, k, m, metric, v in _numbers(results):
        iv = interval_of(results, s, k, m, metric)
        if metric in without:
            assert iv is None, (s, k, m, metric)
            continue
        assert iv is not None, (s, k, m, metric)
        assert iv["value"] == pytest.approx(v, abs=1e-9), (s, k, m, metric)
        if metric in NO_INTERVAL:
            assert iv["se"] is None and iv["lo"] is None and iv["hi"] is None and iv["resamples"] == 0
            assert "no interval" in iv["method"]
        else:
            assert iv["lo"] <= iv["value"] <= iv["hi"], (s, k, m, metric, iv)
            assert iv["se"] >= 0 and iv["n_clusters"] >= 1
            assert iv["resamples"] == results["manifest"]["intervals"]["resamples"]
        seen += 1
    for s, keys in results["intervals"].items():  # no entry without a figure, no count, no None
        for k, modes in keys.items():
            for m, entries in modes.items():
                for metric in entries:
                    figure = results["metrics"][s][k][m][metric]
                    assert figure is not None and not is_count_metric(metric), (s, k, m, metric)
    return seen


# ---------------------------------------------------------------- the runner, on fakes
def test_every_figure_of_a_run_has_its_interval_and_the_manifest_says_how(fakes, tmp_path):  # noqa: F811
    res = run(tmp_path / "r")
    assert _check_every_figure(res) == 4 * 2 * 2  # sets x tasks x modes, one accuracy each
    assert res["manifest"]["intervals"] == {
        "resamples": 1000,
        "seed": 0,
        "level": 0.95,
        "interval": "expanded",
        "unit": "profile",
        "dropped": [],
    }
    assert "intervals" in res["manifest"]["wall_time_s"]
    assert list(json.loads((tmp_path / "r" / "results.json").read_text())) == [
        "schema_version",
        "metrics",
        "modality_gap",
        "intervals",
        "manifest",
    ]


def test_the_interval_is_the_profile_bootstrap_of_the_cells_stored_answers(fakes, tmp_path):  # noqa: F811
    res = run(tmp_path / "r", seed=7, bootstrap=200)
    samples = [json.loads(line) for line in (tmp_path / "r" / "samples.jsonl").read_text().splitlines()]
    cell = [s for s in samples if (s["set"], s["task"], s["mode"]) == ("retain", "cloze", "text_only")]
    expected = profile_bootstrap_mean(
        [s["scores"]["accuracy"] for s in cell], [s["profile_id"] for s in cell], resamples=200, seed=7
    ).to_dict()
    got = res["intervals"]["retain"]["cloze"]["text_only"]["accuracy"]
    assert got == pytest.approx(expected, abs=1e-12)
    assert res["manifest"]["intervals"]["seed"] == 7 and res["manifest"]["intervals"]["resamples"] == 200


def test_same_seed_same_intervals_and_a_finished_run_rerun_is_left_alone(fakes, tmp_path):  # noqa: F811
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a["intervals"] == b["intervals"]
    before = (tmp_path / "a" / "results.json").read_bytes()
    run(tmp_path / "a")
    assert (tmp_path / "a" / "results.json").read_bytes() == before
    # another B is not another run: the same samples, the intervals rewritten
    again = run(tmp_path / "a", bootstrap=50)
    assert again["metrics"] == a["metrics"] and again["manifest"]["intervals"]["resamples"] == 50
    assert (tmp_path / "a" / "results.json").read_bytes() != before


def test_a_results_file_from_before_intervals_loads_and_a_rerun_adds_them(fakes, tmp_path):  # noqa: F811
    first = run(tmp_path / "r")
    path = tmp_path / "r" / "results.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "intervals"}
    old["manifest"].pop("intervals")
    path.write_text(json.dumps(old))
    loaded = load_results(path)
    assert "intervals" not in loaded and interval_of(loaded, "forget", "cloze", "text_only", "accuracy") is None
    again = run(tmp_path / "r")
    assert again["intervals"] == first["intervals"] and again["metrics"] == first["metrics"]
    write_results(tmp_path / "w", first["metrics"], {"seed": 0})  # a writer that gives none: no key
    assert "intervals" not in json.loads((tmp_path / "w" / "results.json").read_text())


def test_bootstrap_zero_writes_no_intervals_and_one_is_refused(fakes, tmp_path):  # noqa: F811
    res = run(tmp_path / "r", bootstrap=0)
    assert "intervals" not in res and res["manifest"]["intervals"] is None
    with pytest.raises(ConfigError, match="--bootstrap"):
        run(tmp_path / "s", bootstrap=1)


class MedianTask(FakeTask):
    """A task whose figure is not the mean of its per-question score: it must get no interval."""

    def aggregate(self, samples):
        out = super().aggregate(samples)
        out["accuracy"] = pystats.median(s.scores["accuracy"] for s in samples) + 0.25
        return out


def test_a_figure_that_is_not_the_mean_of_its_scores_gets_no_interval(fakes, tmp_path, monkeypatch):  # noqa: F811
    from mmunlearn.harness.app import runner

    monkeypatch.setattr(runner, "get_task", MedianTask)
    res = run(tmp_path / "r", sets=("forget",))
    assert _check_every_figure(res, without={"accuracy"}) == 0
    assert sorted(res["manifest"]["intervals"]["dropped"]) == sorted(
        f"forget/{t}/{m}/accuracy" for t in ("classification", "cloze") for m in MODES
    )


def run(out, **kw):
    from mmunlearn.harness.app.runner import run_benchmark

    return run_benchmark(cfg(**kw), out, progress=False)


# ---------------------------------------------------------------- the pieces
def _sample(qid, profile, scores, **extra):
    return SampleResult(qid, "forget", "t", "text_only", profile, "h", "r", scores, extra).to_dict()


def test_a_cells_metrics_are_bootstrapped_together_as_each_alone():
    profiles = [f"p{i % 6}" for i in range(30)]
    a = [float(i % 2) for i in range(30)]
    b = [i / 30 for i in range(30)]
    c = [None if i % 4 == 0 else float(i % 3 == 0) for i in range(30)]  # scored on some questions only
    boot = Bootstrap(resamples=300, seed=3)
    got = mean_intervals({"a": a, "b": b, "c": c}, profiles, boot)
    for name, values in (("a", a), ("b", b), ("c", c)):
        alone = profile_bootstrap_mean(values, profiles, resamples=300, seed=3)
        assert got[name].to_dict() == pytest.approx(alone.to_dict(), abs=1e-12)
    flat = mean_intervals({"d": [0.5] * 30}, profiles, boot)["d"]  # identical answers: no rounding noise
    assert (flat.value, flat.se, flat.lo, flat.hi) == (0.5, 0.0, 0.5, 0.5)


def test_excluded_examples_and_counts_are_left_out_of_a_cell():
    records = [_sample(f"q{i}", f"p{i % 3}", {"acc": float(i % 2)}) for i in range(9)]
    records.append(_sample("shot", "p9", {"acc": 1.0}, excluded=True))
    out = cell_intervals(records, {"acc": 4 / 9, "n": 9, "acc_scored": 9, "other": None}, Bootstrap(resamples=50))
    assert set(out) == {"acc"}
    assert out["acc"]["value"] == pytest.approx(4 / 9) and out["acc"]["n_clusters"] == 3


def test_verify_keeps_only_intervals_that_are_their_figures():
    iv = profile_bootstrap_mean([0.0, 1.0, 1.0], ["a", "b", "c"], resamples=50).to_dict()
    intervals = {
        "forget": {
            "t": {
                "text_only": {
                    "acc": iv,  # its figure
                    "wrong": iv,  # another figure
                    "none": iv,  # the figure is None: never a number
                    "n": iv,  # a count
                    "missing": {**iv, "value": None},  # nothing on either side: quietly nothing
                    "ks_p": no_interval(0.3, "KS test p-value: already a test, no interval"),
                }
            }
        }
    }
    metrics = {
        "forget": {"t": {"text_only": {"acc": 2 / 3, "wrong": 0.5, "none": None, "n": 3, "missing": None, "ks_p": 0.3}}}
    }
    kept, dropped = verify(intervals, metrics)
    assert set(kept["forget"]["t"]["text_only"]) == {"acc", "ks_p"}
    assert kept["forget"]["t"]["text_only"]["acc"]["value"] == 2 / 3
    assert sorted(dropped) == ["forget/t/text_only/n", "forget/t/text_only/none", "forget/t/text_only/wrong"]


def test_the_worst_kinds_share_is_recomputed_in_every_resample():
    gen = ([1.0, 1.0, 0.0, 0.0], ["a", "a", "b", "c"])
    mc = ([0.0, 1.0, 0.0], ["a", "b", "d"])
    boot = Bootstrap(resamples=400, seed=1)
    iv = max_of_means_interval({"generation": gen, "classification": mc}, boot, "worst share")
    assert iv.value == pytest.approx(0.5) and iv.n_clusters == 4 and iv.lo <= iv.value <= iv.hi
    one = max_of_means_interval({"generation": gen}, boot, "worst share")
    alone = profile_bootstrap_mean(*gen, resamples=400, seed=1)
    assert (one.value, one.se, one.lo, one.hi) == pytest.approx((alone.value, alone.se, alone.lo, alone.hi))
    assert max_of_means_interval({"generation": ([], [])}, boot, "worst share").value is None


def test_relearn_intervals_resample_the_three_models_answers_together():
    """The relearn hook on synthetic answers: means and recoveries equal the stage's own figures,
    recovery is recovery_bootstrap over the aligned answers (trained-on questions: their K-1
    attacks' mean)."""
    from mmunlearn.stages.relearn import RelearnStage

    def answers(scores, suffix=""):
        return {
            f"forget/p{i % 4}/cloze/{m}/{i}": SampleResult(
                f"forget/p{i % 4}/cloze/{m}/{i}", "forget", "cloze", m, f"p{i % 4}", "h", "r", {"accuracy": v}
            )
            for i, v in enumerate(scores)
        }

    m = "text_only"
    orig = [1.0] * 12
    unl = [0.0, 0.0, 1.0] * 4
    rel = [float(i % 2) for i in range(12)]
    trained_a = [float(i % 3 == 0) for i in range(12)]
    trained_b = [1.0] * 12
    attacks = {}
    for r in MODES:
        attacks[f"attack-{r}"] = {
            "held_out": {("cloze", mm): answers(rel) for mm in MODES},
            "trained": {("cloze", mm): [*answers(trained_a).values(), *answers(trained_b).values()] for mm in MODES},
        }
        attacks[f"control-{r}"] = {"held_out": {("cloze", mm): answers(unl) for mm in MODES}, "trained": {}}
    unlearned = {("cloze", mm): answers(unl) for mm in MODES}
    original = {("cloze", mm): answers(orig) for mm in MODES}
    evidence = (["cloze"], unlearned, original, attacks)
    stage = RelearnStage()
    out = StageOutput(stage._metrics(*evidence, None), {}, evidence)
    boot = Bootstrap(resamples=300, seed=2)
    found, dropped = verify(stage.intervals(None, out, boot), out.metrics)
    assert dropped == []
    cell, ivs = out.metrics["forget"]["relearn_cloze"][m], found["forget"]["relearn_cloze"][m]
    numeric = {k for k, v in cell.items() if isinstance(v, float) and not is_count_metric(k)}
    assert numeric == set(ivs)
    profiles = [f"p{i % 4}" for i in range(12)]
    r = MODES[0]
    assert ivs[f"recovery_from_{r}"] == pytest.approx(
        {
            **recovery_bootstrap(orig, unl, rel, profiles, resamples=300, seed=2).to_dict(),
            "value": cell[f"recovery_from_{r}"],
        }
    )
    pooled = [(a + b) / 2 for a, b in zip(trained_a, trained_b)]
    expected = recovery_bootstrap(orig, unl, pooled, profiles, resamples=300, seed=2)
    assert expected.value == pytest.approx(cell[f"trained_recovery_from_{r}"])
    assert ivs[f"trained_recovery_from_{r}"]["lo"] == pytest.approx(expected.lo)
    assert ivs[f"control_recovery_from_{r}"]["value"] == cell[f"control_recovery_from_{r}"] == 0.0


# ---------------------------------------------------------------- the stages, on a tiny model
@pytest.fixture(scope="module")
def staged(tmp_path_factory, small_bench):
    """One tiny-model run with every stage: privacy (holdout and the model itself as reference),
    relearn and the checkpoint sweep."""
    from mmunlearn.harness.app.runner import RunConfig, run_benchmark
    from tests.tiny_vlms import make_tiny_vlm

    root = tmp_path_factory.mktemp("intervals")
    model = str(make_tiny_vlm("llava", root / "tiny"))
    config = RunConfig(
        model=model,
        bench=str(small_bench),
        forget=15,
        sets=("forget", "retain"),
        tasks=("classification", "cloze", "membership", "truth_ratio"),
        limit=4,
        shots=0,
        max_new_tokens=4,
        judge=None,
        batch_size=4,
        method="ga",
        params={"lr": "5e-2", "epochs": "2", "batch_size": "2"},
        stages=("privacy", "relearn", "sweep"),
        reference_model=model,
        relearn_params={"steps": "2", "lr": "1e-2"},
        eval_every=2,
        sweep_limit=2,
        seed=1,
        keep_model=True,  # the rerun below needs no retraining
    )
    out = root / "run"
    return out, run_benchmark(config, out, progress=False), config


@pytest.mark.slow
def test_every_stage_figure_has_its_interval_or_says_why_not(staged):
    out, res, _ = staged
    assert _check_every_figure(res) > 0
    assert res["manifest"]["intervals"]["dropped"] == [] and res["manifest"]["intervals"]["seed"] == 1
    fq = res["intervals"]["forget"]["forget_quality"]
    assert all(fq[m]["ks_p"]["lo"] is None and "already a test" in fq[m]["ks_p"]["method"] for m in MODES)
    assert all(res["intervals"]["retain"]["collapse"][m]["final_degenerate_share"]["se"] is not None for m in MODES)


@pytest.mark.slow
def test_auc_and_privleak_intervals_are_the_stratified_bootstrap_of_the_stored_scores(staged):
    out, res, _ = staged
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    boot = res["manifest"]["intervals"]
    for m in MODES:
        cells = [s for s in samples if s["task"] == "membership" and s["mode"] == m]
        members = [s for s in cells if s["set"] == "forget"]
        nonmembers = [s for s in cells if s["set"] == "holdout"]
        for score in ("mia_loss", "mia_mink"):
            figure = res["metrics"]["forget"][score][m]
            expected = stratified_auc_bootstrap(
                [-s["scores"][score] for s in members],
                [s["profile_id"] for s in members],
                [-s["scores"][score] for s in nonmembers],
                [s["profile_id"] for s in nonmembers],
                resamples=boot["resamples"],
                seed=boot["seed"],
            )
            assert expected.value == pytest.approx(figure["auc"], abs=1e-12)
            got = res["intervals"]["forget"][score][m]
            assert got["auc"] == pytest.approx({**expected.to_dict(), "value": figure["auc"]})
            leak = privleak_interval(expected, figure["reference_auc"])
            assert got["privleak"]["value"] == pytest.approx(figure["privleak"], abs=1e-9)
            assert (got["privleak"]["lo"], got["privleak"]["hi"]) == pytest.approx((leak.lo, leak.hi))
            assert got["reference_auc"]["value"] == figure["reference_auc"]


@pytest.mark.slow
def test_a_finished_staged_run_rerun_keeps_its_intervals(staged):
    from mmunlearn.harness.app.runner import run_benchmark

    out, res, config = staged
    before = (out / "results.json").read_bytes()
    again = run_benchmark(config, out, progress=False)
    assert again["intervals"] == res["intervals"]
    assert (out / "results.json").read_bytes() == before
