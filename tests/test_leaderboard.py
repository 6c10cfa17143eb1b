"""Leaderboard: tables show both modes, mark best/worst by set direction, plots are written."""

import csv

import pytest

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.app.leaderboard import load_runs, markdown, marks, method_label, plot_tradeoff, tradeoff_points
from mmunlearn.harness.core.results import write_results


def metrics(forget, retain, text_penalty=0.0):
    cell = lambda v: {
        m: {"accuracy": v - (text_penalty if m == "text_only" else 0), "n": 10}  # noqa: E731
        for m in ("image_text", "text_only")
    }
    gen = lambda v: {
        m: {"rougeL": v, "rouge1": v, "factuality": None, "n": 10}  # noqa: E731
        for m in ("image_text", "text_only")
    }
    return {
        s: {"classification": cell(v), "generation": gen(v), "cloze": cell(v)}
        for s, v in (("forget", forget), ("test", forget), ("retain", retain), ("celebrity", retain))
    }


def make(tmp_path, name, method, params, forget, retain, fp="fp", forget_split=5, seed=0, **kw):
    d = tmp_path / name
    write_results(
        d,
        metrics(forget, retain, **kw),
        {
            "benchmark": {"fingerprint": fp, "source": "embedded:minibench"},
            "forget": forget_split,
            "seed": seed,
            "method": {"name": method, "params": params},
            "model": {"source": "embedded:tiny-llava"},
        },
    )
    return str(d)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("runs")
    return [
        make(tmp_path, "vanilla", "vanilla", {}, 0.9, 0.9),
        make(tmp_path, "ga", "ga", {"lr": 1e-4}, 0.2, 0.5, text_penalty=-0.3),
        make(tmp_path, "npo", "npo", {"beta": 0.4}, 0.5, 0.85),
    ]


@pytest.fixture(scope="module")
def board(runs, tmp_path_factory):
    """Rendered once for the module: plotting is the slow part."""
    out = tmp_path_factory.mktemp("board")
    assert main(["leaderboard", *runs, "--out", str(out)]) == 0
    return out


def test_leaderboard_writes_tables_and_plots(board):
    out = board
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.html",
        "modality_gap.csv",
        "bars_classification.png",
        "bars_generation.png",
        "bars_cloze.png",
        "tradeoff.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "bars_cloze.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "leaderboard.md").read_text()
    assert "lower is better" in md and "higher is better" in md
    assert "classification accuracy (img+txt)" in md and "classification accuracy (txt)" in md
    assert "factuality" not in md.split("## Runs")[0].split("## Forget")[1]  # never scored -> no column
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert [r["name"] for r in rows] == ["vanilla", "ga", "npo"]  # vanilla first as the reference
    assert float(rows[1]["forget/classification/accuracy/text_only"]) == pytest.approx(0.5)
    gap = list(csv.DictReader(open(out / "modality_gap.csv")))
    assert float(gap[1]["forget/classification/accuracy"]) == pytest.approx(-0.3)


def test_best_and_worst_follow_set_direction(runs, board):
    loaded = {r.method: r for r in load_runs(runs)}
    forget = marks(list(loaded.values()), ("forget", "cloze", "accuracy", "image_text"))
    retain = marks(list(loaded.values()), ("retain", "cloze", "accuracy", "image_text"))
    ga, npo = loaded["ga"].label, loaded["npo"].label
    assert forget == {ga: "best", npo: "worst"}  # lower is better on forget; vanilla unmarked
    assert retain == {npo: "best", ga: "worst"}
    md = (board / "leaderboard.md").read_text()
    forget_section = md.split("## Forget set")[1].split("## ")[0]
    assert "| ga" in forget_section and "**0.200**" in forget_section and "*0.500*" in forget_section


def test_tradeoff_points_relative_to_vanilla(runs):
    pts = {label: (x, y) for label, x, y in tradeoff_points(load_runs(runs), "cloze", "accuracy", "image_text")}
    x, y = next(v for k, v in pts.items() if k.startswith("ga"))
    assert x == pytest.approx(0.7) and y == pytest.approx(0.5 / 0.9)


def test_labels_show_params_and_disambiguate(tmp_path):
    a = make(tmp_path, "a", "nonexistent-method", {"alpha": 0.02}, 0.3, 0.8, seed=0)
    b = make(tmp_path, "b", "nonexistent-method", {"alpha": 0.02}, 0.3, 0.8, seed=1)
    labels = sorted(r.label for r in load_runs([a, b]))
    assert labels == ["nonexistent-method (alpha=0.02) [seed=0]", "nonexistent-method (alpha=0.02) [seed=1]"]
    assert method_label("nonexistent-method", {}) == "nonexistent-method"


def test_refuses_mixed_benchmarks_or_splits(tmp_path, runs):
    other = make(tmp_path, "other", "ga", {}, 0.1, 0.1, forget_split=10)
    with pytest.raises(ConfigError, match="different benchmarks or forget splits"):
        load_runs([*runs, other])


def test_without_vanilla_no_tradeoff_but_tables(tmp_path, runs):
    out = tmp_path / "board"
    plot_tradeoff(load_runs(runs[1:]), out)
    assert not (out / "tradeoff.png").exists()
    assert "ga" in markdown(load_runs(runs[1:]), [])
