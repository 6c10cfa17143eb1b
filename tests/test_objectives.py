"""Objectives (harness.core.objectives): every consumer of a direction reads it from the run's
objective. forget-both: forget/test should fall in both modes; forget-visual (MMUnlearner's
target): forget/test image+text should fall, forget/test text-only should stay, like retain.
Synthetic results.json + samples.jsonl pairs, so `check` and the leaderboard's † have paired
intervals to judge by."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmunlearn.harness.app.check import compare
from mmunlearn.harness.app.cli import main
from mmunlearn.harness.app.leaderboard import (
    LEGEND,
    drop_is_significant,
    legend,
    load_runs,
    markdown,
    marks,
    set_sections,
    tradeoff_points,
)
from mmunlearn.harness.core import robustness
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.objectives import FORGET_BOTH, FORGET_VISUAL, describe, objective_of, should_fall
from mmunlearn.harness.core.records import MODES
from mmunlearn.harness.core.results import SAMPLES_FILE, write_results

IT, TO = "image_text", "text_only"


# ---------------------------------------------------------------- should_fall
@pytest.mark.parametrize(
    "objective, set_name, mode, falls",
    [
        (FORGET_BOTH, "forget", IT, True),
        (FORGET_BOTH, "forget", TO, True),
        (FORGET_BOTH, "test", IT, True),
        (FORGET_BOTH, "test", TO, True),
        (FORGET_BOTH, "retain", IT, False),
        (FORGET_BOTH, "retain", TO, False),
        (FORGET_BOTH, "celebrity", IT, False),
        (FORGET_BOTH, "celebrity", TO, False),
        (FORGET_BOTH, "forget", None, True),
        (FORGET_BOTH, "retain", None, False),
        (FORGET_VISUAL, "forget", IT, True),
        (FORGET_VISUAL, "forget", TO, False),
        (FORGET_VISUAL, "test", IT, True),
        (FORGET_VISUAL, "test", TO, False),
        (FORGET_VISUAL, "retain", IT, False),
        (FORGET_VISUAL, "retain", TO, False),
        (FORGET_VISUAL, "celebrity", IT, False),
        (FORGET_VISUAL, "celebrity", TO, False),
        (FORGET_VISUAL, "forget", None, True),  # the set as a whole: its image+text part falls
        (FORGET_VISUAL, "celebrity", None, False),
    ],
)
def test_should_fall_truth_table(objective, set_name, mode, falls):
    assert should_fall(objective, set_name, mode) is falls


def test_unknown_objective_and_the_default():
    with pytest.raises(ConfigError, match="unknown objective 'forget-audio'"):
        should_fall("forget-audio", "forget", IT)
    assert objective_of({"manifest": {}}) == FORGET_BOTH  # results written before objectives existed
    assert objective_of({"manifest": {"objective": FORGET_VISUAL}}) == FORGET_VISUAL
    assert describe(FORGET_BOTH) == "forget, test fall; retain, celebrity stay"
    assert describe(FORGET_VISUAL) == "forget, test fall in image_text, stay in text_only; retain, celebrity stay"


# ---------------------------------------------------------------- synthetic runs
PROFILES, PER_PROFILE = 10, 6
MANIFEST = {"benchmark": {"fingerprint": "fp", "source": "embedded:minibench"}, "forget": 5, "seed": 0}
VANILLA = {("forget", IT): 0.8, ("forget", TO): 0.8, ("retain", IT): 0.8, ("retain", TO): 0.8}


def synthetic_run(path: Path, p: dict, objective: str | None = None, method: str = "ga", params=None) -> str:
    """0/1 cloze answers over the same questions in every run: profile k answers about p[cell]
    of its questions correctly (+-1 answer by profile, so the bootstrap has some spread)."""
    lines, metrics = [], {}
    for (s, m), q in p.items():
        scores = []
        for k in range(PROFILES):
            right = min(PER_PROFILE, max(0, round(q * PER_PROFILE) + (k % 3) - 1))
            for j in range(PER_PROFILE):
                v = 1.0 if j < right else 0.0
                scores.append(v)
                qid = f"{s}/{k}/cloze/{m}/{j}"
                lines.append(
                    {"qid": qid, "set": s, "task": "cloze", "mode": m, "profile_id": str(k), "scores": {"accuracy": v}}
                )
        metrics.setdefault(s, {}).setdefault("cloze", {})[m] = {"accuracy": sum(scores) / len(scores), "n": len(scores)}
    path.mkdir(parents=True, exist_ok=True)
    (path / SAMPLES_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    manifest = {**MANIFEST, "method": {"name": method, "params": params or {}}, "model": {"source": "embedded:tiny"}}
    if objective is not None:
        manifest["objective"] = objective
    write_results(path, metrics, manifest)
    return str(path)


def changed(**cells) -> dict:
    """VANILLA with some cells changed: changed(forget_text_only=0.2)."""
    p = dict(VANILLA)
    for key, v in cells.items():
        s, m = key.split("_", 1)
        p[s, m] = v
    return p


def regressions(report) -> list[str]:
    return [f.key for f in report.regressions]


# ---------------------------------------------------------------- check
@pytest.mark.parametrize("objective", [FORGET_BOTH, FORGET_VISUAL])
def test_check_judges_text_only_forget_by_the_objective(tmp_path, objective):
    """A significant rise of text-only forget accuracy: forgetting weaker under forget-both, fine
    under forget-visual (knowledge it keeps); a significant fall: the opposite."""
    low = synthetic_run(tmp_path / "low", changed(forget_text_only=0.2), objective)
    high = synthetic_run(tmp_path / "high", changed(forget_text_only=0.8), objective)

    rise = compare(high, low)
    assert not rise.within_noise and not rise.missing
    fall = compare(low, high)
    assert not fall.within_noise and not fall.missing
    key = "forget/cloze/text_only accuracy"
    if objective == FORGET_BOTH:
        assert regressions(rise) == [key]
        assert "forgetting weaker: should not rise" in rise.regressions[0].problem
        assert "95% CI +0.6" in rise.regressions[0].evidence  # judged by its paired interval
        assert regressions(fall) == []
    else:
        assert regressions(rise) == []
        assert regressions(fall) == [key]
        assert fall.regressions[0].problem == "kept knowledge dropped: should not fall"
        assert "95% CI -0.6" in fall.regressions[0].evidence


@pytest.mark.parametrize("objective", [FORGET_BOTH, FORGET_VISUAL])
def test_check_image_text_forget_rise_is_a_regression_under_both(tmp_path, objective):
    base = synthetic_run(tmp_path / "base", changed(forget_image_text=0.2), objective)
    run = synthetic_run(tmp_path / "run", changed(forget_image_text=0.8), objective)
    report = compare(run, base)
    assert regressions(report) == ["forget/cloze/image_text accuracy"]
    assert report.regressions[0].problem == "forgetting weaker: should not rise"


def test_check_retain_drop_is_a_regression_under_both(tmp_path):
    for objective in (FORGET_BOTH, FORGET_VISUAL):
        base = synthetic_run(tmp_path / f"b-{objective}", VANILLA, objective)
        run = synthetic_run(tmp_path / f"r-{objective}", changed(retain_text_only=0.2), objective)
        report = compare(run, base)
        assert regressions(report) == ["retain/cloze/text_only accuracy"]
        assert report.regressions[0].problem == "utility dropped: should not fall"


def test_check_keeps_a_set_outside_the_forget_target(tmp_path):
    """A benchmark's own kept set (CLEAR's `real`): a drop is lost utility under either objective."""
    for objective in (FORGET_BOTH, FORGET_VISUAL):
        base = synthetic_run(tmp_path / f"b-{objective}", {**VANILLA, ("real", IT): 0.8}, objective)
        run = synthetic_run(tmp_path / f"r-{objective}", {**VANILLA, ("real", IT): 0.2}, objective)
        report = compare(run, base)
        assert regressions(report) == ["real/cloze/image_text accuracy"]
        assert report.regressions[0].problem == "utility dropped: should not fall"


def test_check_refuses_runs_under_different_objectives(tmp_path, capsys):
    base = synthetic_run(tmp_path / "base", VANILLA, FORGET_BOTH)
    run = synthetic_run(tmp_path / "run", VANILLA, FORGET_VISUAL)
    with pytest.raises(ConfigError, match="different objectives") as caught:
        compare(run, base)
    assert FORGET_BOTH in str(caught.value) and FORGET_VISUAL in str(caught.value)
    assert main(["check", run, "--baseline", base]) == 2
    err = capsys.readouterr().err
    assert "different objectives" in err and "run" in err and FORGET_VISUAL in err and FORGET_BOTH in err


def test_check_reads_an_unrecorded_objective_as_forget_both_and_prints_it(tmp_path, capsys):
    old = synthetic_run(tmp_path / "old", VANILLA)  # written before objectives existed
    new = synthetic_run(tmp_path / "new", changed(forget_text_only=0.2), FORGET_BOTH)
    assert compare(new, old).objective == FORGET_BOTH
    assert main(["check", new, "--baseline", old]) == 0
    out = capsys.readouterr().out
    assert f"   objective {FORGET_BOTH}: forget, test fall; retain, celebrity stay" in out.splitlines()[2]
    visual = synthetic_run(tmp_path / "visual", VANILLA, FORGET_VISUAL)
    with pytest.raises(ConfigError, match="different objectives"):
        compare(visual, old)  # unrecorded is forget-both, not a wildcard


def test_check_refuses_an_unknown_objective(tmp_path):
    base = synthetic_run(tmp_path / "base", VANILLA, "forget-audio")
    with pytest.raises(ConfigError, match="unknown objective 'forget-audio'"):
        compare(base, base)


# ---------------------------------------------------------------- leaderboard
FT = ("forget", "cloze", "accuracy", TO)
FI = ("forget", "cloze", "accuracy", IT)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """vanilla (no objective recorded), two forget-both rows and two forget-visual rows."""
    d = tmp_path_factory.mktemp("mixed")
    return [
        synthetic_run(d / "vanilla", VANILLA, method="vanilla"),
        synthetic_run(d / "ga", changed(forget_image_text=0.2, forget_text_only=0.2), FORGET_BOTH, "ga"),
        synthetic_run(d / "npo", changed(forget_image_text=0.3, forget_text_only=0.5), FORGET_BOTH, "npo"),
        synthetic_run(
            d / "mmu-a", changed(forget_image_text=0.2, forget_text_only=0.2), FORGET_VISUAL, "mmunlearner", {"lr": 1}
        ),
        synthetic_run(
            d / "mmu-b", changed(forget_image_text=0.3, forget_text_only=0.8), FORGET_VISUAL, "mmunlearner", {"lr": 2}
        ),
    ]


def by_dir(runs):
    return {Path(r.path).name: r for r in runs}


def test_marks_follow_each_rows_objective(mixed):
    runs = load_runs(mixed)
    r = by_dir(runs)
    text = marks(runs, FT)
    # forget-both rows: lower is better; forget-visual rows: the text-only forget figure is kept
    assert text == {r["ga"].label: "best", r["npo"].label: "worst", r["mmu-b"].label: "best", r["mmu-a"].label: "worst"}
    image = marks(runs, FI)  # image+text: every row should forget, one direction
    assert image[r["ga"].label] == "best" and image[r["mmu-a"].label] == "best"
    assert image[r["npo"].label] == "worst" and image[r["mmu-b"].label] == "worst"
    assert r["vanilla"].label not in text | image


def test_significance_marks_only_where_the_row_should_forget(mixed):
    runs = load_runs(mixed)
    r = by_dir(runs)
    vanilla = r["vanilla"]
    # the same significant text-only forget drop (0.8 -> 0.2): forgetting for ga, damage for mmu-a
    assert drop_is_significant(r["ga"], vanilla, FT)
    assert not drop_is_significant(r["mmu-a"], vanilla, FT)
    assert drop_is_significant(r["mmu-a"], vanilla, FI) and drop_is_significant(r["ga"], vanilla, FI)
    md = markdown(runs, [])
    forget = md.split("## Forget set")[1].split("\n## ")[0]
    row = {
        cells[0]: cells
        for line in forget.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    ga_cells, mmu_cells, header = row[r["ga"].label], row[r["mmu-a"].label], row["method"]
    txt = header.index("cloze accuracy (txt)")
    img = header.index("cloze accuracy (img+txt)")
    assert "†" in ga_cells[txt] and "†" not in mmu_cells[txt]
    assert "†" in ga_cells[img] and "†" in mmu_cells[img]


def test_titles_legend_and_objective_column_follow_the_objectives(mixed):
    runs = load_runs(mixed)
    titles = {scols[0][0]: title for title, scols, _m in set_sections(runs)}
    assert titles["forget"] == (
        "Forget set (img+txt: lower is better; txt: lower is better under forget-both, "
        "higher is better under forget-visual)"
    )
    assert titles["retain"] == "Retain set (higher is better)"
    md = markdown(runs, [])
    assert "| method | objective |" in md  # in the set tables and the runs table
    assert md.count("| method | objective |") == 3  # forget, retain, runs
    r = by_dir(runs)
    assert f"| {r['mmu-a'].label} | forget-visual |" in md and f"| {r['ga'].label} | forget-both |" in md
    assert f"| {r['vanilla'].label} | – |" in md  # the reference is judged under none
    text = legend(runs)
    assert text != LEGEND
    # the board's own sets (forget, retain), not every set MLLMU-Bench has
    assert "Under forget-visual: **lower is better** on forget img+txt (knowledge forgotten)" in text
    assert "**higher is better** on forget txt, retain (knowledge kept)" in text


def test_a_forget_visual_only_board_has_no_objective_column_but_its_directions(mixed):
    runs = load_runs([mixed[0], mixed[3], mixed[4]])
    md = markdown(runs, [])
    assert "| objective |" not in md
    assert "## Forget set (img+txt: lower is better; txt: higher is better)" in md
    assert "Directions follow the runs' objective. Under forget-visual:" in md


def test_a_board_without_objectives_keeps_its_legend_and_columns(mixed):
    runs = load_runs(mixed[:3])  # vanilla (none recorded) and forget-both rows
    md = markdown(runs, [])
    assert legend(runs) == LEGEND and LEGEND in md
    assert "| objective |" not in md
    assert "## Forget set (Test set" not in md and "## Forget set (lower is better)" in md


def test_tradeoff_counts_a_kept_forget_drop_as_damage(mixed):
    runs = load_runs(mixed)
    text = {label: x for label, x, _y in tradeoff_points(runs, "cloze", "accuracy", TO)}
    image = {label: x for label, x, _y in tradeoff_points(runs, "cloze", "accuracy", IT)}
    r = by_dir(runs)
    drop = r["vanilla"].metrics["forget"]["cloze"][TO]["accuracy"] - r["ga"].metrics["forget"]["cloze"][TO]["accuracy"]
    assert drop > 0.5 and r["mmu-a"].metrics == r["ga"].metrics  # the same figures, other objectives
    assert text[r["ga"].label] == pytest.approx(drop)  # forgetting: right is better
    assert text[r["mmu-a"].label] == pytest.approx(-drop)  # damage to what it keeps: left
    assert image[r["mmu-a"].label] == pytest.approx(image[r["ga"].label])


# ---------------------------------------------------------------- sweep --select best
def point(step: int, it: tuple[float, float], to: tuple[float, float]) -> dict:
    """A sweep point: (retain, forget) cloze accuracy per mode, nothing collapsed."""
    cells = {IT: it, TO: to}
    return {
        "step": step,
        "metrics": {
            s: {"cloze": {m: {"accuracy": cells[m][i]} for m in MODES}} for i, s in enumerate(("retain", "forget"))
        },
        "collapse": {m: {"collapsed": False} for m in MODES},
    }


# step 2 forgot the people in text too; step 4 forgot them less by image but kept them in text
POINTS = [point(2, (0.8, 0.2), (0.8, 0.1)), point(4, (0.8, 0.3), (0.8, 0.7))]


def test_select_best_follows_the_objective():
    from mmunlearn.stages.sweep import select_best, select_rule

    both, both_scores = select_best(POINTS, MODES, FORGET_BOTH)
    assert (both, both_scores) == robustness.select_best(POINTS, MODES)  # forget-both: the rule as it was
    assert both == 2 and both_scores[4] == pytest.approx(0.1)
    visual, visual_scores = select_best(POINTS, MODES, FORGET_VISUAL)
    assert visual == 4
    # image+text: retain - forget; text-only: the mean of the kept retain and forget figures
    assert visual_scores[2] == pytest.approx(min(0.6, (0.8 + 0.1) / 2))
    assert visual_scores[4] == pytest.approx(min(0.5, (0.8 + 0.7) / 2))
    assert select_rule(FORGET_BOTH) == robustness.SELECT_RULE
    assert "text_only: mean of forget and retain; objective forget-visual" in select_rule(FORGET_VISUAL)


@pytest.mark.parametrize("objective, chosen", [(FORGET_BOTH, 2), (FORGET_VISUAL, 4)])
def test_the_sweep_watcher_keeps_the_objectives_checkpoint(tmp_path, monkeypatch, objective, chosen):
    """The live selection (the watcher during training) reads ctx.cfg.objective, records its rule,
    and puts back the chosen checkpoint's weights."""
    import torch

    from mmunlearn.stages.sweep import SweepStage, select_rule

    stage = SweepStage()
    by_step = {p["step"]: p for p in POINTS}
    monkeypatch.setattr(SweepStage, "point", lambda self, ctx, model, store, step, results=None: by_step[step])
    cfg = SimpleNamespace(eval_every=2, select="best", objective=objective)
    watcher = stage.watch(SimpleNamespace(cfg=cfg, out=str(tmp_path)))
    vlm = SimpleNamespace(model=torch.nn.Linear(1, 1, bias=False))
    for n in range(1, 5):
        with torch.no_grad():
            vlm.model.weight.fill_(float(n))  # the weights after step n
        watcher.step(vlm, n)
    watcher.finished(vlm)
    done = json.loads((tmp_path / "sweep" / "steps.json").read_text())
    assert done["selected"]["step"] == chosen
    assert done["selected"]["rule"] == select_rule(objective)
    assert vlm.model.weight.item() == float(chosen)


def test_a_sweep_without_steps_records_the_objectives_rule(tmp_path):
    from mmunlearn.stages.sweep import SweepStage, select_rule

    cfg = SimpleNamespace(select="best", objective=FORGET_VISUAL)
    out = SweepStage().run(SimpleNamespace(cfg=cfg, out=str(tmp_path)))
    assert out.record["selected"]["rule"] == select_rule(FORGET_VISUAL) != robustness.SELECT_RULE
    legacy = SweepStage().run(SimpleNamespace(cfg=SimpleNamespace(select="best"), out=str(tmp_path)))
    assert legacy.record["selected"]["rule"] == robustness.SELECT_RULE  # a config without objective


def test_a_mixed_board_is_written_with_its_objectives(mixed, tmp_path):
    import csv

    from mmunlearn.harness.app.leaderboard import build_leaderboard, frame

    files = build_leaderboard(mixed, tmp_path / "board")
    rows = list(csv.DictReader(open(files["leaderboard.csv"])))
    objective = {Path(r["run"]).name: r["objective"] for r in rows}
    assert objective == {
        "vanilla": FORGET_BOTH,  # unrecorded: read as forget-both
        "ga": FORGET_BOTH,
        "npo": FORGET_BOTH,
        "mmu-a": FORGET_VISUAL,
        "mmu-b": FORGET_VISUAL,
    }
    html = open(files["leaderboard.html"]).read()
    assert "<th rowspan=2>objective</th>" in html and "<td>forget-visual</td>" in html
    assert "Under forget-visual: lower is better on forget img+txt" in html  # the board's sets
    assert (tmp_path / "board" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "objective" not in frame(load_runs(mixed[:1])).columns  # nothing recorded: the CSV as it was
