"""Regression checks that tell noise from change, seed aggregates, the leaderboard's intervals and
markers, and `mmunlearn power` (docs/statistics.md)."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from mmunlearn.harness.app.check import compare
from mmunlearn.harness.app.cli import main
from mmunlearn.harness.app.leaderboard import build_leaderboard
from mmunlearn.harness.app.runner import RunConfig
from mmunlearn.harness.app.seeds import aggregate, run_seeds, seed_dependence
from mmunlearn.harness.core.results import SAMPLES_FILE, load_results, write_results
from mmunlearn.harness.core.statistics import estimate_icc, minimum_detectable_difference, summarize_seeds

DEMO = Path(__file__).resolve().parent.parent / "results" / "demo"


def committed(name: str) -> Path:
    """A committed demo run with its own answers: seed 0 of a `--seeds` aggregate, or the run."""
    run = DEMO / "runs" / name
    return run / "seed-0" if (run / "seed-0" / "results.json").exists() else run


MANIFEST = {"benchmark": {"fingerprint": "fp", "source": "x"}, "forget": 15, "method": {"name": "npo", "params": {}}}
CELLS = [(s, "cloze", m) for s in ("forget", "retain") for m in ("image_text", "text_only")]


def synthetic_run(path: Path, p: dict, seed: int, profiles: int = 12, per_profile: int = 6, **manifest) -> Path:
    """A run of 0/1 cloze answers: per cell, each profile's answers drawn around p[cell] with a
    profile effect (correlated within a person, as real answers are)."""
    rng = random.Random(seed)
    lines, metrics = [], {}
    for s, t, m in CELLS:
        scores = []
        for k in range(profiles):
            pk = min(1.0, max(0.0, p[s, m] + rng.uniform(-0.2, 0.2)))
            for j in range(per_profile):
                v = 1.0 if rng.random() < pk else 0.0
                scores.append(v)
                qid = f"{s}/{k}/{t}/{m}/{j}"
                lines.append(
                    {"qid": qid, "set": s, "task": t, "mode": m, "profile_id": str(k), "scores": {"accuracy": v}}
                )
        metrics.setdefault(s, {}).setdefault(t, {})[m] = {"accuracy": sum(scores) / len(scores), "n": len(scores)}
    path.mkdir(parents=True, exist_ok=True)
    (path / SAMPLES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_results(path, metrics, {**MANIFEST, "config": {"seed": seed}, **manifest})
    return path


P = {
    ("forget", "image_text"): 0.5,
    ("forget", "text_only"): 0.9,
    ("retain", "image_text"): 0.8,
    ("retain", "text_only"): 0.9,
}


def test_check_between_two_seeds_of_the_same_method_counts_their_differences_as_noise(tmp_path, capsys):
    """Same distribution, other draw: changes beyond the tolerance are printed with their interval
    and counted "within noise", and each verdict agrees with its interval."""
    base = synthetic_run(tmp_path / "seed-0", P, seed=0)
    noisy = 0
    for seed in (1, 2, 3):
        report = compare(synthetic_run(tmp_path / f"seed-{seed}", P, seed=seed), base)
        for f in report.within_noise:
            assert "95% CI" in f.evidence and "p=" in f.evidence
        noisy += len(report.within_noise)
        assert not report.regressions, [f.line() for f in report.regressions]
    assert noisy > 0  # the tolerance alone would have called these regressions
    assert main(["check", str(tmp_path / "seed-1"), "--baseline", str(base)]) == 0
    assert "within noise" in capsys.readouterr().out


def test_check_flags_a_doctored_run_on_the_committed_demo(tmp_path, capsys):
    """The committed NPO run with the answers of one forget cell turned correct, in results.json
    and samples.jsonl alike: exit 1, that cell a regression with an interval excluding 0, and the
    untouched copy passes."""
    clean, doctored = tmp_path / "clean", tmp_path / "doctored"
    for d in (clean, doctored):
        shutil.copytree(committed("npo"), d, ignore=shutil.ignore_patterns("reference"))
    lines = [json.loads(x) for x in (doctored / SAMPLES_FILE).read_text().splitlines()]
    cell = ("forget", "cloze", "image_text")
    for x in lines:
        if (x["set"], x["task"], x["mode"]) == cell:
            x["scores"] = {k: 1.0 for k in x["scores"]}
    (doctored / SAMPLES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = load_results(doctored)
    results["metrics"]["forget"]["cloze"]["image_text"].update(accuracy=1.0, exact_match=1.0)
    write_results(doctored, results["metrics"], results["manifest"])

    assert main(["check", str(clean), "--baseline", str(committed("npo"))]) == 0
    capsys.readouterr()
    assert main(["check", str(doctored), "--baseline", str(committed("npo"))]) == 1
    out = capsys.readouterr().out
    regressions = out.split("REGRESSIONS")[1].split("\n\n")[0]
    before = load_results(clean)["metrics"]["forget"]["cloze"]["image_text"]["accuracy"]
    assert f"forget/cloze/image_text accuracy: {before:.4f} -> 1.0000" in regressions
    assert f"95% CI {1 - before:+.4f} [+" in regressions
    assert "forget/cloze/text_only" not in regressions  # the other mode was not touched


def test_raw_membership_score_means_are_not_gated_unless_asked(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(committed("vanilla"), run, ignore=shutil.ignore_patterns("reference"))
    results = load_results(run)
    results["metrics"]["retain"]["membership"]["image_text"]["mia_minkpp"] += 5.0  # "knows less" on a raw score
    write_results(run, results["metrics"], results["manifest"])
    assert main(["check", str(run), "--baseline", str(committed("vanilla"))]) == 0
    assert "mia_minkpp" not in capsys.readouterr().out
    assert main(["check", str(run), "--baseline", str(committed("vanilla")), "--all-metrics"]) == 1
    assert "retain/membership/image_text mia_minkpp" in capsys.readouterr().out


def test_seed_aggregate_gives_mean_sd_prediction_interval_and_each_seed(tmp_path):
    runs = [synthetic_run(tmp_path / f"seed-{s}", P, seed=s) for s in (0, 1, 2)]
    agg = aggregate(runs, requested=[0, 1, 2], reasons=["method npo draws with the seed"])
    values = [load_results(r)["metrics"]["forget"]["cloze"]["image_text"]["accuracy"] for r in runs]
    cell = agg["seeds"]["cells"]["forget"]["cloze"]["image_text"]["accuracy"]
    expected = summarize_seeds(values)
    assert cell["values"] == values and cell["n"] == 3
    assert cell["mean"] == pytest.approx(sum(values) / 3) == agg["metrics"]["forget"]["cloze"]["image_text"]["accuracy"]
    assert cell["sd"] == pytest.approx(expected.sd)
    assert cell["prediction_interval"] == pytest.approx(list(expected.prediction_interval))
    assert agg["intervals"]["forget"]["cloze"]["image_text"]["accuracy"]["n_seeds"] == 3
    assert agg["manifest"]["seeds"]["seeds"] == [0, 1, 2]


def test_a_run_lies_outside_the_baseline_seeds_prediction_interval_only_when_it_is_far(tmp_path, capsys):
    base_dirs = [synthetic_run(tmp_path / "base" / f"seed-{s}", P, seed=s) for s in (0, 1, 2)]
    (tmp_path / "base" / "results.json").write_text(json.dumps(aggregate(base_dirs, [0, 1, 2], ["x"])))
    near = synthetic_run(tmp_path / "near", P, seed=1)  # a rerun of one of the baseline's seeds
    far = synthetic_run(tmp_path / "far", {**P, ("forget", "image_text"): 1.0}, seed=9)
    report = compare(near, tmp_path / "base")
    assert not report.regressions and "prediction interval" in report.rule
    report = compare(far, tmp_path / "base")
    assert [f.key for f in report.regressions] == ["forget/cloze/image_text accuracy"]
    assert "a new seed's 95% range" in report.regressions[0].evidence


def test_seed_independent_runs_run_once_and_say_so(tmp_path):
    calls = []

    def fake_run(cfg, folder):
        calls.append(cfg.seed)
        return synthetic_run(Path(folder), P, seed=cfg.seed)

    independent = RunConfig(method="manu", shots=0, test_images="first", stages=("privacy",))
    assert seed_dependence(independent) == []
    res = run_seeds(independent, [0, 1, 2], tmp_path / "manu", fake_run, progress=False)
    assert calls == [0] and res["seeds"]["ran_once"] and "seed-independent" in res["seeds"]["note"]
    calls.clear()
    drawn = RunConfig(method="manu", shots=0, test_images="random", sets=("forget", "test"))
    assert any("test-set" in r for r in seed_dependence(drawn))
    res = run_seeds(drawn, [0, 1], tmp_path / "manu-drawn", fake_run, progress=False)
    assert calls == [0, 1] and not res["seeds"]["ran_once"]
    assert seed_dependence(RunConfig(method="npo", shots=0, test_images="first"))  # training draws


def test_leaderboard_shows_intervals_seeds_and_significant_drops(tmp_path):
    van = synthetic_run(tmp_path / "root" / "vanilla", {k: 1.0 for k in P}, seed=0, method={"name": "vanilla"})
    strong = synthetic_run(tmp_path / "root" / "npo" / "seed-0", {**P, ("forget", "image_text"): 0.1}, seed=0)
    other = synthetic_run(tmp_path / "root" / "npo" / "seed-1", {**P, ("forget", "image_text"): 0.2}, seed=1)
    agg = aggregate([strong, other], [0, 1], ["method npo draws with the seed"])
    (tmp_path / "root" / "npo" / "results.json").write_text(json.dumps(agg))
    results = load_results(van)
    results["intervals"] = {"forget": {"cloze": {"image_text": {"accuracy": {"value": 1.0, "lo": 0.9, "hi": 1.0}}}}}
    (van / "results.json").write_text(json.dumps(results))
    files = build_leaderboard([tmp_path / "root"], tmp_path / "board")
    md = Path(files["leaderboard.md"]).read_text()
    assert re.search(r"\| vanilla \| 1 \| 0\.\d{3} ±0\.050 \|", md)  # value ± half-width, seeds column
    row = next(line for line in md.splitlines() if line.startswith("| npo | 2 |"))
    assert "†" in row.split("|")[3]  # forget img+txt drop against vanilla is significant
    assert "## Seed spread" in md and "(2)" in md.split("## Seed spread")[1]
    assert md.count("| npo |") >= 2 and "seed-0" not in md.split("## Runs")[0]  # one row for the seeds
    rows = list(csv.DictReader(open(files["leaderboard.csv"])))
    npo = next(r for r in rows if r["method"] == "npo")
    assert npo["n_seeds"] == "2" and float(npo["forget/cloze/accuracy/image_text/lower"]) < float(
        npo["forget/cloze/accuracy/image_text/upper"]
    )


def test_power_matches_the_hand_figure_for_mllmu_bench(capsys):
    """DESIGN.md: forget 5% (25 profiles, ~220 MC questions per mode) at p = 0.45, no clustering:
    ~0.13 unpaired; clustering makes it larger, pairing smaller."""
    assert main(["power", "--published", "mllmu-bench", "--forget", "5", "--accuracy", "0.45", "--icc", "0"]) == 0
    line = next(
        x for x in capsys.readouterr().out.splitlines() if "forget classification image_text" in " ".join(x.split())
    )
    fields = line.split()
    assert fields[3:5] == ["25", "221"] and fields[-2] == "0.133"  # (1.96 + 0.84) * sqrt(2 * 0.45 * 0.55 / 221)
    assert float(fields[-1]) < float(fields[-2])
    assert main(["power", "--published", "mllmu-bench", "--forget", "5", "--accuracy", "0.45", "--icc", "0.2"]) == 0
    line = next(
        x for x in capsys.readouterr().out.splitlines() if "forget classification image_text" in " ".join(x.split())
    )
    assert float(line.split()[-2]) > 0.133


def test_power_reads_a_bench_and_a_run(capsys):
    assert main(["power", "--forget", "15", "--from-run", str(committed("npo"))]) == 0
    out = capsys.readouterr().out
    assert "p and ICC per cell from" in out
    # the forget image+text cloze cell: p and ICC as computed by hand from the run's answers
    rows = [json.loads(x) for x in (committed("npo") / SAMPLES_FILE).read_text().splitlines()]
    cell = [r for r in rows if (r["set"], r["task"], r["mode"]) == ("forget", "cloze", "image_text")]
    values = [r["scores"]["accuracy"] for r in cell]
    p = sum(values) / len(values)
    icc = estimate_icc(values, [r["profile_id"] for r in cell])
    line = next(x.split() for x in out.splitlines() if x.split()[:3] == ["forget", "cloze", "image_text"])
    assert float(line[5]) == round(p, 3) and float(line[6]) == round(icc, 3)
    mdd = minimum_detectable_difference(p, len(values), 9, icc=icc)
    assert float(line[8]) == round(mdd, 3)


@pytest.mark.slow
def test_run_seeds_end_to_end_resumes_per_seed_and_the_leaderboard_reads_the_aggregate(small_bench, tmp_path, capsys):
    from tests.tiny_vlms import make_tiny_vlm

    make_tiny_vlm("llava", tmp_path / "tiny")
    args = ["run", "--model", str(tmp_path / "tiny" / "llava"), "--bench", str(small_bench), "--forget", "15"]
    args += ["--sets", "forget", "retain", "--tasks", "cloze", "--limit", "4", "--shots", "0", "--judge", "none"]
    args += ["--max-new-tokens", "2", "--stages", "--quiet", "--method", "ga", "--param", "lr=1e-3"]
    out = tmp_path / "ga"
    assert main([*args, "--seeds", "0", "1", "--out", str(out)]) == 0
    agg = load_results(out)
    assert agg["seeds"]["seeds"] == [0, 1] and not agg["seeds"]["ran_once"]
    per_seed = [load_results(out / f"seed-{s}") for s in (0, 1)]
    assert (
        per_seed[0]["manifest"]["model"]["unlearned_weights_hash"]
        != per_seed[1]["manifest"]["model"]["unlearned_weights_hash"]
    )
    cell = agg["seeds"]["cells"]["forget"]["cloze"]["image_text"]["accuracy"]
    assert cell["values"] == [r["metrics"]["forget"]["cloze"]["image_text"]["accuracy"] for r in per_seed]
    # a rerun resumes every seed (nothing recomputed) and writes the same aggregate
    (out / "seed-1" / "results.json").unlink()
    assert main([*args, "--seeds", "0", "1", "--out", str(out)]) == 0
    assert load_results(out)["metrics"] == agg["metrics"]
    once = tmp_path / "vanilla"
    vanilla_args = [a if a != "ga" else "vanilla" for a in args[:-2]]
    assert main([*vanilla_args, "--test-images", "first", "--seeds", "0", "1", "2", "--out", str(once)]) == 0
    assert load_results(once)["seeds"]["ran_once"] and not (once / "seed-1").exists()
    files = build_leaderboard([out, once], tmp_path / "board")
    assert "| ga (lr=0.001) | 2 |" in Path(files["leaderboard.md"]).read_text()
